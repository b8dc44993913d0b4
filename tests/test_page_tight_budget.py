"""The chapter page and cheat-sheet part of quantized_graph, qas, sparse_update and fused_update render this
host's numbers: a mini site built with ``--strict`` from canned results of tiny runs."""
import pytest

from conftest import build_chapter_site, site_text
from experiments import fused_update, qas, quantized_graph, sparse_update
from experiments.lib.mbv2 import Arch
from generator.site.formatting import bytes_, grouped, pct, ratio, sci, signed

TINY = {
    "quantized_graph": quantized_graph.Config(batch=32, linear_out=8, conv_in=4, conv_out=4, image_size=8,
                                              clip_percentiles=(100.0, 99.0), accumulator_sizes=(8, 16),
                                              accumulator_batch=16, accumulator_bits=(16, 24)),
    "qas": qas.Config(channels=(4, 8, 8), warmup_steps=30, steps=10, eval_every=5),
    "sparse_update": sparse_update.Config(arch=Arch(stem=4, blocks=((1, 4, 1), (2, 8, 2)), head=8), pretrain_steps=10,
                                          finetune_steps=2, batch=16, budget_fractions=(0.3, 0.7), last_k=(1,),
                                          exhaustive_units=3),
    "fused_update": fused_update.Config(widths=(64, 32, 32, 10), batch=8, steps=1),
}
MODULES = {"quantized_graph": quantized_graph, "qas": qas, "sparse_update": sparse_update,
           "fused_update": fused_update}
PAGE = "06-tight-budget.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapter6")
    data = {name: MODULES[name].run(cfg, "cpu") for name, cfg in TINY.items()}
    out = build_chapter_site(root, data, (PAGE,), ("_cheatsheet/06-tight-budget.md",))
    return out, data


def test_page_renders_the_numbers(site):
    out, data = site
    text = site_text(out, "06-tight-budget/index.html")
    qg, q, sp, fu = (data[n] for n in MODULES)
    conv = qg["layers"]["conv"]["per_channel"]
    for expected in (
        pct(conv["codes_equal_fraction"], 2), sci(qg["clipping"][-1]["real_vs_fp32_rel_rms"]),
        pct(q["modes"]["int8"]["final_test_accuracy"]), pct(q["modes"]["int8_qas"]["final_test_accuracy"]),
        sci(q["modes"]["fp32"]["ratio_weight"]["conv2"]),
        bytes_(sp["full_update_bytes"]), bytes_(sp["stock_torch_conv"]["bias_only_bytes"]),
        bytes_(sp["layers"][1]["path_bytes"]), bytes_(sp["searches"][-1]["measured_bytes"]),
        bytes_(fu["fused"]["adam"]["vanilla"]["max_live_grad_bytes"]),
        bytes_(fu["fused"]["adam"]["fused"]["max_live_grad_bytes"]),
        fu["breakages"][0]["error_message"],
        # derived figures the page reads from the results (pages never compute)
        grouped(qg["int32_max_products"]), grouped(q["fp32_over_int8_ratio"]["conv2"]),
        sci(q["at_start"]["conv2"]["weight_scale_rms_squared"]),
        ratio(q["at_start"]["conv2"]["int8_measured_over_predicted_ratio"]),
        pct(sp["stock_torch_conv"]["bias_only_over_full_update_fraction"]),
        signed(sp["frontier"][1]["measured_benefit"]),
        bytes_(fu["inplace"][2]["extra_saved_bytes_vs_relu"]), bytes_(fu["inplace"][3]["extra_saved_bytes_vs_relu"]),
    ):
        assert expected in text, expected
    # four figures per chapter section pair, all drawn
    assert text.count("Drills") >= 1


def test_cheatsheet_part_renders(site):
    out, data = site
    text = site_text(out, "cheatsheet/index.html")
    assert "Training under a tight budget" in text
    assert bytes_(data["fused_update"]["fused"]["adam"]["fused"]["max_live_grad_bytes"]) in text
    assert pct(data["qas"]["modes"]["int8_qas"]["final_test_accuracy"]) in text
