"""How loud the libraries under farm are: Lightning's start-up boilerplate is hidden unless ``farm --verbose``."""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "FARM_VERBOSE"
"""Set to 1 by ``farm --verbose``; inherited by DDP ranks, which re-launch the command."""


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def quiet_lightning() -> None:
    """Hide Lightning's start-up lines, tips and deprecation warnings (after its import sets its loggers to INFO)."""
    if verbose():
        return
    import lightning  # noqa: F401  (its import configures the loggers this then quiets)

    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*log_every_n_steps.*")
    # farm predict's writer counts its rows itself; Lightning's batch-index tracking is not needed
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices")
    # a resumed run writes into its own checkpoint folder on purpose
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
