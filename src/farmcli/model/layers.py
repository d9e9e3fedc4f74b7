"""Building blocks shared by the slots: masked pooling, multi-head attention that cannot NaN, MLPs.

Histories are left-padded; ``mask`` is [B, L] bool, True at real events. Every block keeps padded positions at
exactly zero and turns an all-padding history into zeros (never NaN, never a bias vector). Plain PyTorch on
purpose: the same code runs on CPU and GPU, in fp32 and under bf16 autocast, and traces for export and compile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.errors import UserError

Pooling = Callable[[Tensor, Tensor], Tensor]
"""A pooling over a history's positions: (x [B, L, D], mask [B, L]) -> [B, D]."""


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real positions of x [B, L, D] -> [B, D]; an all-padding row gives zeros."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


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
    """Softmax over ``dim`` where ``keep`` (broadcastable bool) is True; a row with nothing kept gives zeros, not
    NaN (the dtype's most negative value instead of -inf, then the weights times the mask)."""
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * keep.to(scores.dtype)


_return_weights: ContextVar[bool] = ContextVar("farm_return_attention_weights", default=False)


@contextmanager
def attention_weights(enabled: bool = True) -> Iterator[None]:
    """Inside this block attention also returns its weights (for analysis: Fig. 4); outside, the fused kernel runs."""
    token = _return_weights.set(enabled)
    try:
        yield
    finally:
        _return_weights.reset(token)


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention, [B, H, L, d] with a key mask [B, Lk]; weights under ``attention_weights()``."""
    if _return_weights.get():
        weights = masked_softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, key_mask[:, None, None, :])
        return weights @ v, weights
    return fused_attention(q, k, v, key_mask), None


def fused_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, scale: float | None = None) -> Tensor:
    """``F.scaled_dot_product_attention`` would give NaN for a query with no real key, so such rows attend to their
    last position and are then zeroed: ``masked_softmax``'s zero output, with no branch on the data."""
    has_key = key_mask.any(-1)
    keep = torch.cat([key_mask[:, :-1], key_mask[:, -1:] | ~has_key[:, None]], dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], scale=scale)
    return out * has_key[:, None, None, None].to(out.dtype)


def check_heads(dim: int, heads: int, heads_key: str | None = None, dim_key: str | None = None) -> None:
    """An attention of width ``dim`` splits it into ``heads`` equal heads (``*_key``: the settings, for the message)."""
    if heads < 1 or dim % heads:
        divisors = ", ".join(str(h) for h in range(1, dim + 1) if dim % h == 0)
        what = f"Bad setting: {heads_key} = {heads}: attention" if heads_key else "Attention"
        raise UserError(
            f"{what} width {dim}{f' ({dim_key})' if dim_key else ''} cannot be split into {heads} heads; "
            f"choose one of: {divisors}."
        )


class MultiHeadAttention(nn.Module):
    """Multi-head attention to width ``dim``; no value or output bias, so a query with no real key returns zero."""

    def __init__(self, query_dim: int, key_dim: int, dim: int, heads: int, key_bias: bool = True):
        super().__init__()
        check_heads(dim, heads)
        self.heads = heads
        self.q = nn.Linear(query_dim, dim)
        self.k = nn.Linear(key_dim, dim, bias=key_bias)
        self.v = nn.Linear(key_dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, query: Tensor, keys: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """query [B, Lq, Dq], keys [B, Lk, Dk] -> [B, Lq, dim], weights [B, heads, Lq, Lk] or None."""
        q, k, v = self._split(self.q(query)), self._split(self.k(keys)), self._split(self.v(keys))
        out, weights = attention(q, k, v, key_mask)
        return self.out(out.transpose(1, 2).flatten(2)), weights

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, heads, L, d]


class TargetAttention(MultiHeadAttention):
    """MH-Target-Att (eq. 11, 17): the candidate x_cand asks which history events matter for it. The keys have no
    bias: it would add the same score to every position, which softmax ignores."""

    def __init__(self, cand_dim: int, dim: int, heads: int):
        super().__init__(cand_dim, dim, dim, heads, key_bias=False)

    def forward(self, x_cand: Tensor, seq: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:  # type: ignore[override]
        """x_cand [B, Dc], seq [B, L, D] -> [B, D], weights [B, heads, L]."""
        out, weights = super().forward(x_cand.unsqueeze(1), seq, mask)
        return out.squeeze(1), None if weights is None else weights.squeeze(2)


def residual_norm(norm: nn.LayerNorm, x: Tensor, attended: Tensor, mask: Tensor) -> Tensor:
    """LayerNorm(x + Att(x)) with padding re-zeroed: the transformer block around eq. 12 and 16 (docs/DESIGN.md,
    "Where we depart" 1), shared with the CPU backend."""
    return norm(x + attended) * mask.unsqueeze(-1).to(x.dtype)


class SelfAttention(nn.Module):
    """MH-Self-Att (eq. 12) as a residual block, LayerNorm(x + Att(x)), with padded positions kept at zero."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(dim, dim, dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        out, weights = self.attn(x, x, mask)
        return residual_norm(self.norm, x, out, mask), weights


class CrossAttention(nn.Module):
    """MH-Cross-Att (eq. 16): queries from one sequence, keys/values from another, both projected to ``dim``;
    residual on the projected query and LayerNorm, as in a transformer decoder."""

    def __init__(self, query_dim: int, key_dim: int, dim: int, heads: int):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, dim)
        self.attn = MultiHeadAttention(dim, key_dim, dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, query: Tensor, query_mask: Tensor, keys: Tensor, key_mask: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """-> [B, Lq, dim], weights [B, heads, Lq, Lk] (under ``attention_weights()``)."""
        q = self.query_proj(query)
        out, weights = self.attn(q, keys, key_mask)
        if weights is not None:
            weights = weights * query_mask[:, None, :, None].to(weights.dtype)
        return residual_norm(self.norm, q, out, query_mask), weights


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass; ``scale`` times its gradient in the backward pass (0: a stop-gradient)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return x.detach() + scale * (x - x.detach())
