"""The CPU backend's attention and pooling (model/cpu/attention.py) equal the reference blocks
(model/layers.py) with the same parameters, forward and backward, empty key rows included, every switch
(fold_keys, key_backward, lanes) on and off."""

from __future__ import annotations

import pytest
import torch

from farmcli.model.cpu import attention as cpu
from farmcli.model.cpu.options import options
from farmcli.model.cpu.ragged import LengthGroups, Trimmed
from farmcli.model.layers import (
    CrossAttention,
    MultiHeadAttention,
    SelfAttention,
    TargetAttention,
    attention,
    masked_mean,
    masked_softmax,
)
from tests.model.cpu.helpers import assert_same_outputs_and_grads, outputs_and_grads

SWITCHED = [{}, {"fold_keys": False}, {"key_backward": False}, {"lanes": False}]
SWITCH_IDS = ["all-on", "no-fold_keys", "no-key_backward", "no-lanes"]


def _mask(lengths, L):
    return torch.arange(L)[None, :] >= (L - torch.tensor(lengths))[:, None]


def test_masked_mean_equals_the_reference_with_gradients():
    torch.manual_seed(0)
    x, mask = torch.randn(4, 6, 5), _mask([0, 2, 6, 1], 6)
    want = outputs_and_grads(lambda t: masked_mean(t, mask), [x])
    assert_same_outputs_and_grads(outputs_and_grads(lambda t: cpu.masked_mean(t, mask), [x]), want)
    assert torch.equal(want[0][0], torch.zeros(5))
    with torch.no_grad():  # the plain product, without the hand-written backward
        torch.testing.assert_close(cpu.masked_mean(x, mask), want[0])
    x64 = x.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: cpu.masked_mean(t, mask), (x64,))  # _WeightedSum's backward


@pytest.mark.parametrize("lengths", [[0, 3, 7, 1], [2, 3, 7, 1]], ids=["an-empty-row", "every-row-has-a-key"])
def test_attention_equals_the_reference_and_zero_channels_change_nothing(lengths):
    torch.manual_seed(1)
    q, k, v = torch.randn(4, 2, 6, 8), torch.randn(4, 2, 7, 8), torch.randn(4, 2, 7, 8)
    key_mask = _mask(lengths, 7)
    want = outputs_and_grads(lambda *t: attention(*t, key_mask)[0], [q, k, v])
    got = outputs_and_grads(lambda *t: cpu.attention(*t, key_mask, head_dim=8), [q, k, v])
    assert_same_outputs_and_grads(got, want)
    if lengths[0] == 0:
        assert torch.equal(got[0][0], torch.zeros_like(got[0][0]))
    # a zero channel on every head (lane padding) with the scale of the real width: the same
    padded = [torch.nn.functional.pad(t, (0, 1)) for t in (q, k, v)]
    out = cpu.attention(*padded, key_mask, head_dim=8)
    assert not out[..., -1].any()
    torch.testing.assert_close(out[..., :-1], want[0], atol=1e-5, rtol=1e-4)


def test_head_pad_widens_heads_to_whole_lanes_where_it_pays():
    assert cpu.head_pad(MultiHeadAttention(92, 92, 92, 4)) == 1  # 4 heads of 23 -> of 24
    assert cpu.head_pad(MultiHeadAttention(8, 8, 8, 2)) == 0  # already whole lanes
    assert cpu.head_pad(MultiHeadAttention(12, 12, 12, 4)) == 0  # 4 heads of 3 -> of 4: a third wider, not worth it
    with options(lanes=False):
        assert cpu.head_pad(MultiHeadAttention(92, 92, 92, 4)) == 0
    assert cpu.lane_pad(1050) == 6 and cpu.lane_pad(1056) == 0
    with options(lanes=False):
        assert cpu.lane_pad(1050) == 0


def _multi_head_runs(block, query, keys, key_mask, switches):
    want = outputs_and_grads(lambda q, k: block(q, k, key_mask)[0], [query, keys], block)
    with options(**switches):
        got = outputs_and_grads(lambda q, k: cpu.multi_head(block, q, k, key_mask), [query, keys], block)
    return got, want


@pytest.mark.parametrize("switches", SWITCHED, ids=SWITCH_IDS)
@pytest.mark.parametrize("n_queries", [1, 3, 50])
def test_folded_keys_equal_projected_keys_with_gradients(n_queries, switches):
    """Few queries per row take the query-side form (W_k, W_v folded into each head); outputs and gradients
    must equal the reference's projected form, empty key rows included (zero output, finite gradients)."""
    torch.manual_seed(2)
    block = MultiHeadAttention(query_dim=5, key_dim=12, dim=8, heads=2)
    with torch.no_grad():
        block.k.bias.normal_()  # a key bias is one score added to every key of a query: no effect
    assert cpu._folding_is_cheaper(block, n_queries, 50, 12) == (n_queries < 50)
    query, keys, key_mask = torch.randn(4, n_queries, 5), torch.randn(4, 50, 12), _mask([0, 3, 50, 1], 50)
    got, want = _multi_head_runs(block, query, keys, key_mask, switches)
    assert torch.equal(got[0][0], torch.zeros_like(got[0][0]))
    assert_same_outputs_and_grads(got, want)


