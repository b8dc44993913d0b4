"""activation_offload on its test profile: offloaded activations are not resident, the gradients are exact, the
files hold what was offloaded; the hooks themselves; what summarize derives; the CUDA variant (skips here)."""
import json

import pytest
import torch

from experiments import activation_offload as ao
from experiments.lib.cli import to_json
from experiments.lib.saved_hooks import MmapOffload, pack_call_bytes
from conftest import NEEDS_CUDA, test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("activation_offload")


def test_offloaded_activations_are_not_resident(data):
    none, mm = data["variants"]["none"], data["variants"]["mmap_files"]
    assert list(data["variants"]) == ["none", "mmap_files"]  # no CUDA here: no save_on_cpu row
    # what stays live after forward is only what the hooks left in place (masks, small tensors, the loss)
    assert mm["activations_after_forward_bytes"] <= none["activations_after_forward_bytes"] - mm["offloaded_bytes"] \
        + mm["left_in_place_bytes"]
    assert mm["activations_after_forward_bytes"] < 0.1 * none["activations_after_forward_bytes"]
    assert mm["peak_bytes"] < none["peak_bytes"]
    assert mm["disk_written_bytes"] == mm["offloaded_bytes"] > 0
    assert mm["files_written_count"] == mm["offloaded_count"] > 0


def test_offload_is_lossless(data):
    assert data["variants"]["mmap_files"]["max_abs_grad_diff_vs_none"] == 0.0


def test_files_exist_between_forward_and_backward_and_are_removed(tmp_path):
    lin = torch.nn.Linear(64, 64)
    x = torch.randn(32, 64)
    with MmapOffload(directory=str(tmp_path), exclude=[lin]) as off:
        y = torch.relu(lin(x)).sum()
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files and off.disk_bytes() == off.stats.original_bytes
        y.backward()
    assert off.stats.unpacked_count == off.stats.packed_count
    assert not list(tmp_path.iterdir())


def test_pack_call_bytes_counts_every_pack():
    lin = torch.nn.Linear(8, 8, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    # mm saves its input and the weight: 4*8 + 8*8 floats
    assert pack_call_bytes(lambda: lin(x)) == 4 * (4 * 8 + 8 * 8)


def canned(median_ms, acts, peak, **extra):
    return {"activations_after_forward_bytes": acts, "live_after_forward_bytes": acts, "peak_bytes": peak,
            "max_abs_grad_diff_vs_none": 0.0, "disk_written_bytes": extra.get("disk", 0),
            "time": {"median_ms": median_ms, "iqr_ms": 2.0, "runs": 5}}


def test_summary_from_canned_measurements():
    data = {"device_type": "cpu", "cuda_transfer": None,
            "variants": {"none": canned(10.0, 1000, 2000), "mmap_files": canned(30.0, 100, 1000, disk=2000)}}
    s = ao.summarize(data)
    mm = s["variants"]["mmap_files"]
    assert mm["time_ratio_vs_none"] == 3.0 and mm["extra_time_ms"] == 20.0
    assert mm["activations_ratio_vs_none"] == 0.1 and mm["resident_saved_bytes"] == 900
    assert mm["peak_ratio_vs_none"] == 0.5 and mm["lossless"] is True
    assert s["shown_variant"] == "mmap_files" and s["cuda"] is False
    assert s["mmap_disk_bytes_per_s"] == pytest.approx(2000 / 0.02)
    cuda = {"device_type": "cuda", "variants": {**data["variants"], "save_on_cpu_pinned": canned(14.0, 100, 1500)},
            "cuda_transfer": {"packed_per_step_bytes": 1e6, "d2h_bytes_per_s": 1e9, "h2d_bytes_per_s": 1e9}}
    sc = ao.summarize(cuda)
    assert sc["shown_variant"] == "save_on_cpu_pinned"
    assert sc["cuda_transfer"]["predicted_copy_ms"] == pytest.approx(2.0)
    assert sc["cuda_transfer"]["measured_over_predicted_ratio"] == pytest.approx(2.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{NEEDS_CUDA}: save_on_cpu(pin_memory=True)")
def test_cuda_save_on_cpu_frees_device_memory():
    cfg = ao.PROFILES["test"]
    d = json.loads(to_json(ao.run(cfg, "cuda")))
    v = d["variants"]
    assert v["save_on_cpu_pinned"]["max_abs_grad_diff_vs_none"] == 0.0
    assert v["save_on_cpu_pinned"]["activations_after_forward_bytes"] < v["none"]["activations_after_forward_bytes"]
    assert d["cuda_transfer"]["moved_per_step_bytes"] > 0 and d["cuda_transfer"]["h2d_bytes_per_s"] > 0
    assert ao.summarize(d)["shown_variant"] == "save_on_cpu_pinned"
