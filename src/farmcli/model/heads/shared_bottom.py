"""Shared-bottom: one MLP for every task, then a tower per task (the simplest multi-task baseline)."""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.model.heads.common import Dropout, Towers, require_widths
from farmcli.model.layers import mlp
from farmcli.registry import register


@register("head", "shared_bottom")
class SharedBottom(nn.Module):
    @staticmethod
    def check_params(bottom_dims: Sequence[int] = (128, 64), **_) -> None:
        require_widths("bottom_dims", bottom_dims)

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        bottom_dims: Sequence[PositiveInt] = (128, 64),
        tower_dims: Sequence[PositiveInt] = (64,),
        dropout: Dropout = 0.0,
    ):
        super().__init__()
        self.check_params(bottom_dims=bottom_dims)
        self.bottom = mlp(in_dim, bottom_dims, dropout, last_activation=True)
        self.towers = Towers(bottom_dims[-1], n_tasks, tower_dims, dropout)

    def set_output_bias(self, logits: Sequence[float]) -> None:
        self.towers.set_output_bias(logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.towers(self.bottom(x))
