"""What a command needs from the machine, checked before any data is read: the ``--accelerator`` device and the
memory a run's batches take. Imports no torch or Lightning, so these mistakes are answered in about a second."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from farmcli.batch import CANDIDATE_FIELDS, HISTORY_FIELDS
from farmcli.errors import UserError

if TYPE_CHECKING:
    import torch

    from farmcli.config import RunConfig

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def check_accelerator(accelerator: str) -> None:
    """The name alone (no torch): ``auto``, ``cpu``, ``gpu`` or ``cuda``."""
    if accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator '{accelerator}': choose auto, cpu or gpu.")


def device_for(accelerator: str = "auto") -> torch.device:
    """The device an --accelerator option names; asking for a GPU that torch does not see is a user error."""
    check_accelerator(accelerator)
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("accelerator 'gpu' was asked for but torch sees no CUDA device.")
        return torch.device("cuda")
    return torch.device("cpu")


TRAIN_BYTES_PER_WIDTH = 80
"""Bytes a CPU fp32 training step holds per sample, history position and unit of width D1 + D2 (~20 float32 copies).
Measured: 9.5-12 KB per sample and position at D1 + D2 = 156, 3.1-3.7 KB at 50, L = 100 .. 1,600; linear in L."""
SCORE_BYTES_PER_WIDTH = 24
"""The same for scoring without gradients (validation, test): measured 3.5-3.6 KB at D1 + D2 = 156, L = 200, 800."""
BASE_BYTES = 600 * 2**20
"""The process before its first batch: Python, torch, Lightning and the model (about 450 MB measured)."""


def batch_fields() -> int:
    """Integer fields of a batch: every history field and mask of both domains, the candidate's ids and more."""
    return sum(len(f) + 1 for f in HISTORY_FIELDS.values()) + len(CANDIDATE_FIELDS) + 3


def run_memory(cfg: RunConfig) -> dict[str, int]:
    """Bytes a training process needs at most at full histories: a ``train`` step, a ``score`` batch, ``batches``."""
    d, width = cfg.data, cfg.model.embed.d1 + cfg.model.embed.d2
    L = d.history_len
    return {
        "train": d.batch_size * L * (TRAIN_BYTES_PER_WIDTH * width + batch_fields() * 8),
        "score": d.eval_batch_size * L * (SCORE_BYTES_PER_WIDTH * width + batch_fields() * 8),
        "batches": max(d.batch_size, d.eval_batch_size) * L * batch_fields() * 8,
    }


def available_memory() -> int | None:
    """Bytes this process may still take: MemAvailable (Linux), else the free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def trains_on_cpu(trainer: dict[str, Any]) -> bool:
    """Whether the run's batches live in this machine's memory: cpu, or auto without CUDA (a GPU's memory is not
    read here: that would start CUDA before Lightning does)."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator == "cpu":
        return True
    if accelerator != "auto":
        return False
    import torch

    return not torch.cuda.is_available()


def processes(trainer: dict[str, Any]) -> int:
    """Training processes on this machine (trainer.devices on a CPU): each holds its own batch."""
    devices = trainer.get("devices")
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, list):
        return max(1, len(devices))
    if isinstance(devices, str) and devices.strip().isdigit():
        return max(1, int(devices))
    return 1


def gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_memory(cfg: RunConfig, available: int | None = None) -> None:
    """Refuse, before the sample store is built, a CPU run whose batches cannot fit in memory at ``data.history_len``,
    saying the estimate, what it is made of and the settings that lower it."""
    from farmcli.config import MAX_HISTORY_LEN

    if cfg.data.history_len > MAX_HISTORY_LEN or not trains_on_cpu(cfg.trainer):
        return  # the sample store names the range; a GPU's memory is the device's
    available = available_memory() if available is None else available
    if available is None:
        return
    need = run_memory(cfg)
    n = processes(cfg.trainer)
    total = BASE_BYTES * n + max(need["train"], need["score"]) * n
    if total <= available:
        return
    d, width, L = cfg.data, cfg.model.embed.d1 + cfg.model.embed.d2, cfg.data.history_len
    per_position = max(need["train"], need["score"]) / L * n
    fits = int((available - BASE_BYTES * n) / per_position) if available > BASE_BYTES * n else 0
    parts = {
        "score": f"a validation or test batch (data.eval_batch_size {d.eval_batch_size:,}) about {d.eval_batch_size:,} "
        f"x {L:,} x {need['score'] / d.eval_batch_size / L / 1e3:.1f} KB = {gb(need['score'])}",
        "train": f"a training step (data.batch_size {d.batch_size:,}) about {d.batch_size:,} x {L:,} x "
        f"{need['train'] / d.batch_size / L / 1e3:.1f} KB = {gb(need['train'])}",
    }
    first, second = ("score", "train") if need["score"] >= need["train"] else ("train", "score")
    raise UserError(
        f"Bad setting: data.history_len = {L:,} needs about {gb(total)} of memory, and this machine has "
        f"{gb(available)} available. A batch holds all L positions of each sample's two histories, whether or not "
        f"a user has that many events: {parts[first]}, {parts[second]}"
        + (f", in each of {n} processes" if n > 1 else "")
        + f" (per position: the history widths D1 + D2 = {width}, about {TRAIN_BYTES_PER_WIDTH} bytes each in "
        f"training and {SCORE_BYTES_PER_WIDTH} in scoring, and the batch's {batch_fields()} integer fields). "
        + (
            f"With these batch sizes, data.history_len {fits:,} or less fits: lower"
            if fits
            else "Even data.history_len 1 does not fit with these batch sizes: lower"
        )
        + " data.history_len (the paper uses 50), data.eval_batch_size or data.batch_size. Nothing was built."
    )
