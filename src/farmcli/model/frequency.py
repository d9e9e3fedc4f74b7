"""Intra-domain frequency-aware module (Sec. 3.2, eq. 1-5, 9-10), one component per domain slot.

Sparse, valuable behaviours (like, comment, gift) are rare spikes along the history, high-frequency content that
smooth pooling averages away: re-weighting Low and High per user lets the model turn them up (Table 3).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.layers import masked_mean, mlp
from farmcli.registry import register


def low_pass_basis(
    length: int, c: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Orthonormal real basis U [L, r] of the c lowest DFT bins (r = 2c - 1 or fewer): U U^T V is exactly "rfft, keep
    c bins, irfft" (eq. 3-5) as two small products, faster than the FFT pair for L = 50 and defined in every dtype
    on every device (bf16 has no FFT on a CPU)."""
    return torch.tensor(_basis(length, c), dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _basis(length: int, c: int) -> np.ndarray:
    """Bin 0 is the constant, every other bin f a cosine and a sine (a cosine only at the Nyquist bin 2f = L); cached
    as plain float64 numpy data, so no tracer can leave a fake tensor in it."""
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


def frequency_split(v: Tensor, c: int, basis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Low[V] keeps the c lowest DFT bins along the sequence axis (eq. 3-5), High[V] = V - Low[V] (``basis``: U if
    at hand). Callers zero padded positions first: Low mixes every position into every other."""
    u = low_pass_basis(int(v.shape[1]), c, v.dtype, v.device) if basis is None else basis.to(v.dtype)
    low = u @ (u.transpose(0, 1) @ v)
    return low, v - low


@register("video_frequency", "dft")
@register("live_frequency", "dft")
class DFTFrequency(nn.Module):
    """F = g_low * Low[V] + g_high * High[V] (eq. 9), gates = Sigmoid(MLP(Mean(V))) in (0, 1) (eq. 10).

    Gates (alpha, beta) for video, (gamma, delta) for live: a scalar per sample [B] as in Table 3, or [B, D] with
    ``per_channel``. Mean(V) is over the history's events; Low[V] over the whole window, so for a history of a few
    events F is nearly g_high V. ``identity``: F = identity * V + eq. 9 (model/frequency_identity.py says why).
    ``gate_init``: the gates' starting value (Table 3 reads them near 0.9) instead of sigmoid(~0) = 0.5.
    """

    basis: Tensor
    """U [L, r] of ``low_pass_basis``: made with the module, moved with it, not saved."""

    @staticmethod
    def check_params(cutoff: int = 3, gate_init: float | None = None, **_) -> None:
        if cutoff < 1:
            raise UserError(f"The frequency cut-off c must be >= 1 (paper: 1, 3, 5, 7 or 9); got {cutoff}.")
        if gate_init is not None and not 0.0 < gate_init < 1.0:
            raise UserError(
                f"Bad setting: gate_init = {gate_init}: the gates' starting value, in (0, 1) (paper: ~0.9)."
            )

    def __init__(
        self,
        dim: int,
        length: int,
        cutoff: int = 3,
        per_channel: bool = False,
        gate_dims: Sequence[PositiveInt] = (64,),
        identity: float = 0.0,
        gate_init: float | None = None,
    ):
        super().__init__()
        self.check_params(cutoff=cutoff, gate_init=gate_init)
        self.cutoff = cutoff
        self.per_channel = per_channel
        self.identity = float(identity)
        self.gate = mlp(dim, [*gate_dims, 2 * dim if per_channel else 2])
        self.register_buffer("basis", low_pass_basis(length, cutoff), persistent=False)
        if gate_init is not None:  # the last layer's bias at the value's log-odds
            nn.init.constant_(cast(nn.Linear, self.gate[-1]).bias, math.log(gate_init / (1.0 - gate_init)))

    def forward(self, v: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        g_low, g_high = self.gates(masked_mean(v, mask))  # (10) [B, 1] or [B, D]
        basis = self.basis if v.shape[1] == self.basis.shape[0] else None  # another L: made for it
        low, high = frequency_split(v, self.cutoff, basis)  # (3-5)
        f = g_low.unsqueeze(1) * low + g_high.unsqueeze(1) * high  # (9)
        if self.identity:
            f = f + self.identity * v
        f = f * mask.unsqueeze(-1).to(low.dtype)
        if not self.per_channel:
            g_low, g_high = g_low.squeeze(-1), g_high.squeeze(-1)
        return f, (g_low, g_high)

    def gates(self, mean: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 10 from the pooled history [B, D]: (g_low, g_high), each [B, 1] or [B, D] (shared with model/cpu/)."""
        g_low, g_high = torch.sigmoid(self.gate(mean)).chunk(2, dim=-1)
        return g_low, g_high


@register("video_frequency", "none")
@register("live_frequency", "none")
class NoFrequency(nn.Module):
    """w/o V-FA / L-FA: V passes through unchanged, so target attention sees the raw history."""

    def __init__(self, dim: int, length: int):
        super().__init__()

    def forward(self, v: Tensor, mask: Tensor) -> tuple[Tensor, None]:
        return v, None
