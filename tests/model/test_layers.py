import pytest
import torch

from farmcli.errors import UserError
from farmcli.model.layers import (
    CrossAttention,
    MultiHeadAttention,
    SelfAttention,
    TargetAttention,
    attention,
    attention_weights,
    masked_mean,
    mlp,
)


def _mask(lengths, L):
    return torch.arange(L)[None, :] >= (L - torch.tensor(lengths))[:, None]


def test_masked_mean_ignores_padding_and_gives_zero_for_empty_rows():
    x = torch.randn(3, 5, 4)
    mask = _mask([2, 5, 0], 5)
    out = masked_mean(x, mask)
    torch.testing.assert_close(out[0], x[0, 3:].mean(0))
    torch.testing.assert_close(out[1], x[1].mean(0))
    assert torch.equal(out[2], torch.zeros(4))
    x64 = x.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: masked_mean(t, mask), (x64,))


def test_target_attention_empty_history_is_zero_with_finite_gradients():
    torch.manual_seed(0)
    att = TargetAttention(cand_dim=6, dim=8, heads=2)
    cand = torch.randn(3, 6, requires_grad=True)
    seq = torch.randn(3, 5, 8, requires_grad=True)
    out, weights = att(cand, seq, _mask([3, 0, 5], 5))
    assert out.shape == (3, 8) and weights is None  # training: the weights are not kept
    with attention_weights():
        out_aux, weights = att(cand, seq, _mask([3, 0, 5], 5))
    torch.testing.assert_close(out_aux, out)
    assert weights is not None and weights.shape == (3, 2, 5)
    assert torch.equal(out[1], torch.zeros(8))
    assert torch.equal(weights[0, :, :2], torch.zeros(2, 2))  # padding gets no weight
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in [cand, seq, *att.parameters()])


def test_target_attention_ignores_padded_values():
    torch.manual_seed(0)
    att = TargetAttention(cand_dim=6, dim=8, heads=2)
    cand, seq, mask = torch.randn(2, 6), torch.randn(2, 5, 8), _mask([2, 4], 5)
    noisy = seq.clone()
    noisy[~mask] = 1e4
    torch.testing.assert_close(att(cand, seq, mask)[0], att(cand, noisy, mask)[0])


@pytest.mark.parametrize("with_weights", [False, True], ids=["fused", "explicit"])
@pytest.mark.parametrize("block", ["self", "cross"])
def test_attention_blocks_keep_padding_at_zero_and_never_nan(block, with_weights):
    torch.manual_seed(0)
    x, mask = torch.randn(3, 5, 8, requires_grad=True), _mask([2, 0, 5], 5)
    with attention_weights(with_weights):
        if block == "self":
            out, weights = SelfAttention(8, 2)(x, mask)
        else:
            keys, key_mask = torch.randn(3, 4, 6), _mask([0, 4, 1], 4)
            out, weights = CrossAttention(8, 6, 8, 2)(x, mask, keys, key_mask)
            if with_weights:
                assert weights.shape == (3, 2, 5, 4)
                assert torch.equal(weights[0], torch.zeros(2, 5, 4))  # no real key
            else:
                assert weights is None
    assert torch.equal(out[~mask], torch.zeros(int((~mask).sum()), 8))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_heads_must_divide_the_width():
    with pytest.raises(UserError, match="choose one of: 1, 2, 4, 23, 46, 92"):
        TargetAttention(cand_dim=4, dim=92, heads=8)


def test_mlp_shapes():
    net = mlp(5, [7, 3])
    assert net(torch.randn(2, 5)).shape == (2, 3)
    assert not isinstance(net[-1], torch.nn.ReLU)
    assert isinstance(mlp(5, [7, 3], last_activation=True)[-1], torch.nn.ReLU)


def test_target_attention_equals_multi_head_attention_with_one_query():
    """Target attention is multi-head attention with the candidate as its one query; it drops the key bias,
    which adds one score to every key of a query (softmax ignores it)."""
    torch.manual_seed(0)
    target, reference = TargetAttention(6, 8, 2).double(), MultiHeadAttention(6, 8, 8, 2).double()
    assert target.k.bias is None
    with torch.no_grad():
        for name in ("q", "k", "v", "out"):
            getattr(reference, name).weight.copy_(getattr(target, name).weight)
        reference.q.bias.copy_(target.q.bias)
        reference.k.bias.normal_()  # a key bias shifts every score equally: no effect
    cand, seq, mask = torch.randn(3, 6).double(), torch.randn(3, 5, 8).double(), _mask([2, 5, 0], 5)
    out, _ = target(cand, seq, mask)  # the fused kernel, no weights kept
    with attention_weights():
        out_aux, weights = target(cand, seq, mask)
        ref_out, ref_weights = reference(cand.unsqueeze(1), seq, mask)
    torch.testing.assert_close(out, ref_out.squeeze(1))
    torch.testing.assert_close(out_aux, ref_out.squeeze(1))
    torch.testing.assert_close(weights, ref_weights.squeeze(2))


@pytest.mark.parametrize("lengths", [[0, 3, 7, 1], [2, 3, 7, 1]], ids=["an-empty-row", "every-row-has-a-key"])
def test_fused_and_explicit_attention_agree_including_empty_rows(lengths):
    torch.manual_seed(1)
    q, k, v = torch.randn(4, 2, 6, 8), torch.randn(4, 2, 7, 8), torch.randn(4, 2, 7, 8)
    key_mask = _mask(lengths, 7)
    fused, none = attention(q, k, v, key_mask)
    with attention_weights():
        explicit, weights = attention(q, k, v, key_mask)
    assert none is None and weights is not None
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    if lengths[0] == 0:
        assert torch.equal(fused[0], torch.zeros_like(fused[0]))


def test_a_traced_attention_keeps_zeroing_key_less_rows():
    """Traced on a batch in which every row has a key, the graph must still give a key-less row zeros, not NaN:
    the reference has no branch on the data for a trace to fix (export and ``torch.compile`` run it; torch
    2.13's fused CPU kernel happens to return zeros for a fully masked row; other versions and devices give NaN)."""
    torch.manual_seed(4)
    q, k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    traced = torch.jit.trace(lambda q, k, v, m: attention(q, k, v, m)[0], (q, k, v, _mask([1, 5, 2], 5)))
    out = traced(q, k, v, _mask([0, 5, 2], 5))
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1:], attention(q, k, v, _mask([0, 5, 2], 5))[0][1:])
