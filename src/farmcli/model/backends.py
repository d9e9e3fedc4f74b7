"""``fit.backend``: which implementation runs FARM's forward pass for a batch (a run setting, not the model's).

``reference`` is FARM's own forward (model/farm.py), correct on every device and dtype. ``cpu`` (model/cpu/) runs
the same parameters grouped by live length with hand-written backward passes, tested equal to the reference; it
pays on a CPU in fp32 and nowhere else. The model does not know its backends: callers that want the speed (as
FarmModule) call ``forward`` here instead of ``farm(batch)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from farmcli.model import cpu
from farmcli.model.config import Backend
from farmcli.model.farm import FARM, FarmOutput


def takes_cpu(backend: Backend, batch: Mapping[str, Tensor], return_aux: bool = False) -> bool:
    """Whether this batch runs on the CPU backend: asked for (``cpu``), or ``auto`` on a CPU outside autocast and
    outside graph tracing (export, compile: a branch on the data would be fixed in the graph). Never with
    ``return_aux``: the CPU backend computes no attention weights."""
    if return_aux or backend == "reference":
        return False
    if backend == "cpu":
        return True
    tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()
    return batch["v_mask"].device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not tracing


def forward(
    farm: FARM, batch: Mapping[str, Tensor], backend: Backend = "auto", return_aux: bool = False, with_cl: bool = True
) -> FarmOutput:
    """``farm(batch, return_aux, with_cl)``, run by ``backend``: the same outputs to float rounding."""
    if takes_cpu(backend, batch, return_aux):
        return cpu.forward(farm, batch, with_cl)
    return farm(batch, return_aux=return_aux, with_cl=with_cl)
