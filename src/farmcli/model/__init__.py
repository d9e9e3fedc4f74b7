"""The FARM model: layers, the slot components (frequency, align, fuse, heads), assembly, LightningModule.

Importing this package registers the built-in components. ``FarmModule`` (Lightning) is imported on first
use, so the registry and the plain ``nn.Module`` stay light.
"""

from farmcli.model import align, frequency, fuse, heads  # noqa: F401  (registration side effects)
from farmcli.model.config import EmbedConfig, ModelConfig, OptimConfig, SlotConfig, VocabSizes
from farmcli.model.farm import FARM, FarmOutput

__all__ = [
    "FARM",
    "FarmModule",
    "FarmOutput",
    "EmbedConfig",
    "ModelConfig",
    "OptimConfig",
    "SlotConfig",
    "VocabSizes",
]


def __getattr__(name: str):
    if name == "FarmModule":
        from farmcli.model.module import FarmModule

        return FarmModule
    raise AttributeError(f"module 'farmcli.model' has no attribute '{name}'")