@pytest.mark.parametrize("switches", SWITCHED, ids=SWITCH_IDS)
def test_heads_padded_to_whole_lanes_change_nothing(switches):
    """4 heads of 23 run as 4 of 24 with a zero channel each (``head_pad``, for the products' sake): outputs
    and every gradient as the reference's, empty key rows included."""
    torch.manual_seed(3)
    block = MultiHeadAttention(query_dim=92, key_dim=92, dim=92, heads=4)
    assert not cpu._folding_is_cheaper(block, 50, 50, 92)  # the projected form, where heads are padded
    x, key_mask = torch.randn(3, 50, 92), _mask([0, 7, 50], 50)
    want = outputs_and_grads(lambda t: block(t, t, key_mask)[0], [x], block)
    with options(**switches):
        got = outputs_and_grads(lambda t: cpu.multi_head(block, t, t, key_mask), [x], block)
    assert got[0].shape == (3, 50, 92) and torch.equal(got[0][0], torch.zeros_like(got[0][0]))
    assert_same_outputs_and_grads(got, want)


def test_the_key_attention_backward_is_the_gradient_of_its_forward():
    torch.manual_seed(0)
    q_keys = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(3, 4, 1, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([[1, 1, 0, 1, 0, 1], [0] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)[:, None, :]
    pooled = cpu._KeyAttention.apply(q_keys, offset, keys, keep)
    want = masked_softmax(q_keys @ keys.transpose(1, 2) + offset, keep)
    torch.testing.assert_close(pooled, want @ keys)
    assert not pooled[1].any()  # no real key: zeros, not NaN
    assert torch.autograd.gradcheck(lambda a, b, c: cpu._KeyAttention.apply(a, b, c, keep), (q_keys, offset, keys))
    assert torch.autograd.gradcheck(lambda a, c: cpu._KeyAttention.apply(a, None, c, keep), (q_keys, keys))
    with options(key_backward=False):  # pool_keys by autograd: the same values
        torch.testing.assert_close(cpu.pool_keys(q_keys, offset, keys, keep[:, 0]), pooled)


@pytest.mark.parametrize("form", ["padded", "groups", "trimmed"])
@pytest.mark.parametrize("switches", SWITCHED, ids=SWITCH_IDS)
def test_target_attention_equals_the_reference(form, switches):
    """Eq. 11 and 17 with the keys folded into the one query; with length groups, each group attends over its
    trailing positions (the history given whole, or already trimmed)."""
    torch.manual_seed(4)
    m = TargetAttention(cand_dim=6, dim=8, heads=2)
    mask = _mask([3, 0, 12, 1, 7, 0, 2], 12)
    cand, seq = torch.randn(7, 6), torch.randn(7, 12, 8) * mask.unsqueeze(-1)
    groups = None if form == "padded" else LengthGroups.of(mask, bounds=(2, 4))

    def fast(x_cand, keys):
        if form == "trimmed":
            keys = Trimmed.of_rows(groups, keys.reshape(-1, 8)[groups.trailing_index()])
        return cpu.target(m, x_cand, keys, mask, groups)

    want = outputs_and_grads(lambda c, s: m(c, s, mask)[0], [cand, seq], m)
    with options(**switches):
        got = outputs_and_grads(fast, [cand, seq], m)
    assert got[0].shape == (7, 8) and torch.equal(got[0][1], torch.zeros(8))
    if form == "trimmed":  # positions left out of the trimmed history get no gradient; V is zero there anyway
        want[1][1] = want[1][1] * mask.unsqueeze(-1)
    assert_same_outputs_and_grads(got, want)


@pytest.mark.parametrize("switches", SWITCHED, ids=SWITCH_IDS)
@pytest.mark.parametrize("dim,heads", [(16, 2), (92, 4)])
def test_self_attention_equals_the_reference(dim, heads, switches):
    torch.manual_seed(5)
    m = SelfAttention(dim, heads)
    mask = _mask([0, 4, 10, 1], 10)
    x = torch.randn(4, 10, dim) * mask.unsqueeze(-1)
    want = outputs_and_grads(lambda t: m(t, mask)[0], [x], m)
    with options(**switches):
        got = outputs_and_grads(lambda t: cpu.self_attention(m, t, mask), [x], m)
    assert torch.equal(got[0][~mask], torch.zeros(int((~mask).sum()), dim))
    assert_same_outputs_and_grads(got, want)


@pytest.mark.parametrize("switches", SWITCHED, ids=SWITCH_IDS)
@pytest.mark.parametrize("n_queries", [1, 3, 10])
def test_cross_attention_equals_the_reference(n_queries, switches):
    """Eq. 16: live events query the video history; short live histories take the folded form."""
    torch.manual_seed(6)
    m = CrossAttention(query_dim=16, key_dim=46, dim=8, heads=2)
    query_mask = _mask([0, 1, n_queries, n_queries, 1], n_queries)
    key_mask = _mask([10, 0, 3, 10, 1], 10)
    query = torch.randn(5, n_queries, 16) * query_mask.unsqueeze(-1)
    keys = torch.randn(5, 10, 46) * key_mask.unsqueeze(-1)
    want = outputs_and_grads(lambda q, k: m(q, query_mask, k, key_mask)[0], [query, keys], m)
    with options(**switches):
        got = outputs_and_grads(lambda q, k: cpu.cross_attention(m, q, query_mask, k, key_mask), [query, keys], m)
    assert torch.equal(got[0][0], torch.zeros(n_queries, 8))  # no query: zeros; row 1 has no key (finite)
    assert_same_outputs_and_grads(got, want)
