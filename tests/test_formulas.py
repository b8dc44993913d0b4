"""The analytic formulas, exact where the answer is exact."""
import pytest

from experiments.lib import formulas as f


def test_optimizer_state_bytes() -> None:
    shapes = [(10, 20), (20,), ()]
    n = 200 + 20 + 1
    assert f.optimizer_state_bytes("sgd", shapes) == 0
    assert f.optimizer_state_bytes("sgd-momentum", shapes) == 4 * n
    assert f.optimizer_state_bytes("adamw", shapes) == 8 * n + 3 * 4
    assert f.optimizer_state_bytes("adam-amsgrad", shapes) == 12 * n + 3 * 4
    # Adafactor: row + column factors for the matrix, full variance for the vector and the scalar
    assert f.optimizer_state_bytes("adafactor", shapes) == 4 * ((10 + 20) + 20 + 1) + 3 * 4
    assert f.adafactor_state_elems((3, 10, 20)) == 3 * (10 + 20)


def test_bytes_per_param() -> None:
    assert f.bytes_per_param("mixed-master") == 16 and f.bytes_per_param("pure-bf16") == 8


def test_korthikanti_terms_add_up_to_the_published_total() -> None:
    s, b, h, a = 2048, 4, 4096, 32
    terms = f.korthikanti_activation_terms(s, b, h, a)
    assert sum(terms.values()) == f.korthikanti_activation_bytes(s, b, h, a)
    assert f.korthikanti_activation_bytes(s, b, h, a) == s * b * h * (34 + 5 * a * s // h)


def test_zero_accounting() -> None:
    psi = 7_000_000_000
    assert f.zero_bytes_per_device(psi, 0, 64) == {"params_bytes": 2 * psi, "grads_bytes": 2 * psi,
                                                   "optimizer_bytes": 12 * psi}
    z3 = f.zero_bytes_per_device(psi, 3, 64)
    assert sum(z3.values()) == pytest.approx(16 * psi / 64)  # the paper's 1.9 GB per device for 7.5B/64
    z1 = f.zero_bytes_per_device(psi, 1, 4)
    assert z1["optimizer_bytes"] == 3 * psi and z1["params_bytes"] == 2 * psi
    with pytest.raises(ValueError, match="stage"):
        f.zero_bytes_per_device(psi, 4, 8)
