"""The validation experiment and its page, the error ledger: real behaviour on the ``test`` profile
(one tiny GPT-2 and one tiny Llama, transformers' own classes, one AdamW step on the CPU), the
verdicts ``summarize`` derives, a host without transformers, and a mini site of the page."""
from __future__ import annotations

import copy
import re
import sys

import pytest

from conftest import build_chapter_site, site_text, test_profile_data
from experiments import estimator_validation as ev
from generator.site.formatting import bytes_, grouped, ratio

NAME = "estimator_validation"
STUBS = {"07-will-it-fit.md": "# Will it fit?\n"}


@pytest.fixture(scope="module")
def data() -> dict:
    return test_profile_data(NAME)


def test_runs_transformers_own_classes_on_the_declared_cases(data) -> None:
    assert data["ran"] is True and data["reason"] is None
    assert list(data["cases"]) == [ev.case_key(*c) for c in ev.PROFILES["test"].cases]
    classes = {k: x["model_class"] for k, x in data["cases"].items()}
    assert classes == {"gpt2-fp32-eager": "GPT2LMHeadModel", "llama-fp32-sdpa": "LlamaForCausalLM"}
    for x in data["cases"].values():  # the inputs the estimator needs are stored with the measurement
        assert data["hf_configs"][x["family"]]["model_type"] == x["family"]
        assert x["parameters"] * 4 == x["params_bytes"]  # fp32


def test_model_states_equal_the_estimator_to_the_byte(data) -> None:
    s = ev.summarize(data)
    assert s["predicted_count"] == 2 and s["states_exact_count"] == 2
    for c in s["cases"].values():
        for t in ("params", "grads", "optimizer"):
            term = c["terms"][t]
            assert term["predicted_bytes"] == term["measured_bytes"] and term["ratio"] == 1.0, (c["label"], t)


def test_saved_bytes_are_what_is_live_after_forward(data) -> None:
    """Two independent counts: saved-tensor hooks in step 1, MemTracker's live activations in step 2
    (which also hold the loss scalar)."""
    for x in data["cases"].values():
        saved = sum(n for by_dtype in x["saved_bytes"].values() for n in by_dtype.values())
        live = x["phases"]["forward"]["end"]["activations_bytes"]
        inputs = data["batch"] * data["seq"] * 8  # the int64 token ids, made before the tracker started
        assert -inputs <= live - saved <= 64, (saved, live)
        before = x["before_step"]  # between steps: weights and state, no gradients (zero_grad(set_to_none))
        assert before["params_bytes"] == x["params_bytes"] and before["grads_bytes"] == 0
        assert before["optimizer_bytes"] == x["optimizer_state_bytes"]


def test_autocast_cast_weights_and_the_master_layout() -> None:
    """Autocast saves a bf16 copy of every matmul weight (not of the embedding or the norms); the master
    layout keeps bf16 weights and gradients, an fp32 master copy and fp32 moments (2 + 2 + 4 + 8 bytes)."""
    cfg = ev.PROFILES["test"]
    mixed = ev.measure_case(cfg, "cpu", "llama", "bf16-mixed", "sdpa", False)
    n = mixed["parameters"]
    h, v = cfg.hidden, cfg.vocab
    matmul = n - v * h - (2 * cfg.layers + 1) * h  # all but the input embedding and the RMSNorm weights
    assert mixed["saved_bytes"]["cast_weight"] == {"bfloat16": 2 * matmul}
    assert mixed["params_bytes"] == mixed["grads_bytes"] == 4 * n
    master = ev.measure_case(cfg, "cpu", "llama", "bf16-master", "sdpa", False)
    tensors = 2 + 9 * cfg.layers + 1  # embedding, lm_head, 9 per layer, final norm
    assert master["params_bytes"] == master["grads_bytes"] == 2 * n
    assert master["master_weights_bytes"] == 4 * n
    assert master["optimizer_state_bytes"] == 8 * n + 4 * tensors  # exp_avg, exp_avg_sq and a step per tensor
    assert "cast_weight" not in master["saved_bytes"]


