"""activation_memory on its test profile: the paper's pieces, the s² term, linearity in batch, the summary."""
import json

import pytest

from experiments import activation_memory as am
from experiments.lib.cli import to_json
from experiments.lib.formulas import korthikanti_activation_terms
from conftest import test_profile_data

CFG = am.PROFILES["test"]


@pytest.fixture(scope="module")
def data():
    return test_profile_data("activation_memory")


@pytest.fixture(scope="module")
def summary(data):
    return am.summarize(data)


def test_paper_pieces_sum_to_the_formula():
    for s, b, h, a in ((16, 2, 32, 2), (128, 3, 64, 8)):
        pieces = am.predicted_by_module(s, b, h, a)
        assert sum(pieces.values()) == sum(korthikanti_activation_terms(s, b, h, a).values())
        g = am.by_group(pieces)
        t = korthikanti_activation_terms(s, b, h, a)
        assert g["mlp"] + s * b * h == t["mlp_bytes"]            # the MLP's dropout mask is 1 byte per element
        assert g["norms"] == t["layernorm_bytes"]


def test_breakdown_against_the_paper(data, summary):
    bf16, fp32 = summary["bf16"], summary["fp32"]
    # the activation pieces match the paper exactly; only masks and LayerNorm statistics differ
    for g in ("attention", "mlp"):
        assert bf16["groups"][g]["ratio"] == 1.0
        assert fp32["groups"][g]["measured_bytes"] == 2 * bf16["groups"][g]["measured_bytes"]
    assert data["dropout_mask_dtype"] == "bfloat16"  # CPU dropout keeps a scaled mask in the input dtype
    assert summary["dropout_masks_are_bool"] is False
    assert bf16["groups"]["dropout_masks"]["ratio"] == 2.0
    assert bf16["groups"]["norms"]["measured_bytes"] - bf16["groups"]["norms"]["paper_16bit_bytes"] == \
        summary["layernorm_stats_bytes"]
    # two LayerNorms keep a mean and an rstd per token, in bf16
    assert summary["layernorm_stats_bytes"] == 2 * 2 * CFG.seq * CFG.batch * 2
    assert bf16["ratio_to_paper_16bit"] > 1.0
    # the graph walk finds the same bytes, plus the 8-byte float64 scalar 1/sqrt(d) the pack hook never sees
    for key in ("bf16", "fp32"):
        assert data[key]["graph_walk_total_bytes"] - data[key]["saved_bytes"] == 8
        assert summary[key]["graph_walk_extra_bytes"] == 8
        assert summary[key]["graph_walk_extra_is_one_float64_scalar"] is True
    h = CFG.hidden
    assert summary["autocast_bf16"]["weight_cast_bytes"] == 2 * (3 * h * h + h * h + 4 * h * h + 4 * h * h)
    assert summary["bf16"]["weight_cast_bytes"] == 0
    # every submodule of the paper's accounting has a label, and the op table covers every node of every precision
    assert set(summary["bf16"]["modules"]) == set(am.PAPER_PIECES)
    assert all(row["label"] for row in summary["bf16"]["modules"].values())
    for key in ("bf16", "fp32", "autocast_bf16"):
        assert sum(row[f"{key}_bytes"] for row in summary["by_op"].values()) == data[key]["graph_walk_total_bytes"]


def test_quadratic_term_appears_and_disappears(data, summary):
    sw = summary["seq_sweep"]
    assert sw["growth_last_doubling"]["sdpa"] == pytest.approx(2.0)  # no s x s tensor saved
    assert sw["growth_last_doubling"]["math"] > 2.2
    assert sw["growth_last_doubling"]["sdpa_attn_dropout"] > 2.2  # dropout sends CPU SDPA to the math path
    kept = sw["kept_quadratic_term"]
    assert kept["math"] is True and kept["sdpa_attn_dropout"] is True and kept["sdpa"] is False
    for row, paper in zip(data["seq_sweep"]["rows"], sw["rows"]):
        assert row["sdpa_bytes"] < row["math_bytes"]
        assert paper["paper_bytes"] == paper["paper_linear_bytes"] + paper["paper_quadratic_bytes"]


def test_linear_in_batch_and_equal_per_layer(data, summary):
    assert summary["batch_sweep"]["per_sample_spread_ratio"] == 1.0
    share = data["measured_share"][0]
    assert len(set(share["saved_bytes_per_layer"])) == 1
    # a fp32 layer at batch 1 saves what the bf16 layer saves at batch 2 (the breakdown's batch)
    assert share["batch"] == 1 and CFG.batch == 2
    assert share["saved_bytes_per_layer"][0] == data["bf16"]["saved_bytes"]
    assert 0 < summary["measured_share"][0]["activation_share"] < 1


def test_predicted_share_grows_with_sequence(summary):
    rows = summary["predicted_share"]
    by_seq = [r for r in rows if r["batch"] == rows[0]["batch"]]
    assert by_seq[1]["seq"] > by_seq[0]["seq"] and by_seq[1]["activation_share"] > by_seq[0]["activation_share"]
    assert all(r["activation_flash_share"] < r["activation_share"] for r in rows)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_run():
    d = json.loads(to_json(am.run(CFG, "cuda")))
    s = am.summarize(d)
    assert d["dropout_mask_dtype"] == "bool" and s["dropout_masks_are_bool"] is True
    assert s["bf16"]["groups"]["dropout_masks"]["ratio"] == 1.0  # CUDA's native_dropout: 1-byte masks, as counted
    assert s["bf16"]["groups"]["attention"]["ratio"] == 1.0 and s["bf16"]["groups"]["mlp"]["ratio"] == 1.0
    assert s["seq_sweep"]["growth_last_doubling"]["sdpa"] < 2.2
