"""Cross-domain preference fuse (Sec. 3.3.2, eq. 16-17): read the rich video history through live eyes.

Each live event queries the video history (eq. 16), so a sparse live history borrows from the dense video one;
the candidate then picks what matters for it (eq. 17): F^_cross, the head's third input (eq. 18).
"""

from __future__ import annotations

from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.model.layers import CrossAttention, TargetAttention, check_heads
from farmcli.registry import register


@register("fuse", "cross_attention")
class CrossAttentionFuse(nn.Module):
    """V^_cross = MH-Cross-Att(Q = V^_live, K = V = V^_video); F^_cross = MH-Target-Att(x_cand, V^_cross), both of
    width ``dim`` (live D2 and video D1 are projected to it)."""

    uses_preference = True

    @staticmethod
    def check_params(dim: int = 64, heads: int = 4, **_) -> None:
        check_heads(dim, heads, "model.fuse.heads", "model.fuse.dim")

    def __init__(self, video_dim: int, live_dim: int, cand_dim: int, dim: PositiveInt = 64, heads: PositiveInt = 4):
        super().__init__()
        self.check_params(dim=dim, heads=heads)
        self.out_dim = dim
        self.cross = CrossAttention(live_dim, video_dim, dim, heads)
        self.target = TargetAttention(cand_dim, dim, heads)

    def forward(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, x_cand: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        v_cross, weights = self.cross(live, live_mask, video, video_mask)  # (16) [B, L_live, dim]
        f_cross, _ = self.target(x_cand, v_cross, live_mask)  # (17) [B, dim]
        return f_cross, {"cross_attention": weights}  # weights [B, heads, L_live, L_video] (Fig. 4)


@register("fuse", "none")
class NoFuse(nn.Module):
    """w/o C-PF: no F^_cross input to the head, no parameters."""

    uses_preference = False
    out_dim = 0

    def __init__(self, video_dim: int, live_dim: int, cand_dim: int):
        super().__init__()

    def forward(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, x_cand: Tensor
    ) -> tuple[None, dict[str, Tensor]]:
        return None, {}
