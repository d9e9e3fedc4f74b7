import pytest
import torch

from farmcli.errors import UserError
from farmcli.model.layers import (
    CrossAttention,
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
    assert torch.autograd.gradcheck(lambda t: masked_mean(t, mask), (x64,))  # the hand-written backward


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
    """The folded computation must match textbook attention with the same weights."""
    from farmcli.model.layers import MultiHeadAttention

    torch.manual_seed(0)
    target, reference = TargetAttention(6, 8, 2).double(), MultiHeadAttention(6, 8, 8, 2).double()
    reference.fold_keys = False  # the textbook form: keys and values projected
    with torch.no_grad():
        for name in ("q", "k", "v", "out"):
            getattr(reference, name).weight.copy_(getattr(target, name).weight)
        reference.q.bias.copy_(target.q.bias)
        reference.k.bias.normal_()  # a key bias shifts every score equally: no effect
    cand, seq, mask = torch.randn(3, 6).double(), torch.randn(3, 5, 8).double(), _mask([2, 5, 0], 5)
    out, _ = target(cand, seq, mask)  # training: the keys' own backward (_KeyAttention), no weights kept
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


@pytest.mark.parametrize("n_queries", [1, 3])
def test_folded_keys_equal_projected_keys_with_gradients(n_queries):
    """Few queries per row take the query-side form (W_k, W_v folded into each head); outputs, weights and
    gradients must equal the projected form, empty key rows included (zero output, finite gradients)."""
    from farmcli.model.layers import MultiHeadAttention

    torch.manual_seed(2)
    block = MultiHeadAttention(query_dim=5, key_dim=12, dim=8, heads=2)
    with torch.no_grad():
        block.k.bias.normal_()  # a key bias is one score added to every key of a query: no effect
    assert block._folding_is_cheaper(n_queries, 50, 12) and not block._folding_is_cheaper(50, 50, 12)
    query0, keys0, key_mask = torch.randn(4, n_queries, 5), torch.randn(4, 50, 12), _mask([0, 3, 50, 1], 50)
    results = []
    for fold in (False, True):
        block.fold_keys = fold
        block.zero_grad()
        query, keys = query0.clone().requires_grad_(), keys0.clone().requires_grad_()
        with attention_weights():
            out, weights = block(query, keys, key_mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [query.grad, keys.grad]
        grads += [
            torch.zeros_like(p) if p.grad is None else p.grad for n, p in block.named_parameters() if n != "k.bias"
        ]
        results.append((out, weights, grads))
    (out_p, w_p, g_p), (out_f, w_f, g_f) = results
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_f, w_p, rtol=1e-5, atol=1e-6)
    assert torch.equal(out_f[0], torch.zeros_like(out_f[0]))
    for got, want in zip(g_f, g_p, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weights_kept", [False, True], ids=["fused", "explicit"])
def test_heads_padded_to_whole_lanes_change_nothing(weights_kept):
    """4 heads of 23 run as 4 of 24 with a zero channel each (``head_pad``, for the products' sake): outputs,
    weights and every gradient as unpadded, empty key rows included."""
    from contextlib import nullcontext

    from farmcli.model.layers import MultiHeadAttention, lane_padding

    torch.manual_seed(3)
    block = MultiHeadAttention(query_dim=92, key_dim=92, dim=92, heads=4)
    assert block.head_pad == 1 and MultiHeadAttention(8, 8, 8, 2).head_pad == 0
    assert MultiHeadAttention(12, 12, 12, 4).head_pad == 0  # 4 heads of 3 -> of 4: a third wider, not worth it
    x0, key_mask = torch.randn(3, 50, 92), _mask([0, 7, 50], 50)
    results = []
    for pad in (False, True):
        block.zero_grad()
        x = x0.clone().requires_grad_()
        with lane_padding(pad), attention_weights() if weights_kept else nullcontext():
            out, weights = block(x, x, key_mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out, weights, [x.grad, *(p.grad for p in block.parameters())]))
    (out, weights, grads), (out_pad, weights_pad, grads_pad) = results
    assert out_pad.shape == out.shape == (3, 50, 92)
    torch.testing.assert_close(out_pad, out, rtol=1e-5, atol=1e-6)
    assert torch.equal(out_pad[0], torch.zeros_like(out_pad[0]))
    if weights_kept:
        torch.testing.assert_close(weights_pad, weights, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads_pad, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_key_attention_backward_is_the_gradient_of_its_forward():
    from farmcli.model.layers import _KeyAttention, masked_softmax

    torch.manual_seed(0)
    q_keys = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(3, 4, 1, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([[1, 1, 0, 1, 0, 1], [0] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)[:, None, :]
    pooled = _KeyAttention.apply(q_keys, offset, keys, keep)
    want = masked_softmax(q_keys @ keys.transpose(1, 2) + offset, keep)
    torch.testing.assert_close(pooled, want @ keys)
    assert not pooled[1].any()  # no real key: zeros, not NaN
    assert torch.autograd.gradcheck(lambda a, b, c: _KeyAttention.apply(a, b, c, keep), (q_keys, offset, keys))
    assert torch.autograd.gradcheck(lambda a, c: _KeyAttention.apply(a, None, c, keep), (q_keys, keys))


def test_a_traced_attention_keeps_zeroing_key_less_rows():
    """Traced on a batch in which every row has a key, the graph must still give a key-less row zeros, not NaN
    (the CPU's shortcut for such batches is a branch on the data, which a trace would fix; torch 2.13's fused
    CPU kernel happens to return zeros for a fully masked row; other versions and devices give NaN)."""
    torch.manual_seed(4)
    q, k, v = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    traced = torch.jit.trace(lambda q, k, v, m: attention(q, k, v, m)[0], (q, k, v, _mask([1, 5, 2], 5)))
    out = traced(q, k, v, _mask([0, 5, 2], 5))
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out[1:], attention(q, k, v, _mask([0, 5, 2], 5))[0][1:])
