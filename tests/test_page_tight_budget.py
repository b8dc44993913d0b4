"""The chapter page and cheat-sheet part of quantized_graph, qas, sparse_update and fused_update render this
host's numbers: a mini site built with ``--strict`` from canned results of the ``test`` profiles."""
import re

import pytest

from conftest import build_chapter_site, site_text, test_profile_data
from experiments import fused_update, qas, quantized_graph, sparse_update
from generator.site.formatting import bytes_, grouped, pct, ratio, sci, signed

MODULES = {"quantized_graph": quantized_graph, "qas": qas, "sparse_update": sparse_update,
           "fused_update": fused_update}
PAGE = "06-tight-budget.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapter6")
    data = {name: test_profile_data(name) for name in MODULES}
    out = build_chapter_site(root, data, (PAGE,), ("_cheatsheet/06-tight-budget.md",))
    summaries = {name: m.summarize(data[name]) for name, m in MODULES.items()}
    return out, data, summaries


def test_page_renders_the_numbers(site):
    out, data, summaries = site
    text = re.sub(r"\s+", " ", site_text(out, "06-tight-budget/index.html"))
    qg, q, sp, fu = (data[n] for n in MODULES)
    qgs, qs, sps, fus = (summaries[n] for n in MODULES)
    conv = qg["layers"]["conv"]["per_channel"]
    for expected in (
        pct(conv["codes_equal_fraction"], 2), sci(qg["clipping"][-1]["real_vs_fp32_rel_rms"]),
        pct(qs["final_test_accuracy"]["int8"]), pct(qs["final_test_accuracy"]["int8_qas"]),
        sci(q["modes"]["fp32"]["ratio_weight"]["conv2"]),
        bytes_(sps["frontier"]["full_update"]["measured_bytes"]), bytes_(sp["stock_torch_conv"]["bias_only_bytes"]),
        bytes_(sp["layers"]["b1.dw"]["path_bytes"]), bytes_(sp["searches"][-1]["measured_bytes"]),
        bytes_(fus["fused"]["adam"]["vanilla"]["max_live_grad_bytes"]),
        bytes_(fus["fused"]["adam"]["fused"]["max_live_grad_bytes"]),
        fu["breakages"]["saved_output_modified"]["error_message"],
        # derived figures the page reads from the summaries (pages never compute)
        grouped(qgs["int32_max_products"]), sci(qs["fp32_over_int8_min"]), sci(qs["fp32_over_int8_max"]),
        sci(qs["at_start"]["conv2"]["weight_scale_rms_squared"]),
        ratio(qs["at_start"]["conv2"]["int8_measured_over_predicted_ratio"]),
        pct(sps["stock_torch_conv"]["bias_only_over_full_update_fraction"]),
        signed(sps["frontier"]["full_update"]["measured_benefit"]),
        bytes_(fus["inplace"]["relu6"]["extra_saved_bytes_vs_relu"]),
        bytes_(fus["inplace"]["relu6_inplace"]["extra_saved_bytes_vs_relu"]),
        pct(fus["fused"]["sgd"]["peak_saving_fraction"]),
        # labels from the summaries
        f"outputs wrong with {qgs['narrowest_accumulator_bits']}-bit accumulator",
        f"last-k layers (k = 1) {bytes_(sps['frontier']['last_1']['measured_bytes'])}",
        f"searched sparse update (budget {bytes_(sp['searches'][0]['budget_bytes'])})",
        "bias only " + bytes_(sps["frontier"]["bias_only"]["measured_bytes"]),
        fus["breakages"]["checkpoint_reentrant"]["label"], "out of place: p = p - lr * g",
    ):
        assert expected in text, expected
    # Rows that are neither last-k nor searched carry no "(k = …)" or "(budget …)".
    assert "full update (" not in text and "bias only (" not in text


def test_cheatsheet_part_renders(site):
    out, data, summaries = site
    text = site_text(out, "cheatsheet/index.html")
    assert "Training under a tight budget" in text
    assert bytes_(summaries["fused_update"]["fused"]["adam"]["fused"]["max_live_grad_bytes"]) in text
    assert pct(summaries["qas"]["final_test_accuracy"]["int8_qas"]) in text
    assert bytes_(summaries["sparse_update"]["largest_budget_search"]["measured_bytes"]) in text
