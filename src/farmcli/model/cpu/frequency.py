"""The CPU backend's frequency module (eq. 9-10): ``DFTFrequency`` in two passes over V, on trailing positions.

g_low Low + g_high (V - Low) = g_high V + (g_low - g_high) Low, the mask folded into the small [B, L, r] factor of
Low = U (U^T V): one scaled copy of V plus one batched product in place, where the reference takes five passes. A
history cut to its last l positions needs only those rows of U (V is zero at padding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from farmcli.model.cpu.attention import masked_mean
from farmcli.model.frequency import DFTFrequency, NoFrequency, low_pass_basis


def runs_on_trailing(m: Any) -> bool:
    """Whether this file computes ``m``'s F: ``none`` and ``DFTFrequency`` (``dft``, ``dft_identity``) as they are; a
    subclass with a forward of its own (a plugin) gets the padded history and its own forward, as in the reference."""
    return isinstance(m, NoFrequency) or (isinstance(m, DFTFrequency) and type(m).forward is DFTFrequency.forward)


def frequency(m: Any, v: Tensor, mask: Tensor, length: int | None = None) -> Tensor:
    """F of eq. 9 for V [B, l, D], the last l positions of windows of ``length`` (None: l) whose first
    ``length - l`` positions are padding; ``runs_on_trailing(m)`` holds. With ``identity`` (dft_identity),
    F = (g_high + identity) V + (g_low - g_high) Low: the identity joins V's scale, no pass of its own."""
    if isinstance(m, NoFrequency):
        return v
    assert isinstance(m, DFTFrequency)
    g_low, g_high = m.gates(masked_mean(v, mask))  # (10) [B, 1] or [B, D]: the mean of the events, at any l
    g_v, g_mix = g_high + m.identity, g_low - g_high  # V's and Low's scales
    keep = mask.to(v.dtype)
    u = trailing_basis(m, v, length)
    if m.per_channel:
        low = u @ (u.transpose(0, 1) @ v)
        keep3 = keep.unsqueeze(-1)
        return torch.addcmul(v * (g_v.unsqueeze(1) * keep3), low, g_mix.unsqueeze(1) * keep3)
    g_v, g_mix = g_v.squeeze(-1), g_mix.squeeze(-1)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (v, g_v, g_mix)):
        return _GatedSplit.apply(v, keep, g_v, g_mix, u)
    return _gated_split(v, keep, g_v, g_mix, u, u.transpose(0, 1) @ v)


def trailing_basis(m: DFTFrequency, v: Tensor, length: int | None) -> Tensor:
    """The basis rows of v's positions: v [B, l, D] holds the last l positions of a window of ``length``."""
    n = v.shape[1]
    full = length or n
    basis = m.basis if m.basis.shape[0] == full else low_pass_basis(full, m.cutoff, v.dtype, v.device)
    return basis.to(v.dtype)[full - n :]


def _gated_split(v: Tensor, keep: Tensor, g_v: Tensor, g_mix: Tensor, u: Tensor, coeffs: Tensor) -> Tensor:
    """keep * (g_v V + g_mix U coeffs): one pass over V, one product added in place."""
    left = keep.unsqueeze(-1) * u * g_mix[:, None, None]  # [B, L, r]
    return (v * (keep * g_v[:, None]).unsqueeze(-1)).baddbmm_(left, coeffs)


class _GatedSplit(torch.autograd.Function):
    """``_gated_split`` whose backward makes one [B, L, D] tensor where autograd would take about seven passes: the
    gates' gradients are batched dot products, Low's share of V's added in place by the small U (U_mix^T grad)."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, keep: Tensor, g_v: Tensor, g_mix: Tensor, u: Tensor) -> Tensor:
        coeffs = u.transpose(0, 1) @ v  # [B, r, D]
        ctx.save_for_backward(v, keep, g_v, g_mix, u, coeffs)
        return _gated_split(v, keep, g_v, g_mix, u, coeffs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, Tensor, Tensor, None]:
        v, keep, g_v, g_mix, u, coeffs = ctx.saved_tensors
        b, length, _ = grad.shape
        grad = grad.contiguous()
        kept_u = keep.unsqueeze(-1) * u  # [B, L, r]
        grad_g_v = torch.bmm(grad.view(b, 1, -1), v.reshape(b, -1, 1)).view(b)  # keep * V = V
        grad_g_mix = (torch.bmm(grad, coeffs.transpose(1, 2)) * kept_u).sum((1, 2))
        grad_coeffs = torch.bmm((kept_u * g_mix[:, None, None]).transpose(1, 2), grad)  # [B, r, D]
        grad_v = grad * (keep * g_v[:, None]).unsqueeze(-1)
        grad_v.baddbmm_(u.expand(b, length, u.shape[1]), grad_coeffs)
        return grad_v, None, grad_g_v, grad_g_mix, None
