"""``cross_attention_null``: the fuse of eq. 16-17 with one learned "null" live event beside the user's own.

A research plugin (issue 27; moved out of the library in issue 35: experiments/README.md). What it answered,
docs/notebook/QUALITY.md: "Second round on `default`: who has a live history" (the null event: +0.43 AUC over the base,
UAUC -0.59), "The choice of defaults" (not chosen: it costs the per-user ranking on every seed) and "After the
ablation: where the fuse costs" (``null: output`` / ``candidate_output``: the zero rows are most of what the
fuse costs, and no fill makes it add over leaving it out). Loaded as any plugin: ``--model.fuse
experiments.plugins.fuse_null.NullEventCrossAttentionFuse``, or ``--model.fuse cross_attention_null`` with the
repository root on the path (``PYTHONPATH=.``), where ``farm`` imports this module for that name.

Eq. 16 takes its queries from the live history, so a user without a live event (on the simulated `default`,
half of the low-active users' samples) gets F^_cross = 0: the cross-domain transfer the paper motivates with
the low-active users reaches none of those who need it most. A learned event in V^_live's space, present in
every row, queries the video history too; for a user without live events F^_cross is what it read there, for
the others it is one more position of eq. 17's target attention. ``null: output`` leaves eq. 16-17 as written
and gives a user without live events a learned F^_cross instead of zero: it asks whether the zero rows alone
are what the fuse costs them.

The CPU backend runs it on the padded history, as any fuse it does not know (model/cpu/farm.py).
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.model.fuse import CrossAttentionFuse
from farmcli.registry import register


@register("fuse", "cross_attention_null")
class NullEventCrossAttentionFuse(nn.Module):
    """``cross_attention`` over [null event; V^_live]. ``null = "learned"``: the null event is a learned [D2]
    vector, the same for every row; ``"candidate"``: a linear map of x_cand, so the candidate itself reads the
    video history (a per-candidate F^_cross also for a user without live events); ``"output"``: no null event,
    a learned [dim] F^_cross for the rows without a live event; ``"candidate_output"``: no null event for a
    user with live events, the candidate's event alone for the others. The analysis outputs keep the paper's shape:
    ``cross_attention`` [B, heads, L_live, L_video] for the user's own events, ``null_attention`` [B, heads,
    L_video] for the null event's reading of the video history."""

    uses_preference = True
    check_params = staticmethod(CrossAttentionFuse.check_params)

    def __init__(
        self,
        video_dim: int,
        live_dim: int,
        cand_dim: int,
        dim: PositiveInt = 64,
        heads: PositiveInt = 4,
        null: Literal["learned", "candidate", "output", "candidate_output"] = "learned",
    ):
        super().__init__()
        self.fuse = CrossAttentionFuse(video_dim, live_dim, cand_dim, dim, heads)
        self.out_dim = dim
        self.null: nn.Parameter | nn.Linear = (
            nn.Linear(cand_dim, live_dim)
            if null.startswith("candidate")
            else nn.Parameter(torch.randn(dim if null == "output" else live_dim) * 0.1)
        )
        self.only_without_live = null.endswith("output")

    def forward(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, x_cand: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.only_without_live:  # eq. 16-17 as written; a user without live events gets the null's F^_cross
            f_cross, aux = self.fuse(video, live, video_mask, live_mask, x_cand)
            if isinstance(self.null, nn.Parameter):
                alone = self.null.to(f_cross.dtype).expand_as(f_cross)
            else:  # the candidate's event reads the video history (eq. 16) and is all eq. 17 sees
                event = self.null(x_cand).to(live.dtype).unsqueeze(1)
                alone = self.fuse(video, event, video_mask, torch.ones_like(live_mask[:, :1]), x_cand)[0]
            return torch.where(live_mask.any(1, keepdim=True), f_cross, alone), aux
        if isinstance(self.null, nn.Linear):
            null = self.null(x_cand).to(live.dtype).unsqueeze(1)
        else:
            null = self.null.to(live.dtype).expand(live.shape[0], 1, -1)
        present = torch.ones_like(live_mask[:, :1])
        f_cross, aux = self.fuse(
            video, torch.cat([null, live], 1), video_mask, torch.cat([present, live_mask], 1), x_cand
        )
        if aux.get("cross_attention") is not None:  # Fig. 4 shows the user's own live events, the null row apart
            weights = aux.pop("cross_attention")
            aux.update(cross_attention=weights[:, :, 1:], null_attention=weights[:, :, 0])
        return f_cross, aux
