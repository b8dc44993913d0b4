"""The saved-bytes counter, checked exactly on layers whose saved tensors are known by hand."""
import torch
from torch import nn

from experiments.lib.gpt import DecoderLayer, LayerShape
from experiments.lib.saved import SavedTensorCounter, count_saved


class Tiny(nn.Module):
    """x -> Linear (no bias) -> GELU -> g * g. By hand: mm saves x (and the weight), GELU saves its input,
    the product saves g twice (one storage)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out, bias=False)
        self.act = nn.GELU()

    def forward(self, x):
        g = self.act(self.fc(x))
        return g * g


def test_known_layer_exact_bytes_and_attribution():
    torch.manual_seed(0)
    b, d_in, d_out = 3, 8, 16
    m = Tiny(d_in, d_out)
    x = torch.randn(b, d_in, requires_grad=True)
    out, res = count_saved(lambda: m(x), exclude=[m], attribute=m)
    assert res.total_bytes == 4 * b * (d_in + d_out + d_out)
    assert res.by_module == {"fc": 4 * b * d_in, "act": 4 * b * d_out, "": 4 * b * d_out}
    assert res.pack_calls == 5  # x, weight, GELU input, g, g
    out.sum().backward()  # the graph still works: the hooks returned the tensors unchanged
    assert x.grad is not None


def test_parameters_count_unless_excluded():
    m = Tiny(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    _, with_params = count_saved(lambda: m(x))
    _, without = count_saved(lambda: m(x), exclude=[m])
    assert with_params.total_bytes - without.total_bytes == m.fc.weight.numel() * 4


def test_views_of_one_storage_count_once():
    t = torch.randn(6, 5, requires_grad=True) * 1.0  # a non-leaf with its own storage
    q, k = t.split(3)
    _, res = count_saved(lambda: q @ k.t())
    assert res.pack_calls == 2 and res.total_bytes == t.numel() * 4


def test_counter_restores_module_output_and_removes_hooks():
    m = Tiny(4, 4)
    x = torch.randn(2, 4)
    expected = m(x)
    with SavedTensorCounter(attribute=m):
        got = m(x)
    assert torch.equal(got, expected)
    assert not m._forward_hooks and not m._forward_pre_hooks


def test_decoder_layer_matches_hand_count_bf16():
    """bf16 layer, explicit attention with dropout, on CPU: every piece of Korthikanti et al.'s accounting at
    2 bytes, dropout masks kept as scaled bf16 tensors (2 bytes, not 1), plus LayerNorm mean and rstd (bf16)."""
    from experiments.activation_memory import predicted_by_module

    torch.manual_seed(0)
    s, b, h, a = 16, 2, 32, 2
    layer = DecoderLayer(LayerShape(h, a, dropout=0.1, attn_dropout=0.1), "math", max_seq=s).to(torch.bfloat16)
    x = torch.randn(b, s, h, dtype=torch.bfloat16, requires_grad=True)
    _, res = count_saved(lambda: layer(x), exclude=[layer], attribute=layer)
    by_hand = predicted_by_module(s, b, h, a, act_bytes=2, mask_bytes=2)
    ln_stats = 2 * s * b * 2 * 2  # two LayerNorms, mean and rstd, one bf16 value per token each
    assert res.by_module["ln1"] + res.by_module["ln2"] == by_hand["ln1"] + by_hand["ln2"] + ln_stats
    for mod in by_hand:
        if mod not in ("ln1", "ln2"):
            assert res.by_module.get(mod, 0) == by_hand[mod], mod
    assert res.total_bytes == sum(by_hand.values()) + ln_stats


def test_graph_walk_counts_the_same_bytes_by_node():
    from experiments.lib.saved import saved_by_node

    b, d_in, d_out = 3, 8, 16
    m = Tiny(d_in, d_out)
    x = torch.randn(b, d_in, requires_grad=True)
    out, res = count_saved(lambda: m(x), exclude=[m])
    by_node = saved_by_node(out, exclude=[m])
    assert by_node == {"MulBackward0": 4 * b * d_out, "GeluBackward0": 4 * b * d_out, "MmBackward0": 4 * b * d_in}
    assert sum(by_node.values()) == res.total_bytes
