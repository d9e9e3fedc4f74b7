"""``model.backend``: which implementation runs FARM's forward pass for a batch.

``reference`` is FARM's own forward (model/farm.py), correct on every device and dtype. A backend is the same
parameters run through a path that is faster on one kind of device, tested equal to the reference: ``cpu``
(model/cpu/) groups rows by live length and hand-writes some backward passes, which pays on a CPU in fp32 and
nowhere else. ``auto`` takes ``cpu`` for a batch on a CPU outside autocast and outside graph tracing (export,
``torch.compile``), and the reference everywhere else; analysis outputs (``return_aux``) always come from the
reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from farmcli.model.farm import FARM, FarmOutput

FastForward = Callable[["FARM", Mapping[str, Tensor], bool], "FarmOutput"]


def tracing() -> bool:
    """A graph is being recorded (export, compile, TorchScript trace): a branch on the data would be fixed in it."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def cpu_pays(batch: Mapping[str, Tensor]) -> bool:
    """``auto``'s choice: the CPU backend for fp32 batches on a CPU, outside tracing."""
    return batch["v_mask"].device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not tracing()


def fast_forward(farm: FARM, batch: Mapping[str, Tensor], backend: str, return_aux: bool) -> FastForward | None:
    """The backend's forward for this batch, or None for the reference."""
    if return_aux or backend == "reference" or (backend == "auto" and not cpu_pays(batch)):
        return None
    from farmcli.model.cpu import forward

    return forward
