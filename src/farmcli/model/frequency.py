"""Intra-domain frequency-aware module (Sec. 3.2, eq. 1-5, 9-10), one component per domain slot.

Sparse, valuable behaviours (like, comment, gift) are rare spikes along the history: high-frequency content
that a smooth pooling averages away. Splitting V into Low and High and re-weighting them per user lets the
model turn the spikes up (Table 3: the learned high-frequency gates are high for a low-active user).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.layers import masked_mean, mlp
from farmcli.registry import register


def frequency_split(v: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Low[V] keeps the c lowest DFT bins along the sequence axis (eq. 3-5); High[V] = V - Low[V].

    Unitary ("ortho") transform; half precision is lifted to float32, which FFTs take on every device.
    Callers zero padded positions first: the transform mixes every position into every other.
    """
    x = v.to(torch.promote_types(v.dtype, torch.float32))
    spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
    keep = torch.zeros(spectrum.shape[1], dtype=x.dtype, device=x.device)
    keep[: max(0, min(c, spectrum.shape[1]))] = 1.0
    low = torch.fft.irfft(spectrum * keep[None, :, None], n=x.shape[1], dim=1, norm="ortho")
    return low.to(v.dtype), (x - low).to(v.dtype)


@register("video_frequency", "dft")
@register("live_frequency", "dft")
class DFTFrequency(nn.Module):
    """F = g_low * Low[V] + g_high * High[V] (eq. 9), gates = Sigmoid(MLP(Mean(V))) in (0, 1) (eq. 10).

    The gates are (alpha, beta) on the video side and (gamma, delta) on the live side: one scalar per sample,
    as Table 3 reports them, or one per channel with ``per_channel=True``.
    """

    def __init__(self, dim: int, cutoff: int = 3, per_channel: bool = False, gate_dims: Sequence[int] = (64,)):
        super().__init__()
        if cutoff < 1:
            raise UserError(f"The frequency cut-off c must be >= 1 (paper: 1, 3, 5, 7 or 9); got {cutoff}.")
        self.cutoff = cutoff
        self.per_channel = per_channel
        self.gate = mlp(dim, [*gate_dims, 2 * dim if per_channel else 2])

    def forward(self, v: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        low, high = frequency_split(v, self.cutoff)
        g_low, g_high = torch.sigmoid(self.gate(masked_mean(v, mask))).chunk(2, dim=-1)  # [B, 1] or [B, D]
        f = g_low.unsqueeze(1) * low + g_high.unsqueeze(1) * high
        f = f * mask.unsqueeze(-1).to(f.dtype)  # Low spreads into the padding; cut it off again
        if not self.per_channel:
            g_low, g_high = g_low.squeeze(-1), g_high.squeeze(-1)
        return f, (g_low, g_high)


@register("video_frequency", "none")
@register("live_frequency", "none")
class NoFrequency(nn.Module):
    """w/o V-FA / L-FA: V passes through unchanged, so target attention sees the raw history."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, v: Tensor, mask: Tensor) -> tuple[Tensor, None]:
        return v, None
