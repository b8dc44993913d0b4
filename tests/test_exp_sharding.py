"""The sharding experiment at world size 2 on CPU (gloo), on a model smaller than the quick profile."""
from __future__ import annotations

import json

import pytest

from experiments import sharding
from experiments.lib import estimator
from experiments.lib.cli import to_json

TINY = sharding.Config(width=32, inputs=8, outputs=3, batch=4, world_sizes=(2,))


@pytest.fixture(scope="module")
def data() -> dict:
    return sharding.run(TINY, "cpu")


def rows(data: dict) -> dict:
    return {r["mode"]: r for r in data["runs"] if r["world_size"] == 2}


def test_json_and_shape(data: dict) -> None:
    assert json.loads(to_json(data)) == data
    assert data["world_sizes"] == [2] and data["backend"] == "gloo" == data["summary_backend"]
    assert set(rows(data)) == {"ddp", "zero1", "fsdp2_keep", "fsdp2_reshard"}
    n = data["parameters"]
    assert n == sum(estimator.formulas.numel(s) for s in data["tensor_shapes"])
    # the two ranks train the same model on different data: their losses differ
    assert rows(data)["ddp"]["ranks"][0]["loss"] != rows(data)["ddp"]["ranks"][1]["loss"]


def test_ddp_replicates_everything_exactly(data: dict) -> None:
    r = rows(data)["ddp"]
    for rank in r["ranks"]:
        assert rank["params_bytes"] == r["predicted_per_rank"]["params_bytes"] == data["param_bytes"]
        assert rank["grads_bytes"] == data["param_bytes"]
        assert rank["optimizer_bytes"] == r["predicted_per_rank"]["optimizer_bytes"]  # 8 B/param + 4 B/step


def test_zero1_shards_whole_tensors_unevenly(data: dict) -> None:
    r = rows(data)["zero1"]
    full_opt = estimator.optimizer_bytes("adamw", data["tensor_shapes"], 4)
    opt = [rank["optimizer_bytes"] for rank in r["ranks"]]
    assert sum(opt) == full_opt                             # every state tensor lives on exactly one rank
    assert sum(rank["owned_params"] for rank in r["ranks"]) == data["parameters"]
    assert max(opt) > r["predicted_per_rank"]["optimizer_bytes"] > min(opt)   # whole tensors: uneven
    assert r["optimizer_rank_spread_ratio"] > 1.1
    for rank in r["ranks"]:
        assert rank["params_bytes"] == rank["grads_bytes"] == data["param_bytes"]  # not sharded at stage 1


def test_fsdp2_shards_params_grads_and_state(data: dict) -> None:
    n_tensors = len(data["tensor_shapes"])
    full_opt = estimator.optimizer_bytes("adamw", data["tensor_shapes"], 4)
    for mode in ("fsdp2_keep", "fsdp2_reshard"):
        r = rows(data)[mode]
        pred = estimator.model_state_bytes(data["tensor_shapes"], "adamw", "fp32", 3, 2)[1]
        for rank in r["ranks"]:
            # dim-0 padding: at least the rule's half, at most one extra row per tensor
            assert pred["params"] <= rank["params_bytes"] <= pred["params"] + 4 * sum(
                estimator.formulas.numel(s[1:]) for s in data["tensor_shapes"])
            assert rank["grads_bytes"] == rank["params_bytes"]
        # the moments are split exactly; each rank keeps its own step tensor per parameter
        assert sum(rank["optimizer_bytes"] for rank in r["ranks"]) == full_opt + 4 * n_tensors
    keep, reshard = rows(data)["fsdp2_keep"], rows(data)["fsdp2_reshard"]
    for k, s in zip(keep["ranks"], reshard["ranks"]):
        assert k["params_after_forward_bytes"] >= data["param_bytes"]       # whole weights kept until backward
        assert s["params_after_forward_bytes"] == s["params_bytes"]         # resharded right after forward
    assert max(k["peak"]["total_bytes"] for k in keep["ranks"]) > max(s["peak"]["total_bytes"] for s in reshard["ranks"])


def test_world_sizes_beyond_the_host_are_skipped() -> None:
    plan, skipped = sharding.possible_world_sizes(sharding.Config(world_sizes=(1, 2, 4096)), "cpu")
    assert plan == [(1, "cpu"), (2, "cpu")] and skipped == [4096]
