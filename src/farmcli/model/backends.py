"""``fit.backend``: which implementation runs FARM's forward pass for a batch (a run setting, not the model's).

``reference`` is FARM's own forward (model/farm.py), correct on every device and dtype. A backend is the same
parameters run through a path that is faster on one kind of device, tested equal to the reference: ``cpu``
(model/cpu/) groups rows by live length and hand-writes some backward passes, which pays on a CPU in fp32 and
nowhere else. ``auto`` takes ``cpu`` for a batch on a CPU outside autocast and outside graph tracing (export,
``torch.compile``), and the reference everywhere else; analysis outputs (``return_aux``) always come from the
reference.

The model does not know its backends: this module imports FARM and the CPU backend, and FarmModule (or any
caller that wants the speed) calls ``forward`` here instead of ``farm(batch)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from farmcli.model import cpu
from farmcli.model.config import Backend
from farmcli.model.farm import FARM
from farmcli.model.output import FarmOutput


def tracing() -> bool:
    """A graph is being recorded (export, compile, TorchScript trace): a branch on the data would be fixed in it."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def cpu_pays(batch: Mapping[str, Tensor]) -> bool:
    """``auto``'s choice: the CPU backend for fp32 batches on a CPU, outside tracing."""
    return batch["v_mask"].device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not tracing()


def takes_cpu(backend: Backend, batch: Mapping[str, Tensor], return_aux: bool = False) -> bool:
    """Whether this batch runs on the CPU backend: asked for (``cpu``) or paying (``auto``), and no analysis
    outputs wanted (the CPU backend computes no attention weights)."""
    if return_aux or backend == "reference":
        return False
    return backend == "cpu" or cpu_pays(batch)


def forward(
    farm: FARM,
    batch: Mapping[str, Tensor],
    backend: Backend = "auto",
    return_aux: bool = False,
    with_cl: bool = True,
) -> FarmOutput:
    """``farm(batch, return_aux, with_cl)``, run by ``backend``: the same outputs to float rounding."""
    if takes_cpu(backend, batch, return_aux):
        return cpu.forward(farm, batch, with_cl)
    return farm(batch, return_aux=return_aux, with_cl=with_cl)
