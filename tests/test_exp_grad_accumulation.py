"""grad_accumulation: K micro-batches against one batch, what breaks it, the AMP loop, memory against micro-batch."""
import json

import pytest
import torch

from experiments import grad_accumulation as E
from experiments.lib.cli import to_json

TINY = E.Config(batch=32, features=16, hidden=32, ks=(1, 2, 4, 8), unequal_sizes=(20, 8, 3, 1), amp_cycles=2,
                mem_batch=128, mem_width=64, mem_depth=2, mem_micro=(128, 32), min_run_time_s=0.01)


@pytest.fixture(scope="module")
def data():
    return E.run(TINY, "cpu")


def test_json_and_plot(data):
    json.loads(to_json(data))
    assert E.plot(data) is not None


def test_accumulation_matches_one_batch(data):
    for r in data["correctness"]:
        # Tolerances relative to the largest gradient entry: fp32 1e-5 (summation order only);
        # bf16 3e-2 (8-bit mantissa: each of the K additions into a bf16 .grad rounds at ~2**-9 relative)
        tol = 1e-5 if r["dtype"] == "fp32" else 3e-2
        assert r["rel_diff"] < tol, r
        if r["k"] == 1:
            assert r["max_abs_diff"] == 0.0


def test_without_division_the_gradient_is_k_times(data):
    for r in data["correctness"]:
        tol = 1e-5 if r["dtype"] == "fp32" else 1e-2
        assert r["no_division_norm_ratio"] == pytest.approx(r["k"], rel=tol)
        if r["k"] > 1:
            assert r["no_division_rel_diff"] > 0.5 * (r["k"] - 1)


def test_what_breaks_equivalence(data):
    b = data["breakers"]
    assert b["batchnorm"]["rel_diff"] > 1e-3            # per-micro-batch statistics: a different gradient
    assert b["batchnorm"]["num_batches_tracked"] == b["k"]
    assert b["batchnorm_eval"]["rel_diff"] < 1e-5       # running statistics: exact again
    assert b["dropout"]["other_seed_rel_diff"] > 1e-3   # the masks matter ...
    # whether the K small masks were the big one is the experiment's verdict, at its recorded tolerance
    assert b["dropout"]["match_tolerance"] == TINY.match_tolerance
    assert b["dropout"]["masks_match"] is (b["dropout"]["rel_diff"] < b["dropout"]["match_tolerance"])
    assert b["unequal_mean"]["rel_diff_mean"] > 1e-2    # mean per unequal micro-batch: wrong weights
    assert b["unequal_mean"]["rel_diff_sum_over_total"] < 1e-5  # sum / total count: exact
    c = b["clipping"]
    assert c["clipped_once_norm"] == pytest.approx(c["max_norm"], rel=1e-4)
    # clipping the partial sums ends at the limit but points elsewhere
    assert c["running"]["norm"] == pytest.approx(c["max_norm"], rel=1e-4)
    assert c["running"]["cosine"] < 0.999 and c["running"]["rel_diff"] > 1e-2
    assert c["micro_contribution_norm_max"] == max(c["micro_contribution_norms"])
    assert c["micro_contributions_all_below_max_norm"] is (c["micro_contribution_norm_max"] < c["max_norm"])
    # each micro-batch's contribution is below max_norm, so clipping them one by one clips nothing
    if c["micro_contributions_all_below_max_norm"]:
        assert c["each"]["norm"] == pytest.approx(c["batch_grad_norm"], rel=1e-4)
    assert c["each"]["rel_diff"] > 0.1


def test_amp_loop(data):
    for r in data["amp"]:
        assert r["optimizer_steps"] == r["cycles"]      # one step per cycle, not per micro-batch
        # the norm before clipping is the true (unscaled) norm: within 2 % of fp32 under bf16/fp16 autocast
        assert r["pre_clip_norm"] == pytest.approx(r["fp32_batch_norm"], rel=0.02)
        assert r["clipped_norm"] == pytest.approx(r["max_norm"], rel=1e-3)
        assert r["clipped_rel_diff_vs_fp32"] < 0.02
        if r["scaler"]:
            # clipping before unscale_ clips the scaled gradient: the update shrinks by the scale factor
            assert r["clip_before_unscale_shrink"] == pytest.approx(r["scale_final"], rel=0.01)


def test_memory_falls_with_micro_batch(data):
    rows = data["memory"]
    big, small = rows[0], rows[-1]
    assert big["micro_batch"] > small["micro_batch"]
    assert small["peak_total_bytes"] < big["peak_total_bytes"]
    # at the largest micro-batch the peak is at the end of the forward: the saved activations, as predicted,
    # within 10 % (the loss and a few scalars are not in the prediction)
    assert big["peak_activations_bytes"] == pytest.approx(big["predicted_saved_activations_bytes"], rel=0.1)
    for r in rows:
        assert r["step_time_ms"] > 0
        assert r["activations_over_predicted_ratio"] == (r["peak_activations_bytes"]
                                                          / r["predicted_saved_activations_bytes"])
        assert r["step_time_half_iqr_ms"] == r["step_time_iqr_ms"] / 2
    assert big["activations_over_predicted_ratio"] == pytest.approx(1.0, rel=0.1)


def test_canonical_loop_steps_like_one_batch():
    """Two micro-batches through accumulation_step move a real optimizer exactly as one batch does."""
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1] * 4)
    weights = []
    for sizes in ([8], [4, 4]):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        E.accumulation_step(model, opt, E.split(x, y, sizes), torch.nn.functional.cross_entropy)
        assert all(p.grad is None for p in model.parameters())  # zero_grad(set_to_none=True) after the step
        weights.append(model.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fp16 + GradScaler path)")
def test_amp_loop_cuda():
    rows = E.amp_checks(TINY, "cuda")
    assert any(r["scaler"] and r["amp_dtype"] == "fp16" for r in rows)
    for r in rows:
        assert r["optimizer_steps"] == r["cycles"]


def test_cheatsheet_loop_is_the_experiments_loop():
    """Every statement of the cheat sheet's loop occurs, in order, in amp_accumulation_step."""
    import inspect
    import re
    from pathlib import Path

    sheet = (Path(__file__).resolve().parents[1] / "docs" / "_cheatsheet" / "02-optimizer-semantics.md").read_text()
    block = re.search(r"```python\n(.*?)```", sheet, re.S).group(1)
    statements = [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip()]
    source = [ln.strip() for ln in inspect.getsource(E.amp_accumulation_step).splitlines()]
    at = 0
    for st in statements:
        hits = [i for i in range(at, len(source)) if st in source[i]]
        assert hits, f"cheat-sheet line {st!r} is not in amp_accumulation_step (after line {at})"
        at = hits[0] + 1
