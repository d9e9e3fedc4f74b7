"""A fuse component in one file: both preference sequences mean-pooled and projected.

An example of the plugin contract, not a model from the paper: FARM builds it as
``MeanFuse(video_dim=D1, live_dim=D2, cand_dim=Dc, **params)`` and calls it as eq. 16-17's fuse.
``tests/test_plugin_example.py`` trains with it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from farmcli.model.layers import masked_mean
from farmcli.registry import register


@register("fuse", "mean")
class MeanFuse(nn.Module):
    uses_preference = True  # receive the self-attended V^ of eq. 12 (FARM builds the encoder for it)

    def __init__(self, video_dim: int, live_dim: int, cand_dim: int, dim: int = 32):
        super().__init__()
        self.out_dim = dim  # the width FARM adds to the head's input
        self.proj = nn.Linear(video_dim + live_dim, dim)

    def forward(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, x_cand: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        pooled = torch.cat([masked_mean(video, video_mask), masked_mean(live, live_mask)], dim=-1)
        return self.proj(pooled), {}
