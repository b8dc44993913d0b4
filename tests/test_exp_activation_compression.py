"""activation_compression on its test profile: stored bytes per format, gradients within each format's stated
error, the hooks' encodings; what summarize derives."""
import pytest
import torch

from experiments import activation_compression as ac
from experiments.lib.saved_hooks import SCHEMES, CompressSaved, available_schemes, decode, encode
from conftest import test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("activation_compression")


def test_every_available_format_is_measured(data):
    assert data["fp8_available"] is True  # torch 2.1+: float8_e4m3fn
    assert list(data["schemes"]) == ["none", *available_schemes()]


def test_stored_bytes_per_format(data):
    s = data["schemes"]
    for name in available_schemes():
        given, stored = s[name]["given_bytes"], s[name]["stored_bytes"]
        assert given > 0
        if name == "bf16":
            assert stored * 2 == given
        else:  # one byte per element plus fp32 scales
            assert given / 4 < stored < given / 4 + 4 * s[name]["compressed_count"] * 64
        assert s[name]["activations_after_forward_bytes"] < s["none"]["activations_after_forward_bytes"]


def test_gradients_within_the_stated_error(data):
    summary = ac.summarize(data)
    for name in available_schemes():
        row = data["schemes"][name]
        assert 0 < row["rel_error_norm_ratio"] <= ac.STATED_REL_ERROR[name], name
        assert row["cosine"] > 0.99, name
        assert summary["schemes"][name]["within_stated_error"] is True
    assert data["schemes"]["none"]["rel_error_norm_ratio"] == 0.0
    # bf16 keeps 8 mantissa bits, int8 7 bits with one scale: bf16 is the closer here
    assert data["schemes"]["bf16"]["rel_error_norm_ratio"] < data["schemes"]["int8_tensor"]["rel_error_norm_ratio"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_encoding_error_bounds(scheme):
    torch.manual_seed(0)
    x = torch.randn(16, 32) * torch.linspace(0.1, 10, 32)   # channels of very different ranges
    payload, stored = encode(x, scheme)
    y = decode(payload)
    assert y.dtype == x.dtype and y.shape == x.shape
    err = (y - x).abs()
    if scheme == "bf16":
        assert torch.all(err <= x.abs() * 2**-8)
    elif scheme == "int8_tensor":
        assert float(err.max()) <= float(x.abs().max()) / 127 / 2 + 1e-6
    elif scheme == "int8_channel":
        assert torch.all(err <= x.abs().amax(0) / 127 / 2 + 1e-6)
    else:  # fp8 e4m3: 3 mantissa bits, relative step 2^-3 for normal values
        assert torch.all(err <= x.abs() * 2**-4 + float(x.abs().max()) / 448 * 2**-9 * 2)
    assert stored == (x.numel() * 2 if scheme == "bf16" else x.numel() + 4 * (32 if scheme == "int8_channel" else 1))


def test_a_tensor_saved_twice_is_stored_once():
    x = torch.randn(8, 8, requires_grad=True)
    with CompressSaved("int8_tensor") as h:
        y = torch.sigmoid(x)
        (y * y).sum().backward()   # mul saves y twice (as self and as other)
    assert h.stats.packed_count == 1 and h.stats.unpacked_count == 3  # sigmoid and mul saved one storage
    assert h.stats.stored_bytes == 64 + 4


def test_summary_from_canned_measurements():
    def row(loss, acc, err, ms, **extra):
        return {"activations_after_forward_bytes": extra.get("acts", 400), "rel_error_norm_ratio": err, "cosine": 1.0,
                "final_loss": loss, "test_accuracy": acc, "step_time_ms": ms, "loss_curve": [],
                **({} if err == 0 else {"given_bytes": 400, "stored_bytes": 100, "compressed_count": 1,
                                         "by_kind": {k: {"rel_error_norm_ratio": 0.01 * (i + 1), "cosine": 1.0}
                                                     for i, k in enumerate(ac.KINDS)}})}
    data = {"schemes": {"none": row(0.2, 0.9, 0.0, 10.0, acts=1000), "int8_tensor": row(0.25, 0.88, 0.05, 15.0)}}
    s = ac.summarize(data)["schemes"]["int8_tensor"]
    assert s["stored_ratio"] == 0.25 and s["activations_ratio_vs_none"] == 0.4
    assert s["final_loss_ratio_vs_none"] == pytest.approx(1.25) and s["training_unaffected"] is False
    assert s["accuracy_change"] == pytest.approx(-0.02) and s["step_time_ratio_vs_none"] == 1.5
    assert s["within_stated_error"] is True and s["worst_kind"] == ac.KINDS[-1] and s["best_kind"] == ac.KINDS[0]
    assert ac.summarize(data)["int8_kinds_by_error"][0] == ac.KINDS[-1]
