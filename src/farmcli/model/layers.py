"""Building blocks shared by the slots: masked pooling, multi-head attention that cannot NaN, MLPs.

Histories are left-padded; ``mask`` is [B, L] bool with True at real events. Every block here keeps padded
positions at exactly zero and turns an all-padding history into zeros (never NaN, never a bias vector),
so padding can neither leak into predictions nor break gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.ragged import LengthGroups, Trimmed


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real positions of x [B, L, D] -> [B, D]; an all-padding row gives zeros.

    One batched product of the mask with x: it reads x once and writes no [B, L, D] temporary.
    """
    weights = mask.to(x.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
    if torch.is_grad_enabled() and x.requires_grad:
        return _WeightedSum.apply(weights, x)
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


class _WeightedSum(torch.autograd.Function):
    """sum_l w[b, l] x[b, l] by one batched product; its x-gradient w ⊗ grad as a broadcast product, which on
    a CPU is about twice as fast as the [B, L, 1] x [B, 1, D] batched product autograd would use."""

    @staticmethod
    def forward(ctx, weights: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weights)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        (weights,) = ctx.saved_tensors
        return None, weights.unsqueeze(-1) * grad.unsqueeze(1)


def mlp(in_dim: int, dims: Sequence[int], dropout: float = 0.0, last_activation: bool = False) -> nn.Sequential:
    """Linear layers of widths ``dims`` with ReLU (and dropout) between them; the last is linear unless asked."""
    layers: list[nn.Module] = []
    for i, width in enumerate(dims):
        layers.append(nn.Linear(in_dim, width))
        if i < len(dims) - 1 or last_activation:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers)


def masked_softmax(scores: Tensor, keep: Tensor, dim: int = -1) -> Tensor:
    """Softmax over axis ``dim`` where ``keep`` (broadcastable bool) is True; rows with nothing kept give zeros.

    Masked scores get the dtype's most negative value rather than -inf, and the weights are multiplied by the
    mask afterwards: a query with no real key gets all-zero weights (a zero output), never NaN.
    """
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * keep.to(scores.dtype)


_return_weights: ContextVar[bool] = ContextVar("farm_return_attention_weights", default=False)

LANES = 8
"""fp32 values in an AVX2 register. On such a CPU a product whose output is a whole number of them wide runs
1.3-1.5x faster than one a few columns off (multi-head attention's ``head_pad``, the stacked heads' first
layers in heads/stacked.py)."""

_pad_lanes: ContextVar[bool] = ContextVar("farm_pad_to_lanes", default=True)


@contextmanager
def lane_padding(enabled: bool = True) -> Iterator[None]:
    """Inside this block products are (the default) or are not padded with zeros to whole vector lanes. The
    results are the same either way; benchmarks compare the two, and count FLOPs unpadded (the model's)."""
    token = _pad_lanes.set(enabled)
    try:
        yield
    finally:
        _pad_lanes.reset(token)


def lane_pad(width: int) -> int:
    """Zero columns that bring ``width`` to whole vector lanes; 0 under ``lane_padding(False)``."""
    return -width % LANES if _pad_lanes.get() else 0


@contextmanager
def attention_weights(enabled: bool = True) -> Iterator[None]:
    """Inside this block attention also returns its weights (for analysis: Fig. 4); outside, the fused kernel runs."""
    token = _return_weights.set(enabled)
    try:
        yield
    finally:
        _return_weights.reset(token)


def attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, head_dim: int | None = None
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention over [B, H, L, d] with a key padding mask [B, Lk]; scores scaled by
    1 / sqrt(``head_dim``) (None: d; a head padded with zero channels passes its own width).

    Training uses torch's fused kernel (several times faster on CPU than the explicit softmax). A row with no
    real key would be NaN there, so such rows attend to one stand-in key and are then zeroed: the result is
    the same zero output as ``masked_softmax`` gives. On a CPU a batch in which every row has a key (eq. 12
    on ``default``: all of them) skips that pass over the output and its gradient; on a GPU asking would wait
    for the device, and a traced graph (export, compile) keeps one path for every batch. Weights are computed
    only under ``attention_weights()``.
    """
    scale = 1 / math.sqrt(head_dim or q.shape[-1])
    if _return_weights.get():
        weights = masked_softmax(q @ k.transpose(-1, -2) * scale, key_mask[:, None, None, :])
        return weights @ v, weights
    has_key = key_mask.any(-1)
    if key_mask.device.type == "cpu" and not tracing() and bool(has_key.all()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], scale=scale), None
    keep = key_mask.clone()
    keep[:, -1] |= ~has_key
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], scale=scale)
    return out * has_key[:, None, None, None].to(out.dtype), None


def tracing() -> bool:
    """A graph is being recorded (export, compile, TorchScript trace): a branch on the data would be fixed in it."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _check_heads(dim: int, heads: int) -> None:
    if heads < 1 or dim % heads:
        divisors = ", ".join(str(h) for h in range(1, dim + 1) if dim % h == 0)
        raise UserError(f"Attention width {dim} cannot be split into {heads} heads; choose one of: {divisors}.")


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query / key widths projected to ``dim``.

    The value and output projections have no bias, so a query that sees no real key returns exactly zero.
    With few queries per row (a short live history asking the video history, eq. 16) projecting every key
    and value costs more than the attention itself; then the projections move to the query side, as in
    ``TargetAttention`` (``fold_keys``; the same scores, to float rounding).
    """

    fold_keys: bool = True
    """Take the query-side form where it needs fewer FLOPs (False: always project the keys; for benchmarks)."""

    def __init__(self, query_dim: int, key_dim: int, dim: int, heads: int):
        super().__init__()
        _check_heads(dim, heads)
        self.heads = heads
        self.q = nn.Linear(query_dim, dim)
        self.k = nn.Linear(key_dim, dim)
        self.v = nn.Linear(key_dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        pad = next(p for p in range(LANES) if heads * (dim // heads + p) % LANES == 0)
        self.head_pad = pad if 8 * heads * pad <= dim else 0  # at most an eighth wider
        """Zero channels per head that make the heads a whole number of lanes wide (1 for FARM's 4 heads of 23),
        where that widens them by at most an eighth."""

    def forward(self, query: Tensor, keys: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """query [B, Lq, Dq], keys [B, Lk, Dk] -> output [B, Lq, dim], weights [B, heads, Lq, Lk] (under
        ``attention_weights()``, else None)."""
        if self.fold_keys and self._folding_is_cheaper(query.shape[1], *keys.shape[1:]):
            return self._folded(query, keys, key_mask)
        pad = self.head_pad if _pad_lanes.get() else 0
        q, k, v = (self._project(lin, x, pad) for lin, x in ((self.q, query), (self.k, keys), (self.v, keys)))
        out, weights = attention(q, k, v, key_mask, head_dim=self.q.out_features // self.heads)
        b, h, lq, d = out.shape
        w_out = self.out.weight
        if pad:  # zero columns where the heads' outputs have their zero channels
            w_out = F.pad(w_out.view(-1, h, d - pad), (0, pad)).view(-1, h * d)
        return F.linear(out.transpose(1, 2).reshape(b, lq, h * d), w_out), weights

    def _project(self, linear: nn.Linear, x: Tensor, pad: int) -> Tensor:
        """x through ``linear``, split into heads [B, heads, L, d + pad] whose last ``pad`` channels are zero.

        The padding rows of the weight make the product's output a whole number of vector lanes wide: on an
        AVX2 CPU, [41650, 92] x [92, 96] runs at 1.4x the rate of [92, 92] (55 -> 77 GFLOP/s), and the fused
        attention costs the same at head width 24 as at 23. Zero channels add nothing to any score or output.
        """
        if not pad:
            return self._split(linear(x))
        weight = F.pad(linear.weight.view(self.heads, -1, linear.in_features), (0, 0, 0, pad))
        bias = None if linear.bias is None else F.pad(linear.bias.view(self.heads, -1), (0, pad)).view(-1)
        return self._split(F.linear(x, weight.view(-1, linear.in_features), bias))

    def _split(self, x: Tensor) -> Tensor:
        b, length, dim = x.shape
        return x.view(b, length, self.heads, dim // self.heads).transpose(1, 2)

    def _folding_is_cheaper(self, n_queries: int, n_keys: int, key_dim: int) -> bool:
        """Multiply-adds per row: projecting keys and values against folding W_k, W_v into each head's query."""
        dim = self.k.out_features
        projected = 2 * n_keys * key_dim * dim + 2 * n_queries * n_keys * dim
        folded = 2 * n_queries * dim * key_dim + 2 * n_queries * self.heads * n_keys * key_dim
        return folded < projected

    def _folded(self, query: Tensor, keys: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        b, n_queries, _ = query.shape
        q = self.q(query).view(b, n_queries, self.heads, -1)
        heads_out, weights = query_side_attention(q, keys, key_mask, self.k.weight, self.k.bias, self.v.weight)
        return self.out(heads_out), weights if _return_weights.get() else None


def query_side_attention(
    q: Tensor, keys: Tensor, key_mask: Tensor, w_k: Tensor, b_k: Tensor | None, w_v: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Attention of per-head queries q [B, Lq, h, d] over unprojected keys [B, Lk, Dk] -> heads' outputs
    [B, Lq, h * d] (before the output projection), weights [B, h, Lq, Lk] (None where ``pool_keys`` has none).

    q_h . (W_k^h x_l) = (W_k^h' q_h) . x_l and sum_l w_l W_v^h x_l = W_v^h sum_l w_l x_l: the work per key is
    O(Dk) per query instead of projecting each key and value, O(Dk d h). A key bias adds q_h . b_k^h to every
    key of a query (softmax ignores it); it is added anyway, so the bias keeps its gradient.
    """
    b, n_queries, h, _ = q.shape
    q_keys, offset = fold_query(q, w_k, b_k)
    pooled, weights = pool_keys(q_keys, offset, keys, key_mask)
    heads_out = unfold_values(pooled, w_v, b, n_queries, h)
    return heads_out, None if weights is None else weights.view(b, h, n_queries, keys.shape[1])


def fold_query(q: Tensor, w_k: Tensor, b_k: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Queries q [B, Lq, h, d] times each head's W_k (and scale) -> [B, h * Lq, Dk], and the key bias's score
    offset [B, h * Lq, 1] (``query_side_attention``)."""
    b, n_queries, h, d = q.shape
    key_dim = w_k.shape[1]
    scale = 1 / math.sqrt(d)
    q_keys = torch.einsum("bqhd,hde->bhqe", q * scale, w_k.view(h, d, key_dim)).reshape(b, h * n_queries, key_dim)
    offset = None if b_k is None else torch.einsum("bqhd,hd->bhq", q * scale, b_k.view(h, d)).reshape(b, -1, 1)
    return q_keys, offset


def pool_keys(q_keys: Tensor, offset: Tensor | None, keys: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor | None]:
    """The folded queries' softmax-weighted sums of the keys [B, h * Lq, Dk], and the weights [B, h * Lq, Lk]
    (None in training outside ``attention_weights()``: nothing reads them there)."""
    keep = key_mask[:, None, :]
    if _return_weights.get() or not torch.is_grad_enabled() or not _KeyAttention.enabled:
        return _pool_keys(q_keys, offset, keys, keep)
    return _KeyAttention.apply(q_keys, offset, keys, keep), None


def unfold_values(pooled: Tensor, w_v: Tensor, b: int, n_queries: int, h: int) -> Tensor:
    """Each head's W_v on its pooled keys [B, h * Lq, Dk] -> heads' outputs [B, Lq, h * d]."""
    key_dim = pooled.shape[-1]
    d = w_v.shape[0] // h
    heads_out = torch.einsum("bhqe,hde->bqhd", pooled.view(b, h, n_queries, key_dim), w_v.view(h, d, key_dim))
    return heads_out.reshape(b, n_queries, h * d)


def _pool_keys(q_keys: Tensor, offset: Tensor | None, keys: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(q_keys keys^T + offset, masked by keep) keys, and the weights."""
    scores = torch.bmm(q_keys, keys.transpose(1, 2))
    weights = masked_softmax(scores if offset is None else scores + offset, keep)
    return torch.bmm(weights, keys), weights


class _KeyAttention(torch.autograd.Function):
    """``_pool_keys`` for training (the pooled keys only).

    Scores and weights are kept as [B, Lk, Q], keys times queries: on a CPU the products with the keys on the
    left run about 1.5x faster at these shapes (few queries, Lk = 50) than queries times transposed keys. The keys
    [B, Lk, Dk] are read by the scores and by the pooling, so autograd would write their gradient twice and add
    the two ([B, Lk, Dk] each: the size of a whole history); here both terms are one batched product,
    [grad_scores, weights] [q_keys; grad_pooled]. Same values and gradients as the plain ops
    (tests/model/test_layers.py).
    """

    enabled = True
    """False: the plain ops and autograd's backward (for benchmarks)."""

    @staticmethod
    def forward(ctx, q_keys: Tensor, offset: Tensor | None, keys: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        scores = torch.bmm(keys, q_keys.transpose(1, 2))  # [B, Lk, Q]
        if offset is not None:
            scores = scores + offset.transpose(1, 2)
        weights = masked_softmax(scores, keep.transpose(1, 2), dim=1)
        ctx.save_for_backward(q_keys, keys, weights)
        ctx.has_offset = offset is not None
        return torch.bmm(weights.transpose(1, 2), keys)

    @staticmethod
    def backward(ctx, grad_pooled: Tensor) -> tuple[Tensor, Tensor | None, Tensor, None]:  # type: ignore[override]
        q_keys, keys, weights = ctx.saved_tensors
        grad_pooled = grad_pooled.contiguous()
        grad_weights = torch.bmm(keys, grad_pooled.transpose(1, 2))  # [B, Lk, Q]
        # softmax backward; masked keys have weight 0, so their score gradient is 0 (as masked_fill's would be)
        grad_scores = weights * (grad_weights - (weights * grad_weights).sum(1, keepdim=True))
        grad_keys = torch.bmm(torch.cat([grad_scores, weights], 2), torch.cat([q_keys, grad_pooled], 1))
        grad_offset = grad_scores.sum(1).unsqueeze(-1) if ctx.has_offset else None
        return torch.bmm(grad_scores.transpose(1, 2), keys), grad_offset, grad_keys, None


class TargetAttention(nn.Module):
    """MH-Target-Att (eq. 11, 17): the candidate asks which history events matter for it.

    The query is x_cand projected to the sequence width, so the output has the sequence's width D.
    An all-padding history gives a zero vector.

    Same parameters and result as ``MultiHeadAttention`` with one query, computed without projecting the L keys
    and values (``query_side_attention``): the work per position is O(D) instead of O(D^2) (a third of FARM's
    CPU time). A key bias would add the same score to every position, which softmax ignores, so the keys have
    none.
    """

    def __init__(self, cand_dim: int, dim: int, heads: int):
        super().__init__()
        _check_heads(dim, heads)
        self.heads = heads
        self.q = nn.Linear(cand_dim, dim)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x_cand: Tensor, seq: Tensor | Trimmed, mask: Tensor, groups: LengthGroups | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x_cand [B, Dc], seq [B, L, D] -> [B, D], weights [B, heads, L].

        With ``groups`` (seq may then be ``Trimmed`` by them) each group attends over its trailing positions only
        (padding has no weight); the candidate's side is computed once for all rows, and no weights are kept.
        """
        b = x_cand.shape[0]
        q = self.q(x_cand).unflatten(-1, (self.heads, -1)).unsqueeze(1)  # [B, 1, h, d]
        q_keys, offset = fold_query(q, self.k.weight, None)  # [B, h, D]
        if groups is None:
            assert isinstance(seq, Tensor)
            pooled, weights = pool_keys(q_keys, offset, seq, mask)
        else:
            pooled = groups.apply(
                lambda keys, m, qk: pool_keys(qk, None, keys, m)[0],
                sequences=(seq, mask),
                rows=(q_keys,),
                output="rows",
            )
            weights = None
        heads_out = unfold_values(pooled, self.v.weight, b, 1, self.heads)
        return self.out(heads_out.squeeze(1)), None if weights is None else weights.view(b, self.heads, -1)


class SelfAttention(nn.Module):
    """MH-Self-Att (eq. 12) as a residual block, LayerNorm(x + Att(x)), with padded positions kept at zero."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(dim, dim, dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, weights = self.attn(x, x, mask)
        return self.norm(x + out) * mask.unsqueeze(-1).to(x.dtype), weights


class CrossAttention(nn.Module):
    """MH-Cross-Att (eq. 16): queries from one sequence, keys/values from another, both projected to ``dim``.

    Residual on the projected query and LayerNorm, as in a transformer decoder; query padding re-zeroed.
    """

    def __init__(self, query_dim: int, key_dim: int, dim: int, heads: int):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, dim)
        self.attn = MultiHeadAttention(dim, key_dim, dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: Tensor, query_mask: Tensor, keys: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> [B, Lq, dim], weights [B, heads, Lq, Lk]."""
        q = self.query_proj(query)
        out, weights = self.attn(q, keys, key_mask)
        if weights is not None:
            weights = weights * query_mask[:, None, :, None].to(weights.dtype)
        return self.norm(q + out) * query_mask.unsqueeze(-1).to(q.dtype), weights
