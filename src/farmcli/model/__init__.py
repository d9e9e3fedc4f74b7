"""The FARM model: layers, the slot components (frequency, align, fuse, heads), assembly, LightningModule.

``FARM``, ``FarmOutput`` and ``FarmModule`` are imported on first use, so that the config (which reads only
``config``) answers before torch is imported; the registry imports the built-in components on first use too.
"""

from typing import TYPE_CHECKING

from farmcli.model.config import EmbedConfig, ModelConfig, OptimConfig, SlotConfig, VocabSizes

if TYPE_CHECKING:
    from farmcli.model.farm import FARM, FarmOutput
    from farmcli.model.module import FarmModule

__all__ = ["FARM", "FarmModule", "FarmOutput", "EmbedConfig", "ModelConfig", "OptimConfig", "SlotConfig", "VocabSizes"]


def __getattr__(name: str):
    if name in ("FARM", "FarmOutput"):
        from farmcli.model import farm

        return getattr(farm, name)
    if name == "FarmModule":
        from farmcli.model.module import FarmModule

        return FarmModule
    raise AttributeError(f"module 'farmcli.model' has no attribute '{name}'")
