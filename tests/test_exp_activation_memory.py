"""activation_memory on a tiny config: the paper's pieces, the s² term, linearity in batch, valid JSON."""
import json

import pytest

from experiments import activation_memory as am
from experiments.lib.cli import to_json
from experiments.lib.formulas import korthikanti_activation_terms

TINY = am.Config(hidden=32, heads=2, seq=32, batch=2, seq_lens=(16, 32, 64), batches=(1, 3), share_layers=2,
                 share_vocab=64, share_batches=(1,), shapes=(("toy", 2, 64, 4, 100),), share_seqs=(64, 128),
                 share_batch_list=(1,))


@pytest.fixture(scope="module")
def data():
    return json.loads(to_json(am.run(TINY, "cpu")))


def test_paper_pieces_sum_to_the_formula():
    for s, b, h, a in ((16, 2, 32, 2), (128, 3, 64, 8)):
        pieces = am.predicted_by_module(s, b, h, a)
        assert sum(pieces.values()) == sum(korthikanti_activation_terms(s, b, h, a).values())
        g = am.by_group(pieces)
        t = korthikanti_activation_terms(s, b, h, a)
        assert g["mlp"] + s * b * h == t["mlp_bytes"]            # the MLP's dropout mask is 1 byte per element
        assert g["norms"] == t["layernorm_bytes"]


def test_breakdown_against_the_paper(data):
    bf16, fp32 = data["bf16"], data["fp32"]
    # the activation pieces match the paper exactly; only masks and LayerNorm statistics differ
    for g in ("attention", "mlp"):
        assert bf16["groups"][g]["ratio"] == 1.0
        assert fp32["groups"][g]["measured_bytes"] == 2 * bf16["groups"][g]["measured_bytes"]
    assert data["dropout_mask_dtype"] == "bfloat16"  # CPU dropout keeps a scaled mask in the input dtype
    assert bf16["groups"]["dropout_masks"]["ratio"] == 2.0
    assert bf16["groups"]["norms"]["measured_bytes"] - bf16["groups"]["norms"]["paper_16bit_bytes"] == \
        data["layernorm_stats_bytes"]
    assert bf16["ratio_to_paper_16bit"] > 1.0
    # the graph walk finds the same bytes, plus the 8-byte float64 scalar 1/sqrt(d) the pack hook never sees
    for run in (bf16, fp32):
        assert run["graph_walk_total_bytes"] - run["saved_bytes"] == 8
        assert run["graph_walk_extra_bytes"] == run["graph_walk_total_bytes"] - run["saved_bytes"]
        assert run["graph_walk_extra_is_one_float64_scalar"] is True
    amp = data["autocast_bf16"]
    h = TINY.hidden
    assert amp["weight_cast_bytes"] == 2 * (3 * h * h + h * h + 4 * h * h + 4 * h * h)


def test_quadratic_term_appears_and_disappears(data):
    sw = data["seq_sweep"]
    assert sw["growth_last_doubling"]["sdpa"] == pytest.approx(2.0)  # no s x s tensor saved
    assert sw["growth_last_doubling"]["math"] > 2.2
    assert sw["growth_last_doubling"]["sdpa_attn_dropout"] > 2.2  # dropout sends CPU SDPA to the math path
    assert sw["quadratic_growth_threshold"] == am.QUADRATIC_GROWTH_THRESHOLD
    for label, growth in sw["growth_last_doubling"].items():
        assert sw["kept_quadratic_term"][label] is (growth > sw["quadratic_growth_threshold"]), label
    assert sw["kept_quadratic_term"]["sdpa"] is False  # linear: growth 2 per doubling
    for row in sw["rows"]:
        assert row["sdpa_bytes"] < row["math_bytes"]
        assert row["sdpa_attn_dropout_above_math"] is (row["sdpa_attn_dropout_bytes"] > row["math_bytes"])
        assert row["paper_bytes"] == row["paper_linear_bytes"] + row["paper_quadratic_bytes"]


def test_linear_in_batch_and_equal_per_layer(data):
    assert data["batch_sweep"]["per_sample_spread_ratio"] == 1.0
    share = data["measured_share"][0]
    assert len(set(share["saved_bytes_per_layer"])) == 1
    # a fp32 layer at batch 1 saves what the bf16 layer saves at batch 2 (the breakdown's batch)
    assert share["saved_bytes_per_layer"][0] == data["bf16"]["saved_bytes"]
    assert 0 < share["activation_share"] < 1
    assert share["activations_and_temporaries_bytes"] == \
        share["peak"]["activations_bytes"] + share["peak"]["temporaries_bytes"]
    assert share["activation_share"] == share["activations_and_temporaries_bytes"] / share["peak"]["total_bytes"]


def test_predicted_share_grows_with_sequence(data):
    rows = data["predicted_share"]
    assert rows[1]["activation_share"] > rows[0]["activation_share"]
    assert all(r["activation_flash_share"] <= r["activation_share"] for r in rows)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_run():
    d = json.loads(to_json(am.run(TINY, "cuda")))
    assert d["dropout_mask_dtype"] == "bool"  # CUDA's native_dropout keeps a 1-byte mask, as the paper counts
    assert d["bf16"]["groups"]["dropout_masks"]["ratio"] == 1.0
    assert d["bf16"]["groups"]["attention"]["ratio"] == 1.0 and d["bf16"]["groups"]["mlp"]["ratio"] == 1.0
    assert d["seq_sweep"]["growth_last_doubling"]["sdpa"] < 2.2
