"""The CPU backend's PLE head: many small MLPs of one shape (experts, gates, towers) as a few large products.

A default PLE's ~90 small products per step run at a third to a half of a CPU's GEMM rate, an autograd node each.
The parameters stay the separate ``nn.Linear`` layers (same names, checkpoints), stacked at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.model.cpu.attention import lane_pad
from farmcli.model.heads.ple import PLE, ExtractionLevel


def run_layers(mlps: Sequence[nn.Module], x: Tensor, start: int = 0) -> Tensor:
    """x [E, B, D] through layers ``start:`` of E same-shaped MLPs (``layers.mlp``), MLP e on x[e] -> [E, B, D']."""
    for stage in zip(*(list(cast(nn.Sequential, m))[start:] for m in mlps), strict=True):
        layer = stage[0]
        if isinstance(layer, nn.Linear):
            linears = cast(Sequence[nn.Linear], stage)
            weight = torch.stack([lin.weight for lin in linears]).transpose(1, 2)  # [E, D, D']
            if layer.bias is None:
                x = torch.bmm(x, weight)
            else:
                x = torch.baddbmm(torch.stack([cast(Tensor, lin.bias) for lin in linears]).unsqueeze(1), x, weight)
        elif isinstance(layer, nn.ReLU):
            x = F.relu(x)
        elif isinstance(layer, nn.Dropout):
            x = layer(x)
        else:
            raise TypeError(f"run_layers: no stacked form for {type(layer).__name__}")
    return x


def first_layers(mlps: Sequence[nn.Module], linears: Sequence[nn.Linear], x: Tensor) -> tuple[Tensor, Tensor]:
    """The first Linear (with a bias) of every MLP and the ``linears`` (gates) on the same x [B, D] as one product
    -> the MLPs' first-layer outputs [E, B, H] (before their activation), the linears' outputs [B, their widths]."""
    firsts = [cast(nn.Linear, cast(nn.Sequential, m)[0]) for m in mlps]
    every = [*firsts, *linears]
    width, total = firsts[0].out_features, sum(lin.out_features for lin in every)
    pad = lane_pad(total)  # zero rows to a whole number of vector lanes: N = 1050 -> 1056, 83 -> 121 GFLOP/s
    weight = torch.cat([*(lin.weight for lin in every), x.new_zeros(pad, x.shape[1])])
    out = F.linear(x, weight, torch.cat([*(cast(Tensor, lin.bias) for lin in every), x.new_zeros(pad)]))
    hidden, rest = out[:, : len(firsts) * width], out[:, len(firsts) * width : total]
    return hidden.view(x.shape[0], len(firsts), width).transpose(0, 1), rest


def ple(m: PLE, x: Tensor) -> Tensor:
    """``PLE.forward``, each level's experts and gates stacked, the towers one batched product per layer."""
    tasks: Tensor | None = None
    shared: Tensor | None = x
    for level in m.levels:
        assert shared is not None  # only the last level has no shared output
        tasks, shared = _level(cast(ExtractionLevel, level), tasks, shared)
    assert tasks is not None
    return run_layers(list(m.towers.towers), tasks).squeeze(-1).transpose(0, 1)


def _level(m: ExtractionLevel, tasks: Tensor | None, shared: Tensor) -> tuple[Tensor, Tensor | None]:
    """``ExtractionLevel.forward`` on stacked task inputs [T, B, D] (None: all read ``shared``, the first level)."""
    experts = [*(e for pool in m.task_experts for e in cast(nn.ModuleList, pool)), *m.shared_experts]
    n_tasks, n_own = len(m.task_experts), len(cast(nn.ModuleList, m.task_experts[0]))
    gates = [cast(nn.Linear, g) for g in m.task_gates]
    if tasks is None:  # one input for all: the experts' first layers and every gate in one product
        shared_gate = [] if m.shared_gate is None else [m.shared_gate]
        hidden, gate_logits = first_layers(experts, [*gates, *shared_gate], shared)
        outputs = run_layers(experts, hidden, start=1)
        task_logits = gate_logits[:, : n_tasks * gates[0].out_features].unflatten(1, (n_tasks, -1))
        task_logits = task_logits.transpose(0, 1)  # [T, B, own + shared]
        shared_logits = None if m.shared_gate is None else gate_logits[:, n_tasks * gates[0].out_features :]
    else:
        inputs = torch.cat([tasks.repeat_interleave(n_own, 0), shared.expand(len(m.shared_experts), -1, -1)])
        outputs = run_layers(experts, inputs)
        weight = torch.stack([g.weight for g in gates]).transpose(1, 2)
        task_logits = torch.baddbmm(torch.stack([g.bias for g in gates]).unsqueeze(1), tasks, weight)
        shared_logits = None if m.shared_gate is None else m.shared_gate(shared)
    # task t mixes its own experts and the shared ones (outputs [E, B, D'] hold the shared ones last), by broadcast
    # products: einsum would make them 6,144 tiny matrix products
    weights = torch.softmax(task_logits, dim=-1).permute(0, 2, 1).unsqueeze(-1)  # [T, own + shared, B, 1]
    own = outputs[: n_tasks * n_own].unflatten(0, (n_tasks, n_own))
    task_outputs = (weights[:, :n_own] * own).sum(1) + (weights[:, n_own:] * outputs[n_tasks * n_own :]).sum(1)
    if shared_logits is None:
        return task_outputs, None
    shared_weights = torch.softmax(shared_logits, dim=-1).transpose(0, 1).unsqueeze(-1)  # [E, B, 1]
    return task_outputs, (shared_weights * outputs).sum(0)
