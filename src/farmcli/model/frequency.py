"""Intra-domain frequency-aware module (Sec. 3.2, eq. 1-5, 9-10), one component per domain slot.

Sparse, valuable behaviours (like, comment, gift) are rare spikes along the history: high-frequency content
that a smooth pooling averages away. Splitting V into Low and High and re-weighting them per user lets the
model turn the spikes up (Table 3: the learned high-frequency gates are high for a low-active user).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.layers import masked_mean, mlp
from farmcli.registry import register


def low_pass_basis(
    length: int, c: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Orthonormal real basis [L, r] of the c lowest DFT bins of a length-L sequence (r = 2c - 1 or fewer).

    Bin 0 is the constant; every other kept bin f gives a cosine and a sine (only a cosine at the Nyquist bin
    2f = L). Projecting on it is exactly "rfft, keep c bins, irfft" (eq. 3-5), done as two small matmuls:
    3-5x faster than the FFT pair on a CPU for L = 50, and the same on every device and dtype.
    """
    return torch.tensor(_basis(length, c), dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _basis(length: int, c: int) -> np.ndarray:
    """The basis as a float64 numpy array: cached as plain data, so no tracer (torch.export, jit) can leave a
    fake tensor in the cache."""
    n = np.arange(length, dtype=np.float64)
    cols = []
    for f in range(max(0, min(c, length // 2 + 1))):
        if f == 0:
            cols.append(np.full(length, 1 / math.sqrt(length)))
        elif 2 * f == length:
            cols.append(np.cos(math.pi * n) / math.sqrt(length))
        else:
            cols += [
                np.cos(2 * math.pi * f * n / length) * math.sqrt(2 / length),
                np.sin(2 * math.pi * f * n / length) * math.sqrt(2 / length),
            ]
    basis = np.stack(cols, axis=1) if cols else np.zeros((length, 0))
    basis.setflags(write=False)
    return basis


def frequency_split(v: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Low[V] keeps the c lowest DFT bins along the sequence axis (eq. 3-5); High[V] = V - Low[V].

    Computed as the projection U U^T V on the real basis of those bins (``low_pass_basis``), which equals the
    unitary FFT form to float rounding. Callers zero padded positions first: Low mixes every position into
    every other.
    """
    low = low_pass(v, c)
    return low, v - low


def low_pass(v: Tensor, c: int, length: int | None = None) -> Tensor:
    """Low[V] alone (eq. 3-5): the projection U U^T V of ``frequency_split``; ``length``: see ``trailing_basis``."""
    u = trailing_basis(v, c, length)
    return u @ (u.transpose(0, 1) @ v)


def trailing_basis(v: Tensor, c: int, length: int | None) -> Tensor:
    """The basis rows of v's positions: v [B, l, D] holds the last l positions of a window of ``length`` (None:
    l) whose earlier positions are padding. U^T V then needs only those rows of U, and Low[V] at them is the
    same as at full length (V is zero at padding)."""
    n = v.shape[1]
    return low_pass_basis(length or n, c, v.dtype, v.device)[(length or n) - n :]


def gated_split(v: Tensor, keep: Tensor, g_high: Tensor, g_mix: Tensor, c: int, length: int | None = None) -> Tensor:
    """keep * (g_high V + g_mix Low[V]) for per-sample gates g_high, g_mix [B] and keep [B, L] (eq. 9 with
    g_mix = g_low - g_high); V zero at padding (Low mixes every position into every other).

    Low[V] = U (U^T V) is never written out: the mask and g_mix go into the small [B, L, r] left factor, so the
    whole sum is one scaled copy of V plus one batched product added in place.
    """
    u = trailing_basis(v, c, length)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (v, g_high, g_mix)):
        return _GatedSplit.apply(v, keep, g_high, g_mix, u)
    return _gated_split(v, keep, g_high, g_mix, u, u.transpose(0, 1) @ v)


def _gated_split(v: Tensor, keep: Tensor, g_high: Tensor, g_mix: Tensor, u: Tensor, coeffs: Tensor) -> Tensor:
    """One pass over V (scaled by keep * g_high) and one product added in place: no copy of V masked first."""
    left = keep.unsqueeze(-1) * u * g_mix[:, None, None]  # [B, L, r]
    return (v * (keep * g_high[:, None]).unsqueeze(-1)).baddbmm_(left, coeffs)


class _GatedSplit(torch.autograd.Function):
    """``gated_split`` for training, with a backward that makes one [B, L, D] tensor (the input gradient).

    Autograd would write the gradient of Low, of each coefficient product and of V separately and add them
    (about seven passes over a [1024, 50, 92] history); here the gates' gradients are batched dot products
    and Low's share of V's gradient is added in place by the small product U (U_mix^T grad).
    """

    @staticmethod
    def forward(ctx, v: Tensor, keep: Tensor, g_high: Tensor, g_mix: Tensor, u: Tensor) -> Tensor:  # type: ignore[override]
        coeffs = u.transpose(0, 1) @ v  # [B, r, D]
        ctx.save_for_backward(v, keep, g_high, g_mix, u, coeffs)
        return _gated_split(v, keep, g_high, g_mix, u, coeffs)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, Tensor, Tensor, None]:  # type: ignore[override]
        v, keep, g_high, g_mix, u, coeffs = ctx.saved_tensors
        b, length, _ = grad.shape
        grad = grad.contiguous()
        kept_u = keep.unsqueeze(-1) * u  # [B, L, r]
        grad_g_high = torch.bmm(grad.view(b, 1, -1), v.reshape(b, -1, 1)).view(b)  # keep * V = V
        grad_g_mix = (torch.bmm(grad, coeffs.transpose(1, 2)) * kept_u).sum((1, 2))
        grad_coeffs = torch.bmm((kept_u * g_mix[:, None, None]).transpose(1, 2), grad)  # [B, r, D]
        grad_v = grad * (keep * g_high[:, None]).unsqueeze(-1)
        grad_v.baddbmm_(u.expand(b, length, u.shape[1]), grad_coeffs)
        return grad_v, None, grad_g_high, grad_g_mix, None


@register("video_frequency", "dft")
@register("live_frequency", "dft")
class DFTFrequency(nn.Module):
    """F = g_low * Low[V] + g_high * High[V] (eq. 9), gates = Sigmoid(MLP(Mean(V))) in (0, 1) (eq. 10).

    The gates are (alpha, beta) on the video side and (gamma, delta) on the live side: one scalar per sample,
    as Table 3 reports them, or one per channel with ``per_channel=True``.
    """

    trailing_positions = True
    """Takes a history cut to its trailing positions, with ``length`` the full window (``trailing_basis``)."""

    def __init__(self, dim: int, cutoff: int = 3, per_channel: bool = False, gate_dims: Sequence[int] = (64,)):
        super().__init__()
        if cutoff < 1:
            raise UserError(f"The frequency cut-off c must be >= 1 (paper: 1, 3, 5, 7 or 9); got {cutoff}.")
        self.cutoff = cutoff
        self.per_channel = per_channel
        self.gate = mlp(dim, [*gate_dims, 2 * dim if per_channel else 2])

    def forward(self, v: Tensor, mask: Tensor, length: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        g_low, g_high = torch.sigmoid(self.gate(masked_mean(v, mask))).chunk(2, dim=-1)  # [B, 1] or [B, D]
        # g_low Low + g_high (V - Low) = g_high V + (g_low - g_high) Low, with the mask folded into the
        # coefficients (Low spreads into the padding): two passes over [B, L, D], not five.
        keep = mask.to(v.dtype)
        if self.per_channel:
            low = low_pass(v, self.cutoff, length)
            keep3 = keep.unsqueeze(-1)
            f = torch.addcmul(v * (g_high.unsqueeze(1) * keep3), low, (g_low - g_high).unsqueeze(1) * keep3)
            return f, (g_low, g_high)
        g_low, g_high = g_low.squeeze(-1), g_high.squeeze(-1)
        return gated_split(v, keep, g_high, g_low - g_high, self.cutoff, length), (g_low, g_high)


@register("video_frequency", "none")
@register("live_frequency", "none")
class NoFrequency(nn.Module):
    """w/o V-FA / L-FA: V passes through unchanged, so target attention sees the raw history."""

    trailing_positions = True

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, v: Tensor, mask: Tensor, length: int | None = None) -> tuple[Tensor, None]:
        return v, None
