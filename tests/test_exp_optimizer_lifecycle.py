"""optimizer_lifecycle: state contents and saved size, lazy state, grad=None against zeros."""

import pytest

from experiments import optimizer_lifecycle as E
from conftest import test_profile_data

TINY = E.PROFILES["test"]


@pytest.fixture(scope="module")
def data():
    return test_profile_data("optimizer_lifecycle")


@pytest.fixture(scope="module")
def summary(data):
    return E.summarize(data)


def test_state_bytes_match_formula_and_checkpoint_restores(data, summary):
    rows, derived = data["state"], summary["state"]
    assert list(rows)[:7] == ["sgd", "sgd-momentum", "adam", "adamw", "adam-amsgrad", "adagrad", "rmsprop"]
    assert list(derived) == list(rows)
    for name, r in rows.items():
        s = derived[name]
        assert r["state_bytes"] == r["predicted_state_bytes"], name  # exact
        assert r["resume_max_abs_diff"] == 0.0                         # reload -> identical next step
        assert r["saved_state_dict_bytes"] > r["state_bytes"]          # serialisation adds, never drops
        assert s["saved_overhead_bytes"] > 0
        assert s["saved_model_and_state_dict_bytes"] == r["saved_model_bytes"] + r["saved_state_dict_bytes"]
        assert s["saved_model_and_state_dict_over_model_ratio"] > 1.0
    assert summary["resume_max_abs_diff_all_optimizers"] == 0.0
    n = data["model"]["numel"]
    assert rows["adam"]["state_bytes"] == 2 * 4 * n + 4 * len(data["model"]["shapes"])
    assert list(rows["adam"]["state_keys"]) == ["step", "exp_avg", "exp_avg_sq"]
    assert rows["adam"]["state_keys"]["exp_avg"] == {"dtype": "float32", "shape": "like param", "device": "cpu"}
    assert rows["sgd"]["state_entries_after_step"] == 0 and rows["sgd"]["state_keys"] == {}
    # SGD holds nothing: no ratio to the state (null, not a division by zero)
    assert derived["sgd"]["saved_over_memory_ratio"] is None and derived["sgd"]["state_ratio"] is None
    assert list(rows["sgd-momentum"]["state_keys"]) == ["momentum_buffer"]
    assert rows["adam"]["state_dict_aliases_live_state"] is True


def test_resume_difference_is_the_worst_over_optimizers():
    state = {"a": {"resume_max_abs_diff": 0.0, "saved_state_dict_bytes": 10, "state_bytes": 0,
                   "predicted_state_bytes": 0, "saved_model_bytes": 5},
             "b": {"resume_max_abs_diff": 2e-7, "saved_state_dict_bytes": 30, "state_bytes": 20,
                   "predicted_state_bytes": 20, "saved_model_bytes": 5}}
    s = E.summarize({"state": state})
    assert s["resume_max_abs_diff_all_optimizers"] == 2e-7
    assert s["state"]["b"] == {"state_ratio": 1.0, "saved_overhead_bytes": 10, "saved_over_memory_ratio": 1.5,
                               "saved_model_and_state_dict_bytes": 35,
                               "saved_model_and_state_dict_over_model_ratio": 7.0}


def test_lazy_state(data):
    rows = data["state"]
    for name in ("sgd-momentum", "adam", "adamw", "rmsprop"):
        assert rows[name]["state_entries_before_step"] == 0
        assert rows[name]["state_bytes_before_step"] == 0
    # Adagrad is the exception: its accumulator is created in __init__
    assert rows["adagrad"]["state_bytes_before_step"] == rows["adagrad"]["state_bytes"]


def test_grad_none_is_skipped_zeros_are_not(data):
    assert list(data["grad_none"]) == list(E.SEMANTICS_OPTIMIZERS)
    for r in data["grad_none"].values():
        first = r["first_step_with_none"]
        assert first["skipped_have_state"] is False
        assert first["skipped_max_abs_change"] == 0.0     # not even weight decay touches it
        assert first["state_entries"] == first["params"] - 2
        second = r["second_step"]
        assert second["none"]["max_abs_update"] == 0.0
        assert second["zeros"]["max_abs_update"] > 0.0     # momentum / moments / decay still move it
        if second["none"]["step_count"] is not None:       # Adam family: the skipped parameter's clock stops
            assert second["none"]["step_count"] == 1.0
            assert second["zeros"]["step_count"] == 2.0
            assert second["none"]["trained_layer_step_count"] == 2.0
    assert data["grad_none"]["adamw"]["second_step"]["none"]["step_count"] == 1.0
    assert data["grad_none"]["sgd-momentum"]["second_step"]["none"]["step_count"] is None
