"""The dynamic program finds exactly what exhaustive search finds."""
import random

import pytest

from experiments.lib import budget_search as B


def random_instance(rng: random.Random, layers: int):
    options = []
    for _ in range(layers):
        opts = [(0, 0.0)]
        for _ in range(rng.randint(1, 3)):
            # Benefits may be negative: short fine-tuning runs are noisy.
            opts.append((rng.randint(1, 40) * 4, round(rng.uniform(-0.2, 1.0), 3)))
        options.append(opts)
    path = [rng.randint(0, 20) * 4 for _ in range(layers)]
    return options, path


@pytest.mark.parametrize("seed", range(60))
def test_dp_equals_exhaustive_on_random_instances(seed):
    rng = random.Random(seed)
    options, path = random_instance(rng, rng.randint(1, 6))
    total = sum(max(c for c, _ in o) for o in options) + sum(path)
    for budget in (0, 4, total // 4, total // 2, total, total + 100):
        ex = B.exhaustive(options, path, budget)
        dp = B.dynamic_program(options, path, budget)
        assert dp.benefit == pytest.approx(ex.benefit, abs=1e-9), (options, path, budget, ex, dp)
        assert dp.cost <= budget
        assert B.config_cost(options, path, dp.choice) == dp.cost
        assert B.config_benefit(options, dp.choice) == pytest.approx(dp.benefit)


def test_hand_example_path_cost_decides():
    # Layer 0 is worth 1.0 for 10 bytes, but reaching it means backward through layers 0..2 (path 100 each).
    options = [[(0, 0.0), (10, 1.0)], [(0, 0.0), (10, 0.6)], [(0, 0.0), (10, 0.5)]]
    path = [100, 100, 0]
    # 120 bytes: layer 2 alone costs 10 + 0; layer 1 adds path[1] = 100 -> 10 + 10 + 100 = 120 -> 1.1.
    assert B.exhaustive(options, path, 120).choice == (0, 1, 1)
    assert B.dynamic_program(options, path, 120).benefit == pytest.approx(1.1)
    # 119 bytes: layer 1 alone (10 + path 100 = 110) beats layer 2 alone (0.6 > 0.5).
    assert B.dynamic_program(options, path, 119).choice == (0, 1, 0)
    # 109 bytes: only layer 2 fits.
    assert B.dynamic_program(options, path, 109).choice == (0, 0, 1)
    # 230 bytes: everything (30 + 200).
    assert B.dynamic_program(options, path, 230).choice == (1, 1, 1)
    assert B.config_cost(options, path, (1, 1, 1)) == 230


def test_coarse_quantum_stays_within_budget():
    rng = random.Random(7)
    options, path = random_instance(rng, 5)
    budget = sum(path) // 2 + 50
    dp = B.dynamic_program(options, path, budget, quantum=64)
    assert dp.cost <= budget
    assert dp.benefit <= B.exhaustive(options, path, budget).benefit + 1e-9


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        B.exhaustive([[(5, 1.0)]], [0], 10)
    with pytest.raises(ValueError):
        B.dynamic_program([[(0, 0.0)]], [0, 1], 10)
