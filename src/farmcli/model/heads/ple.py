"""PLE (Tang et al., RecSys 2020), the paper's multi-task base: task-specific plus shared experts per level.

Rare tasks (like, comment, gift) get experts of their own, so the dense click signal cannot drown them,
while shared experts still carry what the tasks have in common.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.heads.common import Dropout, Experts, Levels, Towers, expert_pool, mix, require_widths
from farmcli.registry import register


class ExtractionLevel(nn.Module):
    """One customized gate control (CGC) level: each task mixes its own and the shared experts; every level but the
    last also mixes all experts into the next level's shared input."""

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        task_experts: int,
        shared_experts: int,
        expert_dims: Sequence[int],
        dropout: float,
        last: bool,
    ):
        super().__init__()
        self.task_experts = nn.ModuleList(
            expert_pool(in_dim, task_experts, expert_dims, dropout) for _ in range(n_tasks)
        )
        self.shared_experts = expert_pool(in_dim, shared_experts, expert_dims, dropout)
        self.task_gates = nn.ModuleList(nn.Linear(in_dim, task_experts + shared_experts) for _ in range(n_tasks))
        self.shared_gate = None if last else nn.Linear(in_dim, n_tasks * task_experts + shared_experts)

    def forward(self, task_inputs: Sequence[Tensor], shared_input: Tensor) -> tuple[list[Tensor], Tensor | None]:
        shared = [e(shared_input) for e in self.shared_experts]
        task_outputs: list[Tensor] = []
        every_task_expert: list[Tensor] = []
        for x, own_experts, gate in zip(task_inputs, self.task_experts, self.task_gates, strict=True):
            own = [e(x) for e in cast(nn.ModuleList, own_experts)]
            every_task_expert += own
            task_outputs.append(mix(gate(x), own + shared))
        if self.shared_gate is None:
            return task_outputs, None
        return task_outputs, mix(self.shared_gate(shared_input), every_task_expert + shared)


@register("head", "ple")
class PLE(nn.Module):
    """``levels`` extraction levels of ``task_experts`` per task and ``shared_experts`` shared, then towers."""

    @staticmethod
    def check_params(
        expert_dims: Sequence[int] = (128, 64), task_experts: int = 1, shared_experts: int = 2, **_
    ) -> None:
        require_widths("expert_dims", expert_dims)
        if task_experts + shared_experts < 1:
            raise UserError(
                "Bad setting: model.head.task_experts and model.head.shared_experts are both 0: each task's gate "
                "needs at least one expert to mix (the paper's PLE: task_experts 1, shared_experts 2)."
            )

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        levels: Levels = 2,
        shared_experts: Experts = 2,
        task_experts: Experts = 1,
        expert_dims: Sequence[PositiveInt] = (128, 64),
        tower_dims: Sequence[PositiveInt] = (64,),
        dropout: Dropout = 0.0,
    ):
        super().__init__()
        self.check_params(expert_dims=expert_dims, task_experts=task_experts, shared_experts=shared_experts)
        widths = [in_dim] + [expert_dims[-1]] * (levels - 1)
        self.levels = nn.ModuleList(
            ExtractionLevel(w, n_tasks, task_experts, shared_experts, expert_dims, dropout, last=i == levels - 1)
            for i, w in enumerate(widths)
        )
        self.n_tasks = n_tasks
        self.towers = Towers(expert_dims[-1], n_tasks, tower_dims, dropout)

    def set_output_bias(self, logits: Sequence[float]) -> None:
        self.towers.set_output_bias(logits)

    def forward(self, x: Tensor) -> Tensor:
        task_inputs, shared_input = [x] * self.n_tasks, x
        for level in self.levels:
            task_inputs, shared_input = level(task_inputs, shared_input)
        return self.towers(task_inputs)
