"""``dft_identity``: the frequency module of eq. 9-10 with each event's own embedding kept beside the bands.

    F = identity * V + g_low * Low[V] + g_high * High[V]      (identity = 0: eq. 9 as the paper writes it)

Why (docs/QUALITY.md, issue 27): trained on the simulated data, FARM's live gates shut the high band (delta
~0.05), and since for a short live history High[V] is nearly all of V, the live target attention (eq. 11) is
left with a smoothed history in which the candidate's own earlier events (the within-user signal) can no longer
be found: FARM's UAUC falls below its base's. With ``identity = 1`` the attention always sees which event each
position was, and the gates re-weight the bands on top of it (F = (1 + g_high) V + (g_low - g_high) Low[V]).

``gate_init`` starts the gates at a value (the paper's Table 3 reads them near 0.9) instead of sigmoid(~0) =
0.5: the last gate layer's bias is set to its log-odds. ``identity = 0`` and ``gate_init = None`` give
``dft`` exactly (the same gate MLP, split and mask), through the reference path.

The CPU backend (model/cpu/frequency.py) runs it on a live history cut to its trailing positions, as ``dft``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.frequency import DFTFrequency
from farmcli.registry import register


@register("video_frequency", "dft_identity")
@register("live_frequency", "dft_identity")
class IdentityDFTFrequency(nn.Module):
    """F = identity * V + g_low Low[V] + g_high High[V]; gates as ``dft`` (eq. 10), optionally started at
    ``gate_init``. Gates are returned as ``dft`` returns them (Table 3's alpha, beta / gamma, delta)."""

    @staticmethod
    def check_params(gate_init: float | None = None, **_) -> None:
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
        gate_mean: Literal["events", "window"] = "events",
        identity: float = 1.0,
        gate_init: float | None = None,
    ):
        super().__init__()
        self.check_params(gate_init=gate_init)
        self.identity = float(identity)
        self.dft = DFTFrequency(dim, length, cutoff, per_channel, gate_dims, gate_mean)
        if gate_init is not None:
            last = self.dft.gate[-1]
            assert isinstance(last, nn.Linear)
            with torch.no_grad():
                last.bias.fill_(math.log(gate_init / (1.0 - gate_init)))

    def forward(self, v: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        f, gates = self.dft(v, mask)
        if self.identity:
            f = f + self.identity * v * mask.unsqueeze(-1).to(v.dtype)
        return f, gates