def test_an_estimator_without_a_peak_model_is_labelled_so(data, monkeypatch) -> None:
    real = ev.estimator.estimate

    def sum_only(*args, **kwargs) -> dict:
        return {k: v for k, v in real(*args, **kwargs).items() if k not in ("peak_bytes", "peak_phase", "phases")}

    monkeypatch.setattr(ev.estimator, "estimate", sum_only)
    s = ev.summarize(data)
    assert s["rules"]["estimator_peak"]["label"] == "estimator (sum of terms: no peak model yet)"
    for c in s["cases"].values():
        assert c["rules"]["estimator_peak"]["predicted_bytes"] == c["rules"]["sum_of_terms"]["predicted_bytes"]
        assert not c["terms"]["step_temporaries"]["modelled"] and c["terms"]["step_temporaries"]["ratio"] is None
        assert not c["phase_ledger"]["optimizer"]["modelled"]


def test_the_peak_phase_is_the_largest_phase(data) -> None:
    s = ev.summarize(data)
    for key, c in s["cases"].items():
        peaks = {ph: data["cases"][key]["phases"][ph]["peak"]["total_bytes"] for ph in ev.PHASES}
        assert c["measured_peak_bytes"] == max(peaks.values()) == peaks[c["measured_peak_phase"]]
        assert c["rules"]["bytes_per_param"]["predicted_bytes"] == 16 * c["parameters"]
        assert c["rules"]["bytes_per_param"]["ratio"] == 16 * c["parameters"] / c["measured_peak_bytes"]


def _set_measured_to_prediction(x: dict, c: dict) -> None:
    """Make a case's measurement agree with the estimator: saved activations and the peak phase."""
    x["saved_bytes"] = {"activation": {"float32": c["terms"]["activations"]["predicted_bytes"]}}
    phase = c["measured_peak_phase"]
    x["phases"][phase]["peak"]["total_bytes"] = c["rules"]["estimator_peak"]["predicted_bytes"]
    for ph in ev.PHASES:
        if ph != phase:
            x["phases"][ph]["peak"]["total_bytes"] = min(x["phases"][ph]["peak"]["total_bytes"],
                                                         x["phases"][phase]["peak"]["total_bytes"])


def test_summarize_flags_a_case_outside_the_targets(data) -> None:
    key = "llama-fp32-sdpa"
    c = ev.summarize(data)["cases"][key]
    inside = copy.deepcopy(data)
    _set_measured_to_prediction(inside["cases"][key], c)
    ok = ev.summarize(inside)["cases"][key]
    assert ok["verdict"] == "inside" and ok["worst_term"] is None and ok["peak_ok"] and ok["activations_ok"]

    low = copy.deepcopy(inside)  # the measured peak 4 % above the prediction: predicted 3.8 % low, outside
    phase = ok["measured_peak_phase"]
    low["cases"][key]["phases"][phase]["peak"]["total_bytes"] = int(ok["measured_peak_bytes"] * 1.04)
    out = ev.summarize(low)["cases"][key]
    assert out["verdict"] == "outside" and not out["peak_ok"] and out["activations_ok"]

    acts = copy.deepcopy(inside)  # twice the saved activations predicted: activations miss most
    acts["cases"][key]["saved_bytes"]["activation"]["float32"] = int(
        c["terms"]["activations"]["predicted_bytes"] * 2)
    out = ev.summarize(acts)["cases"][key]
    assert out["verdict"] == "outside" and not out["activations_ok"]
    assert out["worst_term"] == "activations" and out["worst_term_label"] == ev.TERM_LABELS["activations"]


