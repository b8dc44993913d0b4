"""The integer graph helpers, checked against values computed by hand."""
import math

import pytest
import torch

from experiments.lib import quant as Q


def test_quantize_multiplier_hand_example():
    # 0.3 = 0.6 * 2**-1; 0.6 * 2**31 = 1288490188.8 -> 1288490189, right shift 1.
    assert Q.quantize_multiplier(0.3) == (1288490189, 1)
    # 0.5 = 0.5 * 2**0 -> m0 = 2**30, no shift.
    assert Q.quantize_multiplier(0.5) == (2 ** 30, 0)
    with pytest.raises(ValueError):
        Q.quantize_multiplier(1.5)


def test_integer_linear_hand_example():
    # x = [1, 2, 3], w = [4, -5, 6], bias 10: acc = 4 - 10 + 18 + 10 = 22.
    q_x = torch.tensor([[1, 2, 3]])
    q_w = torch.tensor([[4, -5, 6]])
    acc = Q.int_accumulate_linear(q_x, q_w, torch.tensor([10]))
    assert acc.tolist() == [[22]]
    # M = 0.3: 22 * 1288490189 + 2**30 = 29420525982, // 2**31 -> 13; 13 / 2 rounds to 7 (= round(6.6)).
    m0, shift = Q.quantize_multiplier(0.3)
    assert int(Q.saturating_rounding_doubling_high_mul(acc, m0)) == 13
    assert Q.requantize(acc, m0, shift).tolist() == [[7]]


def test_requantize_ties_and_clamp():
    m0, shift = Q.quantize_multiplier(0.5)
    acc = torch.tensor([5, -5, 7, 1000, -1000])
    # gemmlowp rounding: 2.5 -> 3, -2.5 -> -2 (nudge then truncate), 3.5 -> 4; outside int8 clamps.
    assert Q.requantize(acc, m0, shift).tolist() == [3, -2, 4, 127, -128]
    # torch.round rounds half to even: 2.5 -> 2. That is one source of off-by-one codes against fake quant.
    assert torch.round(torch.tensor(2.5)).item() == 2.0


def test_rounding_divide_by_pot_matches_round_half_away():
    x = torch.arange(-40, 41)
    for e in (1, 2, 3):
        expected = [int(math.copysign(math.floor(abs(v) / 2 ** e + 0.5), v)) for v in x.tolist()]
        assert Q.rounding_divide_by_pot(x, e).tolist() == expected


def test_requantize_close_to_float_multiplier():
    torch.manual_seed(0)
    acc = torch.randint(-2 ** 20, 2 ** 20, (5000,))
    for m in (0.0003, 0.0123, 0.37, 0.99):
        m0, shift = Q.quantize_multiplier(m)
        got = Q.requantize(acc, m0, shift, qmin=-2 ** 30, qmax=2 ** 30)
        # Rounded twice (high multiply, then the shift): within 0.5 + 0.5 * 2**-shift of the real product,
        # plus the Q31 mantissa error |acc| * 2**-31.
        bound = 0.5 + 0.5 * 2.0 ** -shift + float(acc.abs().max()) * 2.0 ** -31
        assert float((got - acc.double() * m).abs().max()) <= bound


def test_saturating_accumulator():
    q_x = torch.tensor([[127, 127, 127]])
    q_w = torch.tensor([[127, 127, -127]])
    # 16129 + 16129 = 32258 fits int16; exact sum = 16129.
    assert Q.saturating_accumulate_linear(q_x, q_w, 16).tolist() == [[16129]]
    q_w2 = torch.tensor([[127, 127, 127]])
    # 3 * 16129 = 48387 saturates at 32767 in 16 bits.
    assert Q.saturating_accumulate_linear(q_x, q_w2, 16).tolist() == [[32767]]
    assert Q.int_accumulate_linear(q_x, q_w2, None).tolist() == [[48387]]


def test_scales_and_fake_quant():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    assert float(Q.symmetric_scale(w)) == pytest.approx(2.0 / 127)
    assert Q.symmetric_scale(w, channel_dim=0).flatten().tolist() == pytest.approx([2.0 / 127, 0.5 / 127])
    s = torch.tensor(0.1)
    x = torch.tensor([0.04, 0.06, 20.0, -20.0], requires_grad=True)
    y = Q.fake_quant(x, s)
    assert y.tolist() == pytest.approx([0.0, 0.1, 12.7, -12.8])
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]   # straight through inside the range, zero where clipped
