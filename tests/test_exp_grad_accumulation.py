"""grad_accumulation: K micro-batches against one batch, what breaks it, the AMP loop, memory against micro-batch."""

import pytest
import torch

from experiments import grad_accumulation as E
from conftest import test_profile_data

TINY = E.PROFILES["test"]


@pytest.fixture(scope="module")
def data():
    return test_profile_data("grad_accumulation")


@pytest.fixture(scope="module")
def summary(data):
    return E.summarize(data)


def test_accumulation_matches_one_batch(data, summary):
    assert [(r["dtype"], r["k"]) for r in summary["correctness"]] == [(r["dtype"], r["k"]) for r in data["correctness"]]
    for r, s in zip(data["correctness"], summary["correctness"]):
        # Tolerances relative to the largest gradient entry: fp32 1e-5 (summation order only);
        # bf16 3e-2 (8-bit mantissa: each of the K additions into a bf16 .grad rounds at ~2**-9 relative)
        tol = 1e-5 if r["dtype"] == "fp32" else 3e-2
        assert s["rel_diff"] < tol, (r, s)
        if r["k"] == 1:
            assert r["max_abs_diff"] == 0.0
    for d in ("fp32", "bf16"):
        assert summary["max_rel_diff"][d] == max(s["rel_diff"] for s in summary["correctness"] if s["dtype"] == d)
    assert summary["max_rel_diff"]["bf16"] > summary["max_rel_diff"]["fp32"]


def test_without_division_the_gradient_is_k_times(summary):
    for r in summary["correctness"]:
        tol = 1e-5 if r["dtype"] == "fp32" else 1e-2
        assert r["no_division_norm_ratio"] == pytest.approx(r["k"], rel=tol)
        if r["k"] > 1:
            assert r["no_division_rel_diff"] > 0.5 * (r["k"] - 1)


def test_what_breaks_equivalence(data, summary):
    b, bs = data["breakers"], summary["breakers"]
    assert bs["batchnorm"]["rel_diff"] > 1e-3           # per-micro-batch statistics: a different gradient
    assert b["batchnorm"]["num_batches_tracked"] == b["k"]
    assert bs["batchnorm_eval"]["rel_diff"] < 1e-5      # running statistics: exact again
    assert bs["dropout"]["other_seed_rel_diff"] > 1e-3  # the masks matter ...
    # whether the K small masks were the big one is the summary's verdict, at its stated tolerance
    assert bs["dropout"]["match_tolerance"] == E.MATCH_TOLERANCE
    assert bs["dropout"]["masks_match"] is (bs["dropout"]["rel_diff"] < E.MATCH_TOLERANCE)
    assert bs["unequal_mean"]["rel_diff_mean"] > 1e-2   # mean per unequal micro-batch: wrong weights
    assert bs["unequal_mean"]["rel_diff_sum_over_total"] < 1e-5  # sum / total count: exact
    c, cs = b["clipping"], bs["clipping"]
    assert c["clipped_once_norm"] == pytest.approx(c["max_norm"], rel=1e-4)
    # clipping the partial sums ends at the limit but points elsewhere
    assert c["running"]["norm"] == pytest.approx(c["max_norm"], rel=1e-4)
    assert c["running"]["cosine"] < 0.999 and cs["running"]["rel_diff"] > 1e-2
    assert cs["micro_contribution_norm_max"] == max(c["micro_contribution_norms"])
    assert cs["micro_contributions_all_below_max_norm"] is (cs["micro_contribution_norm_max"] < c["max_norm"])
    # each micro-batch's contribution is below max_norm, so clipping them one by one clips nothing
    if cs["micro_contributions_all_below_max_norm"]:
        assert c["each"]["norm"] == pytest.approx(c["batch_grad_norm"], rel=1e-4)
    assert cs["each"]["rel_diff"] > 0.1


def test_dropout_verdict_follows_the_tolerance(data):
    """The verdict is derived at build time: the same measurement on either side of the tolerance."""
    b = data["breakers"]
    scale = b["dropout"]["max_abs_grad"]
    for diff, match in ((E.MATCH_TOLERANCE * scale / 2, True), (E.MATCH_TOLERANCE * scale * 2, False)):
        bs = E.summarize_breakers({**b, "dropout": {**b["dropout"], "max_abs_diff": diff}})
        assert bs["dropout"]["masks_match"] is match


def test_amp_loop(data, summary):
    assert list(data["amp"]) == ["bf16", "fp16"]  # on CPU: bf16 without a scaler first, then fp16 with one
    assert summary["amp_scaler_variant"] == "fp16"
    for name, r in data["amp"].items():
        s = summary["amp"][name]
        assert r["optimizer_steps"] == r["cycles"]      # one step per cycle, not per micro-batch
        # the norm before clipping is the true (unscaled) norm: within 2 % of fp32 under bf16/fp16 autocast
        assert r["pre_clip_norm"] == pytest.approx(r["fp32_batch_norm"], rel=0.02)
        assert r["clipped_norm"] == pytest.approx(r["max_norm"], rel=1e-3)
        assert s["clipped_rel_diff_vs_fp32"] < 0.02
        if r["scaler"]:
            # clipping before unscale_ clips the scaled gradient: the update shrinks by the scale factor
            assert s["clip_before_unscale_shrink"] == pytest.approx(r["scale_final"], rel=0.01)
        else:
            assert s["clip_before_unscale_shrink"] is None and r["scale_final"] is None


def test_memory_falls_with_micro_batch(data, summary):
    rows = data["memory"]
    big, small = rows[0], rows[-1]
    assert big["micro_batch"] > small["micro_batch"]
    assert small["peak_total_bytes"] < big["peak_total_bytes"]
    # at the largest micro-batch the peak is at the end of the forward: the saved activations, as predicted,
    # within 10 % (the loss and a few scalars are not in the prediction)
    big_s = summary["memory"][0]
    assert big_s["predicted_saved_activations_bytes"] == 4 * TINY.mem_micro[0] * (
        2 * TINY.mem_depth * TINY.mem_width + TINY.classes)
    assert big_s["activations_over_predicted_ratio"] == pytest.approx(1.0, rel=0.1)
    for r in rows:
        assert r["step_time_ms"] > 0


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
    assert list(rows) == ["fp16", "bf16"] and rows["fp16"]["scaler"]
    for r in rows.values():
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
