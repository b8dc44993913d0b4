"""The parallelism experiment on its ``test`` profile: two real gloo ranks on the CPU under tensor,
sequence and pipeline parallelism. Per-rank bytes against a hand count, the pipeline schedules'
micro-batches in flight against their rules, and the estimator's answer (or the field it lacks)."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import test_profile_data
from experiments import parallelism as par
from experiments.lib import estimator

NAME = "parallelism"
CFG = par.PROFILES["test"]


@pytest.fixture(scope="module")
def data() -> dict:
    return test_profile_data(NAME)


@pytest.fixture(scope="module")
def summary(data: dict) -> dict:
    return par.summarize(data)


def ranks(data: dict, case: str) -> list[dict]:
    return data["cases"][case]["ranks"]


def tp_rank_params_by_hand(h: int, layers: int, vocab: int, positions: int, t: int) -> int:
    """Elements one of t tensor-parallel ranks holds: column-sharded Q, K, V and MLP-in (weights and
    biases), row-sharded attention and MLP-out weights (their biases replicated), the vocabulary-sharded
    embedding and head; the norms and the position table replicated."""
    f = 4 * h
    sharded = vocab * h + vocab * h + layers * (3 * (h * h + h) + h * h + (h * f + f) + f * h)
    replicated = positions * h + layers * (2 * 2 * h + h + h) + 2 * h
    assert sharded % t == 0
    return sharded // t + replicated


def test_the_model_is_the_shape_the_estimator_reads(data: dict) -> None:
    shape = par.model_shape(CFG)
    assert estimator.parameter_count(shape) == sum(estimator.formulas.numel(s) for s in data["tensor_shapes"])
    assert estimator.ModelShape(**data["shape"]) == shape
    single = ranks(data, "single")[0]
    assert single["params_bytes"] == 4 * estimator.parameter_count(shape) == single["grads_bytes"]


def test_tp_rank_holds_the_hand_counted_shards(data: dict) -> None:
    elems = tp_rank_params_by_hand(CFG.hidden, CFG.layers, CFG.vocab, CFG.seq, 2)
    n_tensors = len(data["tensor_shapes"])
    for case in ("tp", "tp_sp"):
        for r in ranks(data, case):
            assert r["ok"], r
            assert r["params_bytes"] == 4 * elems
            # AdamW: two moments the size of each local shard, and a 4-byte step per tensor
            assert r["optimizer_bytes"] == 2 * r["params_bytes"] + 4 * n_tensors
            extra = sum(v["grad_bytes"] - v["param_bytes"] for v in r["grads_unlike_params"].values())
            assert r["grads_bytes"] == r["params_bytes"] + extra


def test_tp_computes_the_same_model_on_every_rank(data: dict) -> None:
    loss = ranks(data, "single")[0]["loss"]
    for case in ("tp", "tp_sp"):
        assert [r["loss"] == pytest.approx(loss, rel=1e-5) for r in ranks(data, case)] == [True, True]


def test_sequence_parallel_shards_only_activations(data: dict, summary: dict) -> None:
    tp, sp = ranks(data, "tp"), ranks(data, "tp_sp")
    for a, b in zip(tp, sp):
        assert a["params_bytes"] == b["params_bytes"] and a["optimizer_bytes"] == b["optimizer_bytes"]
        assert b["saved_peak_bytes"] < a["saved_peak_bytes"]
    sp_rule = summary["sequence_parallel"]
    assert sp_rule["measured_saving_bytes"] == tp[0]["saved_peak_bytes"] - sp[0]["saved_peak_bytes"]
    assert 0 < sp_rule["measured_saving_bytes"] < sp_rule["rule_saving_bytes"]


def test_pipeline_stages_split_the_model_without_overlap(data: dict) -> None:
    whole = ranks(data, "single")[0]["params_bytes"]
    for case in ("pp_gpipe", "pp_1f1b", "pp_interleaved"):
        rs = ranks(data, case)
        assert sum(r["params_bytes"] for r in rs) == whole
        assert [r["loss"] is None for r in rs] == [True, False]   # the loss lives on the last stage
        assert rs[1]["loss"] == pytest.approx(ranks(data, "single")[0]["loss"], rel=1e-5)
    assert [r["stages"] for r in ranks(data, "pp_interleaved")] == [[0, 2], [1, 3]]


def test_micro_batches_in_flight_follow_the_schedules(summary: dict) -> None:
    m = CFG.microbatches
    assert m == 4   # more micro-batches than stages: the schedules differ
    flight = {case: [f["measured"] for f in summary["cases"][case]["in_flight"]]
              for case in ("pp_gpipe", "pp_1f1b", "pp_interleaved")}
    assert flight["pp_gpipe"] == [pytest.approx(m, rel=0.01)] * 2
    assert flight["pp_1f1b"] == [pytest.approx(2, rel=0.01), pytest.approx(1, rel=0.01)]
    assert flight["pp_interleaved"][0] == pytest.approx(2.5, rel=0.05)   # p(1 + (p-1)/(pv)), p = v = 2
    for case in flight:
        rule = summary["cases"][case]["in_flight"][0]
        assert rule["measured_over_rule_ratio"] == pytest.approx(1, rel=0.05)


def test_without_the_setup_fields_each_case_says_which_is_missing(data: dict, monkeypatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class OldSetup:    # the estimator's Setup before tensor and pipeline parallelism
        optimizer: str = "adamw"
        precision: str = "fp32"
        batch: int = 1
        seq: int = 1
        checkpointing: str = "none"
        zero: int = 0
        gpus: int = 1
        attention: str = "sdpa"
        device: str = "cpu"
        optimizer_impl: str = "default"

    asked = []

    def old_estimate(setup, shape):
        asked.append(setup)
        return {"per_device_bytes": {"params": 1, "grads": 1, "optimizer": 1, "activations": 1, "total": 4},
                "peak_bytes": 4}

    monkeypatch.setattr(par.estimator, "Setup", OldSetup)
    monkeypatch.setattr(par.estimator, "estimate", old_estimate)
    s = par.summarize(data)
    assert len(asked) == 1 and s["cases"]["single"]["prediction"]["available"]   # one device needs no new field
    reasons = {k: c["prediction"]["reason"] for k, c in s["cases"].items() if k != "single" and c["ran"]}
    assert s["cases"]["fsdp_tp"]["error"] == "not run here: not in this profile"   # the test profile has 2 ranks
    assert reasons == {"tp": "no prediction: the estimator lacks tp", "tp_sp": "no prediction: the estimator lacks tp",
                       "pp_gpipe": "no prediction: the estimator lacks pp",
                       "pp_1f1b": "no prediction: the estimator lacks pp",
                       "pp_interleaved": "no prediction: the estimator lacks pp"}


def test_with_the_setup_fields_the_prediction_and_ratios_appear(data: dict, monkeypatch) -> None:
    seen = []

    @dataclasses.dataclass(frozen=True)
    class NewSetup:
        optimizer: str = "adamw"
        precision: str = "fp32"
        batch: int = 1
        seq: int = 1
        zero: int = 0
        gpus: int = 1
        attention: str = "sdpa"
        device: str = "cpu"
        optimizer_impl: str = "default"
        tp: int = 1
        sequence_parallel: bool = False
        pp: int = 1
        microbatches: int = 1
        schedule: str = "1f1b"
        virtual_stages: int = 1

    def fake_estimate(setup, shape):
        seen.append(setup)
        return {"per_device_bytes": {"params": 1000, "grads": 1000, "optimizer": 2000, "activations": 4000,
                                     "total": 8000}, "peak_bytes": 10000}

    monkeypatch.setattr(par.estimator, "Setup", NewSetup)
    monkeypatch.setattr(par.estimator, "estimate", fake_estimate)
    s = par.summarize(data)
    tp = s["cases"]["tp"]
    assert tp["prediction"]["available"] and tp["prediction"]["state_bytes"] == 4000
    assert tp["prediction"]["params_measured_over_predicted_ratio"] == tp["max"]["params_bytes"] / 1000
    assert tp["prediction"]["peak_measured_over_predicted_ratio"] == tp["max"]["peak_bytes"] / 10000
    by_case = {(x.tp, x.sequence_parallel, x.pp, x.schedule, x.virtual_stages, x.microbatches, x.batch) for x in seen}
    b = CFG.batch
    assert by_case == {(1, False, 1, "1f1b", 1, 1, b), (2, False, 1, "1f1b", 1, 1, b), (2, True, 1, "1f1b", 1, 1, b),
                       (1, False, 2, "gpipe", 1, CFG.microbatches, b // CFG.microbatches),
                       (1, False, 2, "1f1b", 1, CFG.microbatches, b // CFG.microbatches),
                       (1, False, 2, "interleaved", 2, CFG.microbatches, b // CFG.microbatches)}


def test_a_case_an_api_refuses_is_a_finding_with_its_error(data: dict) -> None:
    broken = {**data, "cases": {**data["cases"], "tp": {**data["cases"]["tp"], "ranks": [
        {"ok": False, "rank": 0, "error": "NotImplementedError: an op DTensor lacks", "case_s": 0.1},
        {"ok": False, "rank": 1, "error": "NotImplementedError: an op DTensor lacks", "case_s": 0.1}]}}}
    s = par.summarize(broken)
    assert s["findings"]["tp"] == "NotImplementedError: an op DTensor lacks"
    assert s["cases"]["tp"]["ok"] is False and s["cases"]["tp"]["ranks"] == []


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"Config\.cases: unknown case 'zz'"):
        par.check(dataclasses.replace(CFG, cases=("zz",)))
    with pytest.raises(ValueError, match=r"Config\.microbatches \(3\) must divide Config\.batch \(4\)"):
        par.check(dataclasses.replace(CFG, microbatches=3))


def test_live_saved_counter_follows_micro_batches_in_flight() -> None:
    """Three forwards kept, then their backwards: the total counts every saved storage once, the peak
    only what was alive together, and the parameters are left out."""
    import torch

    from experiments.lib.live_saved import LiveSavedCounter

    layer = torch.nn.Linear(16, 16)
    xs = [torch.randn(4, 16) for _ in range(3)]
    per = 2 * 4 * 16 * 4   # the input (saved by the matmul) and the ReLU's output, fp32
    with LiveSavedCounter(exclude=list(layer.parameters())) as c:
        losses = [torch.relu(layer(x)).sum() for x in xs]
        assert c.live_bytes == 3 * per
        losses[0].backward()
        assert c.live_bytes == 2 * per
        one_at_a_time = torch.relu(layer(xs[0])).sum()
        one_at_a_time.backward()
        for loss in losses[1:]:
            loss.backward()
    # the fourth forward saves anew what the first one released: counted in the total, not above the peak
    assert (c.total_bytes, c.peak_live_bytes, c.live_bytes) == (4 * per, 3 * per, 0)


def test_the_foreach_adamw_probe_is_recorded_for_tensor_parallel(data: dict, summary: dict) -> None:
    probe = summary["cases"]["tp"]["foreach_adamw"]
    assert probe["probed"] is True
    errors = {r["foreach_adamw_error"] for r in ranks(data, "tp")}
    assert errors == {probe["error"]}                      # both ranks agree
    assert probe["error"] is None or "DTensor" in probe["error"]   # a plain tensor beside DTensors, if refused
    assert "foreach_adamw_error" not in ranks(data, "pp_1f1b")[0]
