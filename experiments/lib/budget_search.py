"""The best sparse update under a memory budget: exhaustive search and an exact dynamic program.

The problem (Lin et al. 2022, section 2.2, "sparse update"): layers 0..n-1
from input to output; for each, options ``(cost_bytes, benefit)``, option 0
being "not updated" ``(0, 0)``. Backward must also run through every layer
from the output down to the earliest updated one, and running backward
through layer ``i`` keeps ``path_cost[i]`` bytes (the activation masks its
nonlinearity needs). So a configuration costs

    sum_i cost[i][choice_i] + sum_{i >= e} path_cost[i],   e = earliest updated layer,

and is worth ``sum_i benefit[i][choice_i]`` (the additive contribution
model of the paper). Maximise the worth within a budget.

``exhaustive`` enumerates every configuration (``prod(len(options))``).
``dynamic_program`` walks the layers from input to output with one flag,
"has a layer at or before this one been updated", over a budget grid in
units of ``quantum`` bytes. With ``quantum`` dividing every cost (the
default: their greatest common divisor) it is exact; with a coarser one,
costs are rounded up, so its answer always fits the budget.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

Option = tuple[int, float]          # (cost in bytes, benefit)


@dataclass(frozen=True)
class Solution:
    choice: tuple[int, ...]          # option index per layer
    cost: int                        # bytes, exact
    benefit: float


def config_cost(options: Sequence[Sequence[Option]], path_cost: Sequence[int], choice: Sequence[int]) -> int:
    updated = [i for i, c in enumerate(choice) if c != 0]
    if not updated:
        return 0
    return int(sum(options[i][c][0] for i, c in enumerate(choice)) + sum(path_cost[updated[0]:]))


def config_benefit(options: Sequence[Sequence[Option]], choice: Sequence[int]) -> float:
    return float(sum(options[i][c][1] for i, c in enumerate(choice)))


def _check(options: Sequence[Sequence[Option]], path_cost: Sequence[int]) -> None:
    if len(options) != len(path_cost):
        raise ValueError(f"{len(options)} layers of options but {len(path_cost)} path costs")
    for i, opts in enumerate(options):
        if not opts or tuple(opts[0]) != (0, 0) and tuple(opts[0]) != (0, 0.0):
            raise ValueError(f"layer {i}: option 0 must be 'not updated' (0, 0), got {opts[:1]}")
        if any(c < 0 for c, _ in opts) or path_cost[i] < 0:
            raise ValueError(f"layer {i}: costs must be >= 0")


def exhaustive(options: Sequence[Sequence[Option]], path_cost: Sequence[int], budget: int) -> Solution:
    """Try every configuration; ties go to the cheaper, then to the first enumerated."""
    _check(options, path_cost)
    best = Solution(tuple(0 for _ in options), 0, 0.0)
    for choice in itertools.product(*[range(len(o)) for o in options]):
        cost = config_cost(options, path_cost, choice)
        if cost > budget:
            continue
        benefit = config_benefit(options, choice)
        if benefit > best.benefit + 1e-12 or (abs(benefit - best.benefit) <= 1e-12 and cost < best.cost):
            best = Solution(tuple(choice), cost, benefit)
    return best


def cost_gcd(options: Sequence[Sequence[Option]], path_cost: Sequence[int]) -> int:
    """The largest quantum that divides every cost: the DP is exact on this grid."""
    g = 0
    for opts in options:
        for c, _ in opts:
            g = math.gcd(g, int(c))
    for c in path_cost:
        g = math.gcd(g, int(c))
    return max(g, 1)


def default_quantum(options: Sequence[Sequence[Option]], path_cost: Sequence[int], budget: int,
                    max_cells: int = 4_000_000) -> int:
    """The gcd of all costs (exact), doubled while the grid would exceed ``max_cells``."""
    g = cost_gcd(options, path_cost)
    while budget // g > max_cells:
        g *= 2
    return g


def dynamic_program(options: Sequence[Sequence[Option]], path_cost: Sequence[int], budget: int,
                    quantum: int | None = None) -> Solution:
    """Exact optimum over a budget grid of ``quantum`` bytes, O(layers x options x budget / quantum)."""
    _check(options, path_cost)
    if max(len(o) for o in options) > 127:
        raise ValueError("at most 127 options per layer")
    q = quantum or default_quantum(options, path_cost, budget)
    cells = budget // q + 1
    neg = -np.inf
    # free[c]: best benefit with nothing updated so far and grid cost <= c (always 0).
    # used[c]: best benefit with something at or before this layer updated, grid cost <= c.
    free = np.zeros(cells)
    used = np.full(cells, neg)
    back: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, opts in enumerate(options):
        path = math.ceil(path_cost[i] / q)
        new_used = np.full(cells, neg)
        arg = np.zeros(cells, dtype=np.int8)           # option index chosen (fewer than 128 options)
        from_free = np.zeros(cells, dtype=bool)       # did we come from the "free" table
        for o, (cost, benefit) in enumerate(opts):
            w = math.ceil(cost / q) + path
            if w >= cells:
                continue
            # stay in "used" with any option (option 0 still pays the path through this layer)
            cand = np.full(cells, neg)
            cand[w:] = used[: cells - w] + benefit
            better = cand > new_used
            new_used[better], arg[better], from_free[better] = cand[better], o, False
            if o != 0:        # first update: leave "free"
                cand = np.full(cells, neg)
                cand[w:] = free[: cells - w] + benefit
                better = cand > new_used
                new_used[better], arg[better], from_free[better] = cand[better], o, True
        back.append((arg, from_free, np.array([math.ceil(c / q) + path for c, _ in opts])))
        used = new_used
        # free stays all zeros: choosing option 0 before any update costs nothing.
    # Read the answer at the full budget and walk back.
    c = cells - 1
    if used[c] <= 0 or not np.isfinite(used[c]):
        return Solution(tuple(0 for _ in options), 0, 0.0)
    choice = [0] * len(options)
    state_used = True
    for i in range(len(options) - 1, -1, -1):
        if not state_used:
            break
        arg, from_free, weights = back[i]
        o = int(arg[c])
        choice[i] = o
        came_free = bool(from_free[c])
        c -= int(weights[o])
        state_used = not came_free
    choice_t = tuple(choice)
    return Solution(choice_t, config_cost(options, path_cost, choice_t), config_benefit(options, choice_t))
