"""What FARM's forward pass returns, whichever backend computed it."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class FarmOutput:
    logits: Tensor
    """[B, 6] in TASKS order (click, effective_view, long_view, like, comment, gift)."""
    cl_loss: Tensor | None
    """L_cl of eq. 14; None when align is ``none``."""
    aux: dict[str, Tensor] = field(default_factory=dict)
    """With ``return_aux``: h_video, h_live, the gates alpha, beta (video) and gamma, delta (live),
    cross_attention [B, heads, L_live, L_video], video/live_target_attention [B, heads, L], as present."""
