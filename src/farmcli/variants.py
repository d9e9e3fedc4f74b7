"""Model variants: small YAML files naming slot choices (and any other settings) with a description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farmcli.errors import UserError

VARIANTS_DIR = Path(__file__).parent / "variants"
"""The built-in variants (the repository's top-level ``variants/`` points here)."""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    label: str
    layer: dict[str, Any]
    path: Path
    ablation_order: int | None = None
    """Position in `farm ablate`'s default set (the paper's Table 1 rows); None: not in it."""


def builtin_names() -> list[str]:
    return sorted(p.stem for p in VARIANTS_DIR.glob("*.yaml"))


def load_variant(name_or_path: str) -> Variant:
    """By name (``no-cpa``) from the built-in folder, or a path to a YAML file of the same shape."""
    from farmcli.io import load_yaml

    if not name_or_path.strip():
        raise UserError(
            "--variant is an empty string: give a variant name (`farm variants` lists them) or a YAML file."
        )
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = VARIANTS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise UserError(
                f"Unknown variant '{name_or_path}'. Built-in variants: {', '.join(builtin_names())}; "
                f"or pass a path to a variant YAML file (see `farm variants`)."
            )
    layer = load_yaml(path, what="variant")
    description = str(layer.pop("description", ""))
    label = str(layer.pop("label", path.stem))
    order = layer.pop("ablation_order", None)
    if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
        raise UserError(f"{path}: ablation_order = {order!r}: expected an integer (or leave it out).")
    layer.pop("variant", None)
    _check_sections(path, layer)
    if not layer:
        raise UserError(
            f"{path}: the variant sets nothing (no model: slots or other settings), so it would train "
            f"the default model under another name. A variant looks like: "
            f"model: {{align: none}} (see `farm variants`)."
        )
    return Variant(path.stem, description, label, layer, path, order)


SECTIONS = ("seed", "data", "model", "optim", "fit", "trainer", "lr_scheduler", "optimizer")
"""The run config's sections a variant may set (farmcli.config.RunConfig's fields but ``variant``)."""


def _check_sections(path: Path, layer: dict[str, Any]) -> None:
    """A variant's settings go under the run config's sections; a slot at the top level names the file."""
    from dataclasses import fields

    from farmcli.model.config import ModelConfig

    model_keys = {f.name for f in fields(ModelConfig)}
    for key in layer:
        if key in SECTIONS:
            continue
        if key in model_keys:
            raise UserError(
                f"{path}: '{key}' is a model setting, so it goes under model:, e.g. model: {{{key}: ...}} "
                f"(a variant sets model: and, where it needs to, data:, optim:, fit:, trainer: or seed; "
                f"see `farm variants`)."
            )
        raise UserError(
            f"{path}: '{key}' is not a setting a variant can hold. A variant sets model: (slots such as "
            f"model: {{align: none}}) and, where it needs to, data:, optim:, fit:, trainer: or seed; plus "
            f"description:, label: and ablation_order:."
        )


def all_variants() -> list[Variant]:
    return [load_variant(n) for n in builtin_names()]


def ablation_variants() -> list[str]:
    """The built-in variants of `farm ablate` (those with an ``ablation_order``), in that order."""
    chosen = [v for v in all_variants() if v.ablation_order is not None]
    return [v.name for v in sorted(chosen, key=lambda v: v.ablation_order or 0)]


def slot_names(variant: str) -> dict[str, str]:
    """The component name a variant puts in each slot it sets (its ``model:`` section)."""
    from farmcli.model.config import SlotConfig
    from farmcli.slots import SLOT_NAMES

    model = load_variant(variant).layer.get("model") or {}
    return {s: SlotConfig.parse(model[s]).name for s in SLOT_NAMES if s in model}