def test_a_family_the_estimator_cannot_read_is_reported_not_raised(data) -> None:
    odd = copy.deepcopy(data)
    odd["hf_configs"]["llama"]["model_type"] = "made-up-family"
    s = ev.summarize(odd)
    c = s["cases"]["llama-fp32-sdpa"]
    assert c["predicted"] is False and "made-up-family" in c["reason"] and "\n" not in c["reason"]
    assert c["rules"] == {} and c["verdict"] == "no prediction"
    assert s["unpredicted_count"] == 1 and s["unpredicted_reasons"][c["reason"]]["count"] == 1


def test_without_transformers_the_experiment_is_not_run(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    got = ev.run(ev.PROFILES["test"], "cpu")
    assert got["ran"] is False and "transformers" in got["reason"] and got["cases"] == {}
    s = ev.summarize(got)
    assert s["ran"] is False and s["case_count"] == 0


@pytest.fixture(scope="module")
def site(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("error_ledger")
    out = build_chapter_site(root, {NAME: data}, ("09-error-ledger.md",), stubs=STUBS)
    return out, ev.summarize(data)


def test_page_shows_every_case_term_by_term(site, data) -> None:
    out, s = site
    text = re.sub(r"\s+", " ", site_text(out, "09-error-ledger/index.html"))
    for c in s["cases"].values():
        assert f"{c['label']}: {c['verdict']}" in text
        assert grouped(c["parameters"]) in text and bytes_(c["measured_peak_bytes"]) in text
        for term in c["terms"].values():
            assert f"{term['label']} {bytes_(term['predicted_bytes'])} {bytes_(term['measured_bytes'])}" in text
        for rule in c["rules"].values():
            assert f"total: {rule['label']} {bytes_(rule['predicted_bytes'])}" in text
            assert ratio(rule["ratio"], 4) in text
    for rule in s["rules"].values():
        assert f"{rule['label']} {rule['cases']} {ratio(rule['min_ratio'])} {ratio(rule['mean_ratio'])}" in text
    assert f"batch {data['batch']}, sequence {data['seq']}" in text
    assert "<svg" in (out / "09-error-ledger" / "index.html").read_text(encoding="utf-8")


def test_page_says_when_the_experiment_did_not_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    got = ev.run(ev.PROFILES["test"], "cpu")
    out = build_chapter_site(tmp_path, {NAME: got}, ("09-error-ledger.md",), stubs=STUBS)
    text = re.sub(r"\s+", " ", site_text(out, "09-error-ledger/index.html"))
    assert "Not run on this host." in text and got["reason"] in text


def test_the_peak_model_on_the_test_profile(data) -> None:
    """The cases measured in this run (a 13-54 k-parameter model): activations inside issue 17's 5 %; the peak
    within 5 % either way. At this toy size the for-loop optimizer step's few-KiB temporaries (3x the largest
    tensor here, about 2x at the quick profile's size, where the targets are checked: the next test) and the
    buffers weigh more than the 3 % the target allows below."""
    s = ev.summarize(data)
    for c in s["cases"].values():
        assert c["activations_ok"], (c["label"], c["terms"]["activations"]["ratio"])
        assert abs(c["peak_error_ratio"]) <= 0.05, (c["label"], c["peak_error_ratio"])
        for t in ("params", "grads", "optimizer"):
            assert c["terms"][t]["ratio"] == 1.0


def test_the_committed_ledger_is_never_low() -> None:
    """This host's committed quick result through today's estimator: no case more than 3 % below its measured
    peak, activations within 5 % everywhere; a case outside the targets is above, on the safe side."""
    import json

    from conftest import REPO

    for path in sorted((REPO / "results").glob("*/estimator_validation.json")):
        s = ev.summarize(json.loads(path.read_text())["data"])
        if not s["ran"]:
            continue
        assert s["predicted_count"] == s["case_count"] > 0
        assert s["activations_ok_count"] == s["predicted_count"], path
        for c in s["cases"].values():
            assert c["peak_error_ratio"] >= -ev.TARGET_PEAK_BELOW, (path, c["label"], c["peak_error_ratio"])
        assert all(o["peak_ratio"] > 1 for o in s["outside"].values()), s["outside"]
