"""The activations, checkpointing and mixed-precision pages and their cheat-sheet part render this host's numbers:
a mini site built with ``--strict`` from canned results of the experiments' ``test`` profiles."""
import pytest

from conftest import build_chapter_site, site_text, test_profile_data
from experiments import activation_memory, checkpointing, mixed_precision
from generator.site.formatting import bytes_, grouped, ms, num, pct, ratio, sci

MODULES = {"activation_memory": activation_memory, "checkpointing": checkpointing, "mixed_precision": mixed_precision}
PAGES = ("03-activations.md", "04-checkpointing.md", "05-mixed-precision.md")
PART = "_cheatsheet/03-activations-precision.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapters3to5")
    data = {name: test_profile_data(name) for name in MODULES}
    out = build_chapter_site(root, data, PAGES, (PART,))
    summary = {name: MODULES[name].summarize(d) for name, d in data.items()}
    return out, data, summary


def test_activations_page(site):
    out, data, summary = site
    text = site_text(out, "03-activations/index.html")
    a, sa = data["activation_memory"], summary["activation_memory"]
    last = a["seq_sweep"]["rows"][-1]
    for expected in (bytes_(a["bf16"]["saved_bytes"]), ratio(sa["bf16"]["ratio_to_paper_16bit"]),
                     bytes_(sa["bf16"]["paper_16bit_total_bytes"]), bytes_(last["sdpa_bytes"]),
                     bytes_(last["math_bytes"]), bytes_(sa["layernorm_stats_bytes"]),
                     bytes_(sa["autocast_bf16"]["weight_cast_bytes"]),
                     pct(sa["predicted_share"][-1]["activation_share"]), grouped(sa["shape"]["sbh"]),
                     f'The walk finds {grouped(sa["bf16"]["graph_walk_extra_bytes"])} bytes more',
                     bytes_(sa["measured_share"][0]["activations_and_temporaries_bytes"]),
                     sa["bf16"]["modules"]["core.attn_drop"]["label"]):  # row labels come from the summary
        assert expected in text, expected
    assert "8-byte float64 scalar tensor" in text  # the graph walk's extra bytes are the 1/sqrt(d) scalar
    assert "Traceback" not in text and "No result for" not in text
    assert (out / "03-activations" / "index.html").read_text().count("<svg") >= 3  # the three figures


def test_checkpointing_page(site):
    out, data, summary = site
    text = site_text(out, "04-checkpointing/index.html")
    c, sc = data["checkpointing"], summary["checkpointing"]
    p, sp = c["policies"], sc["policies"]
    for expected in (bytes_(p["none"]["peak_bytes"]), bytes_(p["every_layer"]["peak_bytes"]),
                     ratio(sp["every_layer"]["flops_ratio_vs_none"]),
                     ratio(sp["selective_attention_core"]["peak_ratio_vs_none"]),
                     str(p["every_layer"]["largest_batch"]["max_batch"]), bytes_(c["budget_bytes"]),
                     num(c["rng"]["no_preserve"]["max_abs_grad_diff_vs_none"]),
                     f'{ms(p["none"]["time"]["median_ms"])} ± {ms(sp["none"]["time_half_iqr_ms"])}',
                     f'{ms(c["rng"]["preserve"]["time"]["median_ms"])} ± '
                     f'{ms(sc["rng"]["preserve"]["time_half_iqr_ms"])}',
                     sp["sac_save_matmuls"]["kept"]):
        assert expected in text, expected
    overhead_bound = "dominated by per-op overhead" in text
    assert overhead_bound is sp["every_layer"]["time_well_above_flops"]
    assert "yes, bit for bit" in text


def test_mixed_precision_page(site):
    out, data, summary = site
    text = site_text(out, "05-mixed-precision/index.html")
    m, sm = data["mixed_precision"], summary["mixed_precision"]
    assert sm["autocast"]["mode"] == "autocast_bf16"  # CPU: bf16 autocast, no fp16 step measured
    for expected in (sci(m["formats"]["fp16"]["smallest_subnormal"], 3), sci(m["formats"]["bf16"]["eps"], 3),
                     pct(m["loss_scaling"]["activations"]["fp16"][0]["subnormal_fraction"]),
                     ratio(sm["step_costs"]["autocast_bf16"]["peak_ratio_vs_fp32"]),
                     grouped(sm["grad_scaler"]["final_scale"]),
                     "Autocast to bf16 changed the peak", "bf16 on this CPU host, no scaler needed"):
        assert expected in text, expected
    fp32 = m["step_costs"]["fp32"]["time"]
    assert f'{ms(fp32["median_ms"])} ± {ms(sm["step_costs"]["fp32"]["time_half_iqr_ms"])}' in text
    assert "unchanged (checked bit for bit)" in text


def test_cheatsheet_part(site):
    out, data, summary = site
    text = site_text(out, "cheatsheet/index.html")
    assert "Activations per layer" in text and "Checkpointing" in text and "Number formats" in text
    assert bytes_(data["activation_memory"]["bf16"]["saved_bytes"]) in text
    assert ratio(summary["checkpointing"]["policies"]["every_layer"]["peak_ratio_vs_none"]) in text
    assert "attn core only" in text  # the short policy names come from the summary
    assert num(data["mixed_precision"]["formats"]["fp16"]["max"], 5) in text
