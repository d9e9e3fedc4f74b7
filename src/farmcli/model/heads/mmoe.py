"""MMoE (Ma et al., KDD 2018): one pool of shared experts, a softmax gate per task."""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.model.heads.common import Dropout, Towers, expert_pool, mix, require_widths
from farmcli.registry import register


@register("head", "mmoe")
class MMoE(nn.Module):
    @staticmethod
    def check_params(expert_dims: Sequence[int] = (128, 64), **_) -> None:
        require_widths("expert_dims", expert_dims)

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        experts: PositiveInt = 4,
        expert_dims: Sequence[PositiveInt] = (128, 64),
        tower_dims: Sequence[PositiveInt] = (64,),
        dropout: Dropout = 0.0,
    ):
        super().__init__()
        self.check_params(expert_dims=expert_dims)
        self.experts = expert_pool(in_dim, experts, expert_dims, dropout)
        self.gates = nn.ModuleList(nn.Linear(in_dim, experts) for _ in range(n_tasks))
        self.towers = Towers(expert_dims[-1], n_tasks, tower_dims, dropout)

    def set_output_bias(self, logits: Sequence[float]) -> None:
        self.towers.set_output_bias(logits)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [e(x) for e in self.experts]
        return self.towers([mix(gate(x), outputs) for gate in self.gates])
