"""PLE (Tang et al., RecSys 2020), the paper's multi-task base: task-specific plus shared experts per level.

Rare tasks (like, comment, gift) get experts of their own, so the dense click signal cannot drown them,
while shared experts still carry what the tasks have in common.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from farmcli.model.heads.common import Towers, expert_pool, mix
from farmcli.model.heads.stacked import first_layers, run_layers
from farmcli.registry import register


class ExtractionLevel(nn.Module):
    """One customized gate control (CGC) level: each task mixes its own and the shared experts.

    Every level but the last also mixes all experts into the shared input of the next level.
    """

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

    def stacked(self, tasks: Tensor | None, shared: Tensor) -> tuple[Tensor, Tensor | None]:
        """``forward`` with the task inputs stacked, tasks [T, B, D] (None: every task reads ``shared``, as in
        the first level), every expert at once (heads/stacked.py) -> task outputs [T, B, D'], shared or None."""
        experts = [*(e for pool in self.task_experts for e in cast(nn.ModuleList, pool)), *self.shared_experts]
        n_tasks, n_own = len(self.task_experts), len(cast(nn.ModuleList, self.task_experts[0]))
        gates = [cast(nn.Linear, g) for g in self.task_gates]
        if tasks is None:  # one input for all: the experts' first layers and every gate in one product
            shared_gate = [] if self.shared_gate is None else [self.shared_gate]
            hidden, gate_logits = first_layers(experts, [*gates, *shared_gate], shared)
            outputs = run_layers(experts, hidden, start=1)
            task_logits = gate_logits[:, : n_tasks * gates[0].out_features].unflatten(1, (n_tasks, -1))
            task_logits = task_logits.transpose(0, 1)  # [T, B, own + shared]
            shared_logits = None if self.shared_gate is None else gate_logits[:, n_tasks * gates[0].out_features :]
        else:
            inputs = torch.cat([tasks.repeat_interleave(n_own, 0), shared.expand(len(self.shared_experts), -1, -1)])
            outputs = run_layers(experts, inputs)
            weight = torch.stack([g.weight for g in gates]).transpose(1, 2)
            task_logits = torch.baddbmm(torch.stack([g.bias for g in gates]).unsqueeze(1), tasks, weight)
            shared_logits = None if self.shared_gate is None else self.shared_gate(shared)
        # task t mixes its own experts and the shared ones, outputs [E, B, D'] holding the shared ones last:
        # weighted sums as broadcast products (einsum would make them 6,144 tiny matrix products)
        weights = torch.softmax(task_logits, dim=-1).permute(0, 2, 1).unsqueeze(-1)  # [T, own + shared, B, 1]
        own = outputs[: n_tasks * n_own].unflatten(0, (n_tasks, n_own))
        task_outputs = (weights[:, :n_own] * own).sum(1) + (weights[:, n_own:] * outputs[n_tasks * n_own :]).sum(1)
        if shared_logits is None:
            return task_outputs, None
        shared_weights = torch.softmax(shared_logits, dim=-1).transpose(0, 1).unsqueeze(-1)  # [E, B, 1]
        return task_outputs, (shared_weights * outputs).sum(0)


@register("head", "ple")
class PLE(nn.Module):
    """``levels`` extraction levels of ``task_experts`` per task and ``shared_experts`` shared, then towers."""

    def __init__(
        self,
        in_dim: int,
        n_tasks: int,
        levels: int = 2,
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_dims: Sequence[int] = (128, 64),
        tower_dims: Sequence[int] = (64,),
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = [in_dim] + [expert_dims[-1]] * (levels - 1)
        self.levels = nn.ModuleList(
            ExtractionLevel(w, n_tasks, task_experts, shared_experts, expert_dims, dropout, last=i == levels - 1)
            for i, w in enumerate(widths)
        )
        self.n_tasks = n_tasks
        self.towers = Towers(expert_dims[-1], n_tasks, tower_dims, dropout)
        self.stacked = True
        """Experts, gates and towers as a few large products (heads/stacked.py); False: one module at a time."""

    def set_output_bias(self, logits: Sequence[float]) -> None:
        self.towers.set_output_bias(logits)

    def forward(self, x: Tensor) -> Tensor:
        if self.stacked:
            tasks: Tensor | None = None
            shared: Tensor | None = x
            for level in self.levels:
                assert shared is not None  # only the last level has no shared output
                tasks, shared = cast(ExtractionLevel, level).stacked(tasks, shared)
            assert tasks is not None
            return self.towers.stacked(tasks)
        task_inputs, shared_input = [x] * self.n_tasks, x
        for level in self.levels:
            task_inputs, shared_input = level(task_inputs, shared_input)
        return self.towers(task_inputs)
