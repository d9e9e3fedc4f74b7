"""Cross-domain preference align (Sec. 3.3.1, eq. 13-15): pull a user's live and video preferences together.

Live exposure is a tenth of video exposure, so the live preference is the noisy one; contrastive learning
anchors it on the same user's video preference (positive) against other users' (negatives) in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.layers import Pooling, masked_mean, mlp
from farmcli.registry import register


def info_nce(h_live: Tensor, h_video: Tensor, user_id: Tensor, tau: float, valid: Tensor | None = None) -> Tensor:
    """L_cl of eq. 14 with live as the anchor: row i's positive is h_video[i], the rest of the batch negatives.

    A user's other samples are not negatives, so same-user pairs (i, j != i) leave the denominator. Rows with
    ``valid`` False (a history missing on either side: nothing to align) add nothing and are no one's negative.
    """
    logits = h_live @ h_video.T / tau
    n = logits.shape[0]
    diagonal = torch.eye(n, dtype=torch.bool, device=logits.device)
    excluded = user_id[:, None] == user_id[None, :]
    if valid is not None:
        excluded = excluded | ~valid[None, :]
    logits = logits.masked_fill(excluded & ~diagonal, float("-inf"))  # the positive always stays, so no NaN
    per_row = F.cross_entropy(logits, torch.arange(n, device=logits.device), reduction="none")
    if valid is None:
        return per_row.mean()
    weight = valid.to(per_row.dtype)
    return (per_row * weight).sum() / weight.sum().clamp(min=1.0)


@register("align", "infonce")
class InfoNCEAlign(nn.Module):
    """h = MLP(Mean(V^)) per domain (eq. 13), then InfoNCE at temperature tau (eq. 14). ``normalize`` (default)
    L2-normalises h, so sim is the cosine that Fig. 3 plots; tau = 0.07 assumes it."""

    uses_preference = True

    @staticmethod
    def check_params(dims: Sequence[int] = (128, 64), tau: float = 0.07, **_) -> None:
        if len(dims) == 0:
            raise UserError(
                "Bad setting: model.align.dims = []: give at least one layer width (the last one is the width of "
                "the video and live preferences that InfoNCE compares), e.g. [128, 64]."
            )
        if not tau > 0:
            raise UserError(f"Bad setting: model.align.tau = {tau}: the temperature must be > 0 (the paper: 0.07).")

    def __init__(
        self,
        video_dim: int,
        live_dim: int,
        dims: Sequence[PositiveInt] = (128, 64),
        tau: float = 0.07,
        normalize: bool = True,
    ):
        super().__init__()
        self.check_params(dims=dims, tau=tau)
        self.tau = tau
        self.normalize = normalize
        self.video_mlp = mlp(video_dim, dims)
        self.live_mlp = mlp(live_dim, dims)

    def forward(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, user_id: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        h_video, h_live = self.preferences(video, live, video_mask, live_mask)
        loss = self.contrastive_loss(h_video, h_live, video_mask, live_mask, user_id)
        return loss, {"h_video": h_video, "h_live": h_live}

    def preferences(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, mean: Pooling = masked_mean
    ) -> tuple[Tensor, Tensor]:
        """Eq. 13: h = MLP(Mean(V^)) per domain [B, dims[-1]]; the CPU backend passes its own (equal) ``mean``."""
        h_video = self.video_mlp(mean(video, video_mask))
        h_live = self.live_mlp(mean(live, live_mask))
        if self.normalize:
            h_video, h_live = F.normalize(h_video, dim=-1), F.normalize(h_live, dim=-1)
        return h_video, h_live

    def contrastive_loss(
        self, h_video: Tensor, h_live: Tensor, video_mask: Tensor, live_mask: Tensor, user_id: Tensor
    ) -> Tensor:
        """Eq. 14 over the rows that have both histories (a row with one side empty has nothing to align)."""
        return info_nce(h_live, h_video, user_id, self.tau, video_mask.any(1) & live_mask.any(1))


@register("align", "none")
class NoAlign(nn.Module):
    """w/o C-PA: no contrastive loss, no parameters."""

    uses_preference = False

    def __init__(self, video_dim: int, live_dim: int):
        super().__init__()

    def forward(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, user_id: Tensor
    ) -> tuple[None, dict[str, Tensor]]:
        return None, {}
