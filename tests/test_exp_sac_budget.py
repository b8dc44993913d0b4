"""sac_budget on its test profile: each budget's compiled graph keeps its promise and gives the eager gradients;
the graph walk counts saved bytes exactly; what summarize derives."""
import pytest
import torch

from experiments import sac_budget as sb
from experiments.lib.compile_budget import compile_under_budget, graph_saved_bytes
from conftest import NEEDS_CUDA, test_profile_data


@pytest.fixture(scope="module")
def data():
    return test_profile_data("sac_budget")


def test_budget_ends_and_gradients(data):
    b = data["budgets"]
    assert list(b) == ["budget_1.00", "budget_0.00"]
    # budget 0: only the compiled region's inputs (the token ids; parameters aside) are kept
    assert b["budget_0.00"]["saved_bytes"] <= 2 * 16 * 8
    assert b["budget_1.00"]["saved_bytes"] > 10 * b["budget_0.00"]["saved_bytes"]
    for row in b.values():
        assert row["max_abs_grad_diff_vs_eager"] < 1e-5
        assert row["compile_time_s"] > 0
    assert data["eager"]["saved_bytes"] > 0
    assert sb.summarize(data)["all_within_promise"] is True


@pytest.mark.parametrize("name", ["every_layer", "sac_save_matmuls"])
def test_hand_picked_policies_give_the_eager_gradients(name):
    cfg = sb.PROFILES["test"]
    idx = sb.tokens(cfg, "cpu")
    plain, wrapped = sb.build(cfg, "cpu"), sb.build(cfg, "cpu")
    wrapped.layer_wrapper = sb.hand_picked_wrapper(name)
    plain(idx, idx).backward()
    wrapped(idx, idx).backward()
    for a, b in zip(plain.parameters(), wrapped.parameters()):
        assert torch.equal(a.grad, b.grad)
    with pytest.raises(ValueError):
        sb.hand_picked_wrapper("nothing")


def test_graph_saved_bytes_exact():
    lin = torch.nn.Linear(8, 8, bias=False)
    x = torch.randn(4, 8)
    y = torch.relu(lin(x))       # mm saves x (the weight is a parameter); relu saves its output
    assert graph_saved_bytes(y.sum(), exclude=[lin]) == 4 * 8 * 4 + 4 * 8 * 4
    with pytest.raises(ValueError):
        compile_under_budget(lin, 1.5)


def test_summary_from_canned_measurements():
    t = {"median_ms": 10.0, "iqr_ms": 2.0, "runs": 3}
    data = {"eager": {"saved_bytes": 1000, "time": t},
            "hand_picked": {"every_layer": {"saved_bytes": 120, "compile_time_s": 1.0, "max_abs_grad_diff_vs_eager": 0.0,
                                            "time": {**t, "median_ms": 25.0}}},
            "budgets": {"budget_1.00": {"budget": 1.0, "saved_bytes": 900, "max_abs_grad_diff_vs_eager": 0.0,
                                        "time": {**t, "median_ms": 12.0}},
                        "budget_0.50": {"budget": 0.5, "saved_bytes": 400, "max_abs_grad_diff_vs_eager": 1e-8,
                                        "time": {**t, "median_ms": 15.0}},
                        "budget_0.00": {"budget": 0.0, "saved_bytes": 100, "max_abs_grad_diff_vs_eager": 0.0,
                                        "time": {**t, "median_ms": 20.0}}}}
    s = sb.summarize(data)
    half = s["budgets"]["budget_0.50"]
    assert half["promised_bytes"] == 500 and half["measured_over_promised_ratio"] == 0.8
    assert half["within_promise"] is True and half["time_ratio_vs_eager"] == 1.5
    assert s["default_saves_less_than_eager"] is True and s["max_grad_diff"] == 1e-8
    assert s["cuda"] is False
    every = s["hand_picked"]["every_layer"]
    assert every["nearest_budget_key"] == "budget_0.00" and every["saved_ratio_vs_nearest_budget"] == 1.2
    assert every["time_ratio_vs_eager"] == 2.5 and every["label"] == "every layer checkpointed (compiled)"
    data["budgets"]["budget_0.50"]["saved_bytes"] = 700
    assert sb.summarize(data)["all_within_promise"] is False


def test_cuda_peaks_in_the_summary():
    t = {"median_ms": 10.0, "iqr_ms": 2.0, "runs": 3}
    row = {"saved_bytes": 100, "max_abs_grad_diff_vs_eager": 0.0, "time": t, "cuda_max_allocated_bytes": 500}
    data = {"eager": {"saved_bytes": 200, "time": t, "cuda_max_allocated_bytes": 1000},
            "budgets": {"budget_1.00": {**row, "budget": 1.0}, "budget_0.00": {**row, "budget": 0.0}},
            "hand_picked": {"every_layer": {**row, "compile_time_s": 1.0, "cuda_max_allocated_bytes": 250}}}
    s = sb.summarize(data)
    assert s["cuda"] is True and s["budgets"]["budget_0.00"]["peak_ratio_vs_eager"] == 0.5
    assert s["hand_picked"]["every_layer"]["peak_ratio_vs_eager"] == 0.25


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=f"{NEEDS_CUDA}: the allocator's peak per budget")
def test_cuda_run_records_peaks():
    import dataclasses
    import json

    from experiments.lib.cli import to_json

    cfg = dataclasses.replace(sb.PROFILES["test"], hand_picked=("every_layer",))
    d = json.loads(to_json(sb.run(cfg, "cuda")))
    s = sb.summarize(d)
    assert s["cuda"] is True and s["all_within_promise"] is True
    assert d["budgets"]["budget_0.00"]["cuda_max_allocated_bytes"] <= d["budgets"]["budget_1.00"]["cuda_max_allocated_bytes"]
