"""Chapters 1 and 2 and their cheat-sheet parts render this host's numbers: a mini site built with
``--strict`` from canned results of the experiments' ``test`` profiles (summaries derived at build time)."""

import json

import pytest

from conftest import REPO, build_chapter_site, site_text, test_profile_data
from experiments import grad_accumulation, optimizer_lifecycle, optimizer_state, weight_decay
from generator.site.formatting import bytes_, grouped, ms, num, pct, ratio, sci

MODULES = {"optimizer_state": optimizer_state, "weight_decay": weight_decay, "grad_accumulation": grad_accumulation,
           "optimizer_lifecycle": optimizer_lifecycle}
CHAPTER1, CHAPTER2 = "01-where-the-memory-goes.md", "02-optimizer-semantics.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("chapters1-2")
    data = {name: test_profile_data(name) for name in MODULES}
    # chapter 1 quotes the activations chapter's autocast weight copies: a committed result, not another run
    data["activation_memory"] = json.loads(next((REPO / "results").glob("*/activation_memory.json")).read_text())["data"]
    out = build_chapter_site(root, data, (CHAPTER1, CHAPTER2),
                             ("_cheatsheet/01-where-the-memory-goes.md", "_cheatsheet/02-optimizer-semantics.md"),
                             stubs={"03-activations.md": "# Activations\n", "05-mixed-precision.md": "# Mixed precision\n"})
    summaries = {name: module.summarize(data[name]) for name, module in MODULES.items()}
    return out, data, summaries


def test_chapter1_renders_the_numbers(site):
    out, data, summaries = site
    text = site_text(out, "01-where-the-memory-goes/index.html")
    o, os_ = data["optimizer_state"], summaries["optimizer_state"]
    adam, adam_s = o["optimizers"]["adam"]["foreach"], os_["optimizers"]["adam"]["foreach"]
    for expected in (
        grouped(o["model"]["parameters"]), bytes_(adam["state_bytes"]), ratio(adam_s["state_over_params_ratio"]),
        bytes_(adam_s["step_temporaries_bytes"]),
        bytes_(os_["optimizers"]["adam"]["for-loop"]["step_temporaries_bytes"]),
        bytes_(adam_s["predicted_persistent_bytes"]), ratio(adam_s["peak_over_predicted_persistent_ratio"]),
        bytes_(os_["optimizers"]["adafactor"]["foreach"]["step_temporaries_bytes"]),
        num(os_["precision"]["mixed-master"]["total_bytes_per_param"]),
        num(os_["precision"]["pure-bf16"]["total_bytes_per_param"]),
        bytes_(o["zero_grad"]["zeros"]["grad_bytes_between_steps"]),
    ):
        assert expected in text, expected
    # the implementations table: a column per implementation, in the summary's order; fused RMSprop is missing
    squeezed = " ".join(text.split())
    assert "optimizer for-loop foreach fused" in squeezed
    assert "not available" in text
    assert "Traceback" not in text and "No result for" not in text


def test_chapter2_renders_the_numbers(site):
    out, data, summaries = site
    text = site_text(out, "02-optimizer-semantics/index.html")
    wd, ga, ol = data["weight_decay"], data["grad_accumulation"], data["optimizer_lifecycle"]
    wds, gas, ols = summaries["weight_decay"], summaries["grad_accumulation"], summaries["optimizer_lifecycle"]
    z = wds["one_step"]["zero_grad"]
    for expected in (
        num(z["adam_l2"]["shrink"]), num(z["adamw"]["shrink"]),
        num(wd["one_step"]["zero_grad"]["adamw"]["theta_measured"], 8), num(z["adamw"]["theta_by_hand"], 8),
        grouped(wd["groups"]["total_params"]), grouped(wd["groups"]["decay_params"]),
        sci(gas["max_rel_diff"]["fp32"]), sci(gas["breakers"]["batchnorm"]["rel_diff"]),
        bytes_(ga["memory"][0]["peak_total_bytes"]), bytes_(ga["memory"][-1]["peak_total_bytes"]),
        ratio(gas["correctness"][-1]["no_division_norm_ratio"], 4),
        bytes_(ol["state"]["adam"]["saved_state_dict_bytes"]), bytes_(ol["state"]["adam"]["state_bytes"]),
    ):
        assert expected in text, expected
    # derived figures come from the summary, not from arithmetic in the page
    adam_s = ols["state"]["adam"]
    adamw_noisy = wds["trajectories"]["noisy"]["adamw"]
    scaled = gas["amp"][gas["amp_scaler_variant"]]
    for expected in (
        pct(wds["groups"]["decay_params_fraction"]), pct(wds["groups"]["no_decay_params_fraction"]),
        ratio(adamw_noisy["effective_over_nominal_min"]), ratio(adamw_noisy["effective_over_nominal_max"]),
        ratio(wds["trajectories"]["momentum"]["l2"]["effective_over_nominal"]),
        ratio(gas["memory"][0]["activations_over_predicted_ratio"]), ms(gas["memory"][0]["step_time_half_iqr_ms"]),
        bytes_(gas["memory"][0]["predicted_saved_activations_bytes"]),
        ratio(scaled["clip_before_unscale_shrink"]),
        bytes_(adam_s["saved_model_and_state_dict_bytes"]),
        ratio(adam_s["saved_model_and_state_dict_over_model_ratio"]),
        num(ols["resume_max_abs_diff_all_optimizers"]),
    ):
        assert expected in text, expected
    for name in wds["groups"]["no_decay_names_shown"]:
        assert name in text, name
    dropout_verdict = "turned out to be exactly the big mask" if gas["breakers"]["dropout"]["masks_match"] else (
        "smaller masks differ from the one big mask")
    assert dropout_verdict in text
    clip_verdict = "are all below the limit" if gas["breakers"]["clipping"]["micro_contributions_all_below_max_norm"] \
        else "are compared with the limit one by one"
    assert clip_verdict in text
    # the state keys of each optimizer, from the keyed state table
    assert "exp_avg_sq (float32, like param)" in " ".join(text.split())
    # the canonical loops are the experiment's own source (compared without whitespace: highlighting splits tokens)
    squeezed = "".join(text.split())
    for code in ("def accumulation_step(model, optimizer, micro_batches, loss_fn):", "scaler.unscale_(optimizer)",
                 "def amp_accumulation_step(", "def decay_groups(model: nn.Module, weight_decay: float)"):
        assert "".join(code.split()) in squeezed, code
    assert "Traceback" not in text and "No result for" not in text


def test_cheatsheet_parts_render(site):
    out, data, summaries = site
    text = site_text(out, "cheatsheet/index.html")
    ga, gas = data["grad_accumulation"], summaries["grad_accumulation"]
    os_ = summaries["optimizer_state"]
    assert "Gradient accumulation" in text
    assert sci(gas["max_rel_diff"]["bf16"]) in text
    assert bytes_(ga["memory"][-1]["peak_total_bytes"]) in text
    assert num(os_["optimizers"]["adam"]["foreach"]["temporaries_over_params_ratio"]) in text
    assert bytes_(data["optimizer_lifecycle"]["state"]["adam"]["saved_state_dict_bytes"]) in text
