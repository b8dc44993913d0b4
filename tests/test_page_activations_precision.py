"""The activations, checkpointing and mixed-precision pages and their cheat-sheet part render this host's numbers:
a mini site built with ``--strict`` from canned results of tiny runs."""
import pytest

from conftest import build_chapter_site, site_text
from experiments import activation_memory, checkpointing, mixed_precision
from generator.site.formatting import bytes_, grouped, ms, num, pct, ratio, sci

TINY = {
    "activation_memory": activation_memory.Config(
        hidden=32, heads=2, seq=32, batch=2, seq_lens=(16, 32, 64), batches=(1, 2), share_layers=2, share_vocab=64,
        share_batches=(1,), shapes=(("toy", 2, 64, 4, 100),), share_seqs=(64, 128), share_batch_list=(1, 2)),
    "checkpointing": checkpointing.Config(layers=4, hidden=16, heads=2, seq=16, batch=2, vocab=32,
                                          min_run_time_s=0.01, budget_bytes_cpu=3 * 2**20, max_batch=256),
    "mixed_precision": mixed_precision.Config(layers=1, hidden=16, heads=2, seq=16, batch=4, vocab=32, train_steps=2,
                                              scale_exponents=(0, 8, 16, 24), min_run_time_s=0.01, scaler_steps=6,
                                              scaler_init_exp=30, scaler_growth_interval=2),
}
MODULES = {"activation_memory": activation_memory, "checkpointing": checkpointing, "mixed_precision": mixed_precision}
PAGES = ("03-activations.md", "04-checkpointing.md", "05-mixed-precision.md")
PART = "_cheatsheet/03-activations-precision.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapters3to5")
    data = {name: MODULES[name].run(cfg, "cpu") for name, cfg in TINY.items()}
    out = build_chapter_site(root, data, PAGES, (PART,))
    return out, data


def test_activations_page(site):
    out, data = site
    text = site_text(out, "03-activations/index.html")
    a = data["activation_memory"]
    last = a["seq_sweep"]["rows"][-1]
    for expected in (bytes_(a["bf16"]["saved_bytes"]), ratio(a["bf16"]["ratio_to_paper_16bit"]),
                     bytes_(a["bf16"]["paper_16bit_total_bytes"]), bytes_(last["sdpa_bytes"]),
                     bytes_(last["math_bytes"]), bytes_(a["layernorm_stats_bytes"]),
                     bytes_(a["autocast_bf16"]["weight_cast_bytes"]), pct(a["predicted_share"][-1]["activation_share"]),
                     grouped(a["shape"]["sbh"]),
                     f'The walk finds {grouped(a["bf16"]["graph_walk_extra_bytes"])} bytes more',
                     bytes_(a["measured_share"][0]["activations_and_temporaries_bytes"])):
        assert expected in text, expected
    assert "8-byte float64 scalar tensor" in text  # the graph walk's extra bytes are the 1/sqrt(d) scalar
    assert "Traceback" not in text and "No result for" not in text
    assert (out / "03-activations" / "index.html").read_text().count("<svg") >= 3  # the three figures


def test_checkpointing_page(site):
    out, data = site
    text = site_text(out, "04-checkpointing/index.html")
    c = data["checkpointing"]
    p = c["policies"]
    for expected in (bytes_(p["none"]["peak_bytes"]), bytes_(p["every_layer"]["peak_bytes"]),
                     ratio(p["every_layer"]["flops_ratio_vs_none"]), ratio(p["selective_attention_core"]["peak_ratio_vs_none"]),
                     str(p["every_layer"]["largest_batch"]["max_batch"]), bytes_(c["budget_bytes"]),
                     num(c["rng"]["no_preserve"]["max_abs_grad_diff_vs_none"]),
                     f'{ms(p["none"]["time"]["median_ms"])} ± {ms(p["none"]["time"]["half_iqr_ms"])}',
                     f'{ms(c["rng"]["preserve"]["time"]["median_ms"])} ± {ms(c["rng"]["preserve"]["time"]["half_iqr_ms"])}'):
        assert expected in text, expected
    overhead_bound = "dominated by per-op overhead" in text
    assert overhead_bound is p["every_layer"]["time_well_above_flops"]
    assert "yes, bit for bit" in text


def test_mixed_precision_page(site):
    out, data = site
    text = site_text(out, "05-mixed-precision/index.html")
    m = data["mixed_precision"]
    for expected in (sci(m["formats"]["fp16"]["smallest_subnormal"], 3), sci(m["formats"]["bf16"]["eps"], 3),
                     pct(m["loss_scaling"]["activations"]["fp16"][0]["subnormal_fraction"]),
                     ratio(m["step_costs"]["autocast_bf16"]["peak_ratio_vs_fp32"]),
                     grouped(m["grad_scaler"]["final_scale"])):
        assert expected in text, expected
    fp32 = m["step_costs"]["fp32"]["time"]
    assert f'{ms(fp32["median_ms"])} ± {ms(fp32["half_iqr_ms"])}' in text
    assert "unchanged (checked bit for bit)" in text


def test_cheatsheet_part(site):
    out, data = site
    text = site_text(out, "cheatsheet/index.html")
    assert "Activations per layer" in text and "Checkpointing" in text and "Number formats" in text
    assert bytes_(data["activation_memory"]["bf16"]["saved_bytes"]) in text
    assert ratio(data["checkpointing"]["policies"]["every_layer"]["peak_ratio_vs_none"]) in text
    assert num(data["mixed_precision"]["formats"]["fp16"]["max"], 5) in text
