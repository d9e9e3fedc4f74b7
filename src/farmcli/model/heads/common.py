"""Pieces every multi-task head shares: per-task towers and softmax-gated expert mixing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from jsonargparse.typing import restricted_number_type
from torch import Tensor, nn

from farmcli.errors import UserError
from farmcli.model.layers import mlp

Dropout = restricted_number_type("Dropout", float, [(">=", 0), ("<", 1)])
"""A dropout probability: 0 (none) up to, not including, 1 (which would zero every activation)."""
Levels = restricted_number_type("Levels", int, [(">=", 1), ("<=", 8)])
"""PLE's extraction levels: the paper of PLE stacks 1-3; each level is a sequential pass of every expert, so
1,000 of them would train for hours on a CPU without a word."""
Experts = restricted_number_type("Experts", int, [(">=", 0), ("<=", 64)])
"""Experts of a pool (per task or shared): each is an MLP run on every sample, so the count bounds the head's
memory and time."""


def require_widths(key: str, dims: Sequence[int]) -> None:
    """An expert or bottom MLP needs a layer: its last width is what the towers read."""
    if len(dims) == 0:
        raise UserError(
            f"Bad setting: model.head.{key} = []: give at least one layer width (the last one is the width the "
            f"towers read), e.g. [128, 64]."
        )


class Towers(nn.Module):
    """One MLP per task ending in a single logit; [B, D] per task (or shared) -> logits [B, n_tasks]."""

    def __init__(self, in_dim: int, n_tasks: int, dims: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.towers = nn.ModuleList(mlp(in_dim, [*dims, 1], dropout) for _ in range(n_tasks))

    def set_output_bias(self, logits: Sequence[float]) -> None:
        """Start each task's logit at ``logits[i]`` (e.g. the log-odds of its label rate)."""
        with torch.no_grad():
            for tower, value in zip(self.towers, logits, strict=True):
                last = cast(nn.Sequential, tower)[-1]
                cast(nn.Linear, last).bias.fill_(float(value))

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        inputs = [x] * len(self.towers) if isinstance(x, Tensor) else x
        return torch.cat([tower(h) for tower, h in zip(self.towers, inputs, strict=True)], dim=-1)


def in_fp32(head: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The multi-task head (eq. 18 and 6) in fp32 under autocast: a bf16 logit's 8-bit mantissa collapsed a barely
    trained model's scores after the prior bias (AUC 50), and with only the towers' last layer in fp32 per-user AUCs
    still moved by up to 0.2 points (the whole head: 0.03). The head is a small share of the model's work."""
    device = x.device.type
    if not (torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):
        return head(x)
    with torch.autocast(device, enabled=False):
        return head(x.float())


def expert_pool(in_dim: int, n: int, dims: Sequence[int], dropout: float) -> nn.ModuleList:
    return nn.ModuleList(mlp(in_dim, dims, dropout, last_activation=True) for _ in range(n))


def mix(gate_logits: Tensor, outputs: Sequence[Tensor]) -> Tensor:
    """Softmax gate [B, E] over expert outputs (E tensors [B, D]) -> [B, D]."""
    weights = torch.softmax(gate_logits, dim=-1).unsqueeze(-1)
    return (weights * torch.stack(list(outputs), dim=1)).sum(1)
