"""The CPU backend's attention and pooling: model/layers.py's blocks, same parameters, fewer FLOPs and passes.

With few queries (eq. 11, 17; eq. 16 for a short live history) W_k and W_v fold into each head's query: O(Dk) work
per key instead of O(Dk d h). Heads get zero channels to whole AVX2 lanes (23 -> 24; 0.65-0.75x the rate when off).
Backward passes by hand where autograd would write a [B, L, D] gradient twice or use a slow batched product. No
attention weights: analysis (``return_aux``) runs the reference.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.model import layers
from farmcli.model.cpu.options import current
from farmcli.model.cpu.ragged import LengthGroups, Trimmed
from farmcli.model.layers import CrossAttention, MultiHeadAttention, SelfAttention, TargetAttention, residual_norm

LANES = 8
"""fp32 values in an AVX2 register: products whose output is a whole number of them wide run 1.3-1.5x faster."""


def lane_pad(width: int) -> int:
    """Zero columns that bring ``width`` to whole vector lanes; 0 with the ``lanes`` switch off."""
    return -width % LANES if current().lanes else 0


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``layers.masked_mean`` as one batched product of the mask with x (reads x once, no [B, L, D] temporary)."""
    weights = mask.to(x.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
    if torch.is_grad_enabled() and x.requires_grad:
        return _WeightedSum.apply(weights, x)
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


class _WeightedSum(torch.autograd.Function):
    """sum_l w[b, l] x[b, l]; its x-gradient w ⊗ grad as a broadcast product, about twice as fast on a CPU as the
    [B, L, 1] x [B, 1, D] batched product autograd would use."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(weights)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (weights,) = ctx.saved_tensors
        return None, weights.unsqueeze(-1) * grad.unsqueeze(1)


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, head_dim: int) -> Tensor:
    """``layers.attention`` scaled by 1 / sqrt(``head_dim``) (heads may carry zero channels); a batch in which
    every row has a key (eq. 12 on ``default``: all) skips zeroing the key-less rows."""
    scale = 1 / math.sqrt(head_dim)
    if bool(key_mask.any(-1).all()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], scale=scale)
    return layers.fused_attention(q, k, v, key_mask, scale)


def head_pad(m: MultiHeadAttention) -> int:
    """Zero channels per head that make the heads whole lanes wide (1 for FARM's 4 heads of 23), where that widens
    them by at most an eighth; 0 with the ``lanes`` switch off."""
    dim, heads = m.q.out_features, m.heads
    pad = next(p for p in range(LANES) if heads * (dim // heads + p) % LANES == 0)
    return pad if current().lanes and 8 * heads * pad <= dim else 0


def multi_head(m: MultiHeadAttention, query: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
    """``MultiHeadAttention.forward``'s output: query [B, Lq, Dq], keys [B, Lk, Dk] -> [B, Lq, dim]."""
    b, n_queries, _ = query.shape
    if current().fold_keys and _folding_is_cheaper(m, n_queries, *keys.shape[1:]):
        # q_h . (W_k^h x_l) = (W_k^h' q_h) . x_l and sum_l w_l W_v^h x_l = W_v^h sum_l w_l x_l; the key bias adds
        # the same q_h . b_k^h to every key (softmax ignores it) and is added anyway, so it keeps its gradient
        q_keys, offset = fold_query(m.q(query).view(b, n_queries, m.heads, -1), m.k.weight, m.k.bias)
        pooled = pool_keys(q_keys, offset, keys, key_mask)
        return m.out(unfold_values(pooled, m.v.weight, b, n_queries, m.heads))
    pad = head_pad(m)
    q, k, v = (_project(m, lin, x, pad) for lin, x in ((m.q, query), (m.k, keys), (m.v, keys)))
    out = attention(q, k, v, key_mask, head_dim=m.q.out_features // m.heads)
    h, d = out.shape[1], out.shape[3]
    w_out = m.out.weight
    if pad:  # zero columns where the heads' outputs have their zero channels
        w_out = F.pad(w_out.view(-1, h, d - pad), (0, pad)).view(-1, h * d)
    return F.linear(out.transpose(1, 2).reshape(b, n_queries, h * d), w_out)


def _project(m: MultiHeadAttention, linear: nn.Linear, x: Tensor, pad: int) -> Tensor:
    """x through ``linear``, split into heads [B, heads, L, d + pad] whose last ``pad`` channels are zero
    ([41650, 92] x [92, 96] runs at 1.4x the rate of [92, 92] on AVX2; zero channels add nothing to a score)."""
    if pad:
        weight = F.pad(linear.weight.view(m.heads, -1, linear.in_features), (0, 0, 0, pad))
        bias = None if linear.bias is None else F.pad(linear.bias.view(m.heads, -1), (0, pad)).view(-1)
        x = F.linear(x, weight.view(-1, linear.in_features), bias)
    else:
        x = linear(x)
    return x.unflatten(-1, (m.heads, -1)).transpose(1, 2)


def _folding_is_cheaper(m: MultiHeadAttention, n_queries: int, n_keys: int, key_dim: int) -> bool:
    """Multiply-adds per row: projecting keys and values against folding W_k, W_v into each head's query."""
    dim = m.k.out_features
    projected = 2 * n_keys * key_dim * dim + 2 * n_queries * n_keys * dim
    folded = 2 * n_queries * dim * key_dim + 2 * n_queries * m.heads * n_keys * key_dim
    return folded < projected


def fold_query(q: Tensor, w_k: Tensor, b_k: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Queries q [B, Lq, h, d] times each head's scaled W_k -> [B, h * Lq, Dk], and the key bias's score offset."""
    b, n_queries, h, d = q.shape
    key_dim = w_k.shape[1]
    scale = 1 / math.sqrt(d)
    q_keys = torch.einsum("bqhd,hde->bhqe", q * scale, w_k.view(h, d, key_dim)).reshape(b, h * n_queries, key_dim)
    offset = None if b_k is None else torch.einsum("bqhd,hd->bhq", q * scale, b_k.view(h, d)).reshape(b, -1, 1)
    return q_keys, offset


def pool_keys(q_keys: Tensor, offset: Tensor | None, keys: Tensor, key_mask: Tensor) -> Tensor:
    """The folded queries' softmax-weighted sums of the keys [B, h * Lq, Dk]."""
    keep = key_mask[:, None, :]
    if not torch.is_grad_enabled() or not current().key_backward:
        scores = torch.bmm(q_keys, keys.transpose(1, 2))
        return torch.bmm(layers.masked_softmax(scores if offset is None else scores + offset, keep), keys)
    return _KeyAttention.apply(q_keys, offset, keys, keep)


def unfold_values(pooled: Tensor, w_v: Tensor, b: int, n_queries: int, h: int) -> Tensor:
    """Each head's W_v on its pooled keys [B, h * Lq, Dk] -> heads' outputs [B, Lq, h * d]."""
    key_dim = pooled.shape[-1]
    d = w_v.shape[0] // h
    heads_out = torch.einsum("bhqe,hde->bqhd", pooled.view(b, h, n_queries, key_dim), w_v.view(h, d, key_dim))
    return heads_out.reshape(b, n_queries, h * d)


class _KeyAttention(torch.autograd.Function):
    """``pool_keys`` for training, scores as [B, Lk, Q] (1.5x faster on a CPU than [B, Q, Lk]); the keys' gradient
    from scores and pooling is one batched product, [grad_scores, weights] [q_keys; grad_pooled], not two added."""

    @staticmethod
    def forward(ctx: Any, q_keys: Tensor, offset: Tensor | None, keys: Tensor, keep: Tensor) -> Tensor:
        scores = torch.bmm(keys, q_keys.transpose(1, 2))  # [B, Lk, Q]
        if offset is not None:
            scores = scores + offset.transpose(1, 2)
        weights = layers.masked_softmax(scores, keep.transpose(1, 2), dim=1)
        ctx.save_for_backward(q_keys, keys, weights)
        ctx.has_offset = offset is not None
        return torch.bmm(weights.transpose(1, 2), keys)

    @staticmethod
    def backward(ctx: Any, grad_pooled: Tensor) -> tuple[Tensor, Tensor | None, Tensor, None]:
        q_keys, keys, weights = ctx.saved_tensors
        grad_pooled = grad_pooled.contiguous()
        grad_weights = torch.bmm(keys, grad_pooled.transpose(1, 2))  # [B, Lk, Q]
        # softmax backward; masked keys have weight 0, so their score gradient is 0 (as masked_fill's would be)
        grad_scores = weights * (grad_weights - (weights * grad_weights).sum(1, keepdim=True))
        grad_keys = torch.bmm(torch.cat([grad_scores, weights], 2), torch.cat([q_keys, grad_pooled], 1))
        grad_offset = grad_scores.sum(1).unsqueeze(-1) if ctx.has_offset else None
        return torch.bmm(grad_scores.transpose(1, 2), keys), grad_offset, grad_keys, None


def target(
    m: TargetAttention, x_cand: Tensor, seq: Tensor | Trimmed, mask: Tensor, groups: LengthGroups | None = None
) -> Tensor:
    """``TargetAttention.forward``'s output [B, D], keys folded into the query; with ``groups``, group by group."""
    q = m.q(x_cand).unflatten(-1, (m.heads, -1)).unsqueeze(1)  # [B, 1, h, d]
    q_keys, _ = fold_query(q, m.k.weight, None)  # [B, h, D]
    if groups is None:
        assert isinstance(seq, Tensor)
        pooled = pool_keys(q_keys, None, seq, mask)
    else:
        pooled = groups.apply(
            lambda keys, key_mask, qk: pool_keys(qk, None, keys, key_mask),
            sequences=(seq, mask),
            rows=(q_keys,),
            output="rows",
        )
    return m.out(unfold_values(pooled, m.v.weight, x_cand.shape[0], 1, m.heads).squeeze(1))


def self_attention(m: SelfAttention, x: Tensor, mask: Tensor) -> Tensor:
    """``SelfAttention.forward``'s output (eq. 12): its block around this file's multi-head attention."""
    return residual_norm(m.norm, x, multi_head(m.attn, x, x, mask), mask)


def cross_attention(m: CrossAttention, query: Tensor, query_mask: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
    """``CrossAttention.forward``'s output (eq. 16): its block around this file's multi-head attention."""
    q = m.query_proj(query)
    return residual_norm(m.norm, q, multi_head(m.attn, q, keys, key_mask), query_mask)
