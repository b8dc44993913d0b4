"""optimizer_lifecycle: state contents and saved size, lazy state, grad=None against zeros."""
import json

import pytest

from experiments import optimizer_lifecycle as E
from experiments.lib.cli import to_json

TINY = E.Config(in_features=8, hidden=16, out_features=4, batch=4)


@pytest.fixture(scope="module")
def data():
    return E.run(TINY, "cpu")


def test_json_and_plot(data):
    json.loads(to_json(data))
    assert E.plot(data) is not None


def test_state_bytes_match_formula_and_checkpoint_restores(data):
    rows = {r["optimizer"]: r for r in data["state"]}
    assert {"sgd", "sgd-momentum", "adam", "adamw", "adam-amsgrad", "adagrad", "rmsprop"} <= set(rows)
    for r in rows.values():
        assert r["state_bytes"] == r["predicted_state_bytes"], r["optimizer"]  # exact
        assert r["resume_max_abs_diff"] == 0.0                                   # reload -> identical next step
        assert r["saved_state_dict_bytes"] > r["state_bytes"]                    # serialisation adds, never drops
        assert r["saved_model_and_state_dict_bytes"] == r["saved_model_bytes"] + r["saved_state_dict_bytes"]
        assert r["saved_model_and_state_dict_over_model_ratio"] == (
            r["saved_model_and_state_dict_bytes"] / r["saved_model_bytes"])
        assert r["saved_model_and_state_dict_over_model_ratio"] > 1.0
    assert data["resume_max_abs_diff_all_optimizers"] == max(r["resume_max_abs_diff"] for r in rows.values())
    n = data["model"]["numel"]
    assert rows["adam"]["state_bytes"] == 2 * 4 * n + 4 * len(data["model"]["shapes"])
    assert [k["key"] for k in rows["adam"]["state_keys"]] == ["step", "exp_avg", "exp_avg_sq"]
    assert rows["sgd"]["state_entries_after_step"] == 0
    assert rows["sgd-momentum"]["state_keys"][0]["key"] == "momentum_buffer"
    assert rows["adam"]["state_dict_aliases_live_state"] is True


def test_lazy_state(data):
    rows = {r["optimizer"]: r for r in data["state"]}
    for name in ("sgd-momentum", "adam", "adamw", "rmsprop"):
        assert rows[name]["state_entries_before_step"] == 0
        assert rows[name]["state_bytes_before_step"] == 0
    # Adagrad is the exception: its accumulator is created in __init__
    assert rows["adagrad"]["state_bytes_before_step"] == rows["adagrad"]["state_bytes"]


def test_grad_none_is_skipped_zeros_are_not(data):
    for r in data["grad_none"]:
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
