"""Many small MLPs of one shape (a head's experts, gates and towers) run as a few large products.

A PLE head of the default size runs 8 experts, 7 gates and 6 towers per level on a batch of 1,024: about 90
products of [1024, <=280] x [<=280, <=128] each way. On a CPU such small products run at a third to a half
of the machine's GEMM rate, and each costs an autograd node and a Python call. Stacked, the first layers of
everything that reads one input become one product, and each deeper layer one batched product over the
experts. The parameters stay the separate ``nn.Linear`` layers they are (same names, same init, same
checkpoints); their weights are stacked at run time, which is cheap next to the products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.model.layers import lane_pad


def _layers(mlp: nn.Module) -> list[nn.Module]:
    return list(cast(nn.Sequential, mlp))


def run_layers(mlps: Sequence[nn.Module], x: Tensor, start: int = 0) -> Tensor:
    """x [E, B, D] through layers ``start:`` of E same-shaped MLPs (``layers.mlp``), MLP e on x[e] -> [E, B, D']."""
    for stage in zip(*(_layers(m)[start:] for m in mlps), strict=True):
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
    """The first Linear of every MLP and the ``linears`` (gates), all on the same x [B, D], as one product.

    -> the MLPs' first-layer outputs [E, B, H] (before their activation), the linears' outputs [B, sum of
    widths]. Every layer here must have a bias.
    """
    firsts = [cast(nn.Linear, _layers(m)[0]) for m in mlps]
    every = [*firsts, *linears]
    width, total = firsts[0].out_features, sum(lin.out_features for lin in every)
    pad = lane_pad(total)  # zero rows to a whole number of vector lanes: N = 1050 -> 1056, 83 -> 121 GFLOP/s
    weight = torch.cat([*(lin.weight for lin in every), x.new_zeros(pad, x.shape[1])])
    out = F.linear(x, weight, torch.cat([*(cast(Tensor, lin.bias) for lin in every), x.new_zeros(pad)]))
    hidden, rest = out[:, : len(firsts) * width], out[:, len(firsts) * width : total]
    return hidden.view(x.shape[0], len(firsts), width).transpose(0, 1), rest
