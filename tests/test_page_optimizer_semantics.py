"""The chapter page and cheat-sheet part of weight_decay, grad_accumulation and optimizer_lifecycle render
this host's numbers: a mini site built with ``--strict`` from canned results of tiny runs."""

import pytest

from conftest import build_chapter_site, site_text
from experiments import grad_accumulation, optimizer_lifecycle, weight_decay
from generator.site.formatting import bytes_, grouped, ms, num, pct, ratio, sci

TINY = {
    "weight_decay": weight_decay.Config(steps=100, params_per_scale=256, trajectory_points=11, vocab=64, d_model=16,
                                        n_heads=2, d_ff=32, n_layers=1),
    "grad_accumulation": grad_accumulation.Config(batch=32, features=16, hidden=32, ks=(1, 2, 4),
                                                  unequal_sizes=(20, 8, 3, 1), amp_cycles=1, mem_batch=64,
                                                  mem_width=32, mem_depth=2, mem_micro=(64, 16),
                                                  min_run_time_s=0.01),
    "optimizer_lifecycle": optimizer_lifecycle.Config(in_features=8, hidden=16, out_features=4, batch=4),
}
MODULES = {"weight_decay": weight_decay, "grad_accumulation": grad_accumulation,
           "optimizer_lifecycle": optimizer_lifecycle}
PAGE = "02-optimizer-semantics.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapter2")
    data = {name: MODULES[name].run(cfg, "cpu") for name, cfg in TINY.items()}
    out = build_chapter_site(root, data, (PAGE,), ("_cheatsheet/02-optimizer-semantics.md",),
                             stubs={"01-where-the-memory-goes.md": "# Where the memory goes\n"})
    return out, data


def test_page_renders_the_numbers(site):
    out, data = site
    text = site_text(out, "02-optimizer-semantics/index.html")
    wd, ga, ol = data["weight_decay"], data["grad_accumulation"], data["optimizer_lifecycle"]
    z = wd["one_step"]["zero_grad"]
    for expected in (
        num(z["adam_l2"]["shrink"]), num(z["adamw"]["shrink"]),
        num(z["adamw"]["theta_measured"], 8),
        grouped(wd["groups"]["total_params"]), grouped(wd["groups"]["decay_params"]),
        sci(ga["summary"]["fp32_max_rel_diff"]), sci(ga["breakers"]["batchnorm"]["rel_diff"]),
        bytes_(ga["memory"][0]["peak_total_bytes"]), bytes_(ga["memory"][-1]["peak_total_bytes"]),
        ratio(ga["correctness"][-1]["no_division_norm_ratio"], 4),
        bytes_(ol["state"][2]["saved_state_dict_bytes"]), bytes_(ol["state"][2]["state_bytes"]),
    ):
        assert expected in text, expected
    # derived figures come from the data, not from arithmetic in the page
    adam = next(r for r in ol["state"] if r["optimizer"] == "adam")
    adamw_noisy = wd["trajectories"]["noisy"]["adamw"]
    for expected in (
        pct(wd["groups"]["decay_params_fraction"]), pct(wd["groups"]["no_decay_params_fraction"]),
        ratio(adamw_noisy["effective_over_nominal_min"]), ratio(adamw_noisy["effective_over_nominal_max"]),
        ratio(ga["memory"][0]["activations_over_predicted_ratio"]), ms(ga["memory"][0]["step_time_half_iqr_ms"]),
        bytes_(adam["saved_model_and_state_dict_bytes"]), ratio(adam["saved_model_and_state_dict_over_model_ratio"]),
        num(ol["resume_max_abs_diff_all_optimizers"]),
    ):
        assert expected in text, expected
    dropout_verdict = "turned out to be exactly the big mask" if ga["breakers"]["dropout"]["masks_match"] else (
        "smaller masks differ from the one big mask")
    assert dropout_verdict in text
    clip_verdict = "are all below the limit" if ga["breakers"]["clipping"]["micro_contributions_all_below_max_norm"] \
        else "are compared with the limit one by one"
    assert clip_verdict in text
    # the canonical loops are the experiment's own source (compared without whitespace: highlighting splits tokens)
    squeezed = "".join(text.split())
    for code in ("def accumulation_step(model, optimizer, micro_batches, loss_fn):", "scaler.unscale_(optimizer)",
                 "def amp_accumulation_step(", "def decay_groups(model: nn.Module, weight_decay: float)"):
        assert "".join(code.split()) in squeezed, code
    assert "Traceback" not in text and "No result for" not in text


def test_cheatsheet_part_renders(site):
    out, data = site
    text = site_text(out, "cheatsheet/index.html")
    ga = data["grad_accumulation"]
    assert "Gradient accumulation" in text
    assert sci(ga["summary"]["bf16_max_rel_diff"]) in text
    assert bytes_(ga["memory"][-1]["peak_total_bytes"]) in text
