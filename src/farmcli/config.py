"""One typed run configuration: built-in defaults < --config files < --variant < command-line overrides.

jsonargparse does the layering, typing and LightningCLI's keys; farm adds a slot's short spellings (``--model.head
mmoe``), moved settings, and the rules and messages (config_rules.py, config_messages.py). ``trainer.*`` comes
from a cached signature and class settings are typed only when given, so a typo is answered before torch loads.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from argparse import ArgumentError
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Optional, Union

import yaml
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    restricted_number_type,
)

from farmcli import config_rules as rules
from farmcli.config_messages import FIX, KINDS, as_value, explain, given_values
from farmcli.errors import UserError
from farmcli.io import load_yaml
from farmcli.model import params as component_params
from farmcli.model.config import SLOT_FIELDS, Backend, ModelConfig, OptimConfig

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

PRESETS = ("tiny", "small", "default")
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", 2**32 - 1)])
"""A training seed: Lightning (and numpy) take 0 .. 2**32 - 1."""
MAX_HISTORY_LEN = 10_000
HistoryLen = restricted_number_type("HistoryLen", int, [(">=", 1), ("<=", MAX_HISTORY_LEN)])
"""L, the positions of each history the sample store keeps (the store is built for 1 .. 10,000)."""


@dataclass
class DataConfig:
    """Where samples come from and how they are batched."""

    source: str = "default"
    """A farm-events/1 directory, or a simulator preset (tiny, small, default) made on first use."""
    seed: Seed = 0  # type: ignore[valid-type]
    """Simulator seed when ``source`` is a preset (the training seed is the top-level ``seed``)."""
    history_len: HistoryLen = 50  # type: ignore[valid-type]
    min_count: PositiveInt = 1
    batch_size: PositiveInt = 1024
    """1024 suits a CPU; the paper trains with 5000 on a GPU."""
    eval_batch_size: PositiveInt = 8192
    num_workers: NonNegativeInt = 0
    """DataLoader worker processes gathering batches on the CPU (none while ``device_store`` is on)."""
    device_store: Literal["auto", "always", "never"] = "auto"
    """Gather batches by index on the device (no workers): ``auto`` where the store fits its free memory (see
    ``device_store_share``), ``always`` on any device; ``never``: on the CPU, pinned when training on CUDA."""
    device_store_share: ClosedUnitInterval = 0.5
    """The share of the device's free memory the store's arrays may take under ``device_store: auto``."""
    cache_dir: Optional[str] = None
    """Sample-store cache (default: $FARM_HOME/samples)."""


@dataclass
class FitConfig:
    """Early stopping on the validation metric and where runs are written."""

    monitor: str = "val/auc_mean"
    """Mean AUC over the six tasks on the validation split; a single pass is ``--trainer.max_epochs 1``."""
    patience: NonNegativeInt = 2
    runs_dir: str = "farm-runs"
    name: Optional[str] = None
    """Run directory name (default: VARIANT-DATA-sSEED-TIMESTAMP)."""
    min_delta: NonNegativeFloat = 0.0
    backend: Backend = "auto"
    """What runs the forward pass (model/backends.py): ``reference`` (plain PyTorch), ``cpu`` (CPU speed-ups, equal
    to float rounding) or ``auto`` (``cpu`` on a CPU in fp32). Not in checkpoints; was ``model.backend``."""


MOVED = {"model.backend": "fit.backend", "seed_everything": "seed"}
"""Keys read as another: a moved setting (older run directories) and LightningCLI's name of farm's seed."""

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
}
TRAINER_SKIP = {"callbacks", "logger", "plugins", "default_root_dir", "enable_checkpointing", "use_distributed_sampler"}

TOP_LEVEL = ("seed", "seed_everything", "variant", "ckpt_path", "optimizer", "lr_scheduler")
"""The settings outside a section (``--lr_scheduler CosineAnnealingLR``, as in LightningCLI)."""

CLASS_SETTINGS = ("trainer.logger", "trainer.callbacks", "optimizer", "lr_scheduler")
"""Settings that name a class as LightningCLI does (a class name, a class_path, or {class_path, init_args})."""


@dataclass
class RunConfig:
    seed: int = 0
    variant: str = "farm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    trainer: dict[str, Any] = field(default_factory=lambda: dict(TRAINER_DEFAULTS))
    lr_scheduler: Optional[dict[str, Any]] = None
    """A torch scheduler, ``{class_path, init_args}`` (components.py); None: a constant lr."""
    optimizer: Optional[dict[str, Any]] = None
    """A torch optimizer, ``{class_path, init_args}``; None: the paper's Adam with ``optim.*``."""
    ckpt_path: Optional[str] = None
    """LightningCLI's resume: a run's checkpoint (or the run directory). Not written to config.yaml."""

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "ckpt_path"}
        return {k: v if isinstance(v, (dict, str, int, type(None))) else dataclasses.asdict(v) for k, v in d.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@lru_cache(maxsize=4)
def parser(classes: frozenset[str] = frozenset()) -> Any:
    """The run config's parser, typing only the class settings in ``classes`` (importing Lightning takes seconds)."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False, prog="farm train", allow_abbrev=False)  # --trainer.max_epoch is a typo
    p.add_argument("--seed", type=Union[Seed, bool], default=0)
    p.add_argument("--variant", type=str, default="farm")
    p.add_argument("--ckpt_path", type=Optional[str], default=None)
    for name, cls in (("data", DataConfig), ("model", ModelConfig), ("optim", OptimConfig), ("fit", FitConfig)):
        p.add_class_arguments(cls, name)
    trainer = rules.cached_trainer_settings()
    if trainer is not None:
        p.add_function_arguments(trainer, "trainer")
    else:  # another Lightning than the cache was made from: its own signature (imports torch)
        import lightning as L

        p.add_class_arguments(L.Trainer, "trainer", skip=TRAINER_SKIP)
    p.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    for key in CLASS_SETTINGS:
        base = _class_base(key, "lightning" in classes) if key in classes else None
        if base is None:
            p.add_argument(f"--{key}", type=Optional[bool], default=None)
        elif key == "trainer.callbacks":
            p.add_argument(f"--{key}", type=Optional[Union[list[base], base]], default=None)  # type: ignore[valid-type]
        else:
            skip = {"trainer.logger": {"save_dir", "version"}, "optimizer": {"params"}}.get(key, {"optimizer"})
            p.add_subclass_arguments(base, key, skip=skip, required=False, instantiate=False, fail_untyped=False)
    return p


def _class_base(key: str, lightning: bool) -> Any:
    """A class setting's base class (config_messages.KINDS), or Lightning's scheduler union where its
    ReduceLROnPlateau, which takes the ``monitor`` it watches, is named."""
    plateau = ("lightning.pytorch.cli", "LRSchedulerTypeUnion", "")
    module, name, _ = plateau if key == "lr_scheduler" and lightning else KINDS[key]
    return getattr(importlib.import_module(module), name)


def _classes(given: Mapping[str, Any]) -> frozenset[str]:
    """The class settings a config gives, with "lightning" where one needs Lightning's classes."""
    named = {k for k in CLASS_SETTINGS for g in given if f"{g.rstrip('+')}.".startswith(f"{k}.")}  # k, k+, k.ARG
    keys = {k for k in named if given.get(k, True) not in (None, False, [])}
    lightning = "ReduceLROnPlateau" in str(given) or keys & {"trainer.logger", "trainer.callbacks"}
    return frozenset(keys | ({"lightning"} if lightning else set()))


def resolve(
    config_files: Sequence[str | os.PathLike] = (),
    variant: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    values: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Defaults < config files < variant < overrides (tokens or a mapping) < ``values`` (set as is, never read
    from text), validated. A file's ``variant`` key is only a label; ``variant`` here is applied as a layer."""
    layers = [_nested(load_yaml(f)) for f in config_files]
    if variant is not None:
        from farmcli.variants import load_variant

        v = load_variant(variant)
        layers.append(_nested({**v.layer, "variant": v.name}))
    if isinstance(overrides, Mapping):
        layers.append(_nested(overrides))
        overrides = ()
    last = _nested(values or {})
    pairs, slots = _slot_layer(pairs_of(overrides))
    given = given_values([*layers, slots, last], pairs)
    rules.check_not_ours(given)
    p = parser(_classes(given))
    try:
        ns = p.get_defaults()
        for layer in layers:
            ns = p.parse_object(_ours(layer, ns), cfg_base=ns)
        ns = p.parse_args([f"--{key}={raw}" for key, raw in pairs], namespace=ns)
        for layer in (slots, last):
            ns = p.parse_object(_ours(layer, ns), cfg_base=ns) if layer else ns
    except ArgumentError as e:
        known = [a.dest for a in p._actions if a.dest != "help"]
        raise UserError(f"{explain(e, given, known)}\n{FIX}") from None
    return validate(ns.as_dict())


def _nested(layer: Mapping[str, Any]) -> dict[str, Any]:
    """A layer with dotted keys nested, and each ``MOVED`` key under its new name (the new key's value wins)."""
    out: dict[str, Any] = {}
    for key, value in layer.items():
        *head, last = str(key).split(".")
        node = out
        for part in head:
            node = node.setdefault(part, {})
        value = _nested(value) if isinstance(value, Mapping) else value
        node[last] = {**node[last], **value} if isinstance(value, dict) and isinstance(node.get(last), dict) else value
    for old, new in MOVED.items():
        (old_section, _, old_key), (new_section, _, new_key) = old.rpartition("."), new.rpartition(".")
        source = out.get(old_section) if old_section else out
        if isinstance(source, dict) and old_key in source:
            value = source.pop(old_key)
            (out.setdefault(new_section, {}) if new_section else out).setdefault(new_key, value)
    return out


def pairs_of(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``--KEY VALUE``, ``--KEY=VALUE`` or ``KEY=VALUE`` items as (KEY, VALUE) text."""
    out, i, tokens = [], 0, list(tokens)
    while i < len(tokens):
        tok = tokens[i]
        key, eq, raw = tok.removeprefix("--").partition("=")
        if tok.startswith("-") and "." not in key and key.rstrip("+") not in TOP_LEVEL:
            raise UserError(
                f"No such option: {tok}. Settings are given as dotted keys, e.g. --trainer.max_epochs 3 or "
                f"--model.fuse.name none; see `farm train --help` and `farm train --print-config`."
            )
        if not eq and tok.startswith("--") and i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            raw, i = tokens[i + 1], i + 1
        elif not eq and tok.startswith("--"):
            raise UserError(
                f"{tok} needs a value: {tok} VALUE or {tok}=VALUE, e.g. --trainer.max_epochs 3. "
                f"`farm train --print-config` shows every setting with its current value."
            )
        elif not eq:
            raise UserError(
                f"Cannot read the setting '{tok}': give it as --KEY VALUE, --KEY=VALUE or --set KEY=VALUE, e.g. "
                f"--trainer.max_epochs 3."
            )
        out.append((MOVED.get(key, key), raw))
        i += 1
    return out


def _slot_spec(value: Any) -> Any:
    """A slot by name alone, or as LightningCLI writes a class (``{class_path, init_args}``), as ``{name, params}``."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        spec = {{"class_path": "name", "init_args": "params"}.get(k, k): v for k, v in value.items()}
        extra = {k: spec.pop(k) for k in list(spec) if k not in ("name", "params")}  # {head: {experts: 3}}
        if extra and isinstance(spec.get("params", {}), Mapping):  # (params that are no mapping: jsonargparse says so)
            spec["params"] = {**spec.get("params", {}), **extra}
        return spec
    return value


def _ours(layer: dict[str, Any], ns: Any) -> dict[str, Any]:
    """Each slot as ``{name, params}``: another component starts from its defaults, the same one keeps its own."""
    model: dict[str, Any] = layer["model"] if isinstance(layer.get("model"), dict) else {}
    for slot in set(model) & set(SLOT_FIELDS):
        spec, now = _slot_spec(model[slot]), ns[f"model.{slot}"]
        if (
            isinstance(spec, dict)
            and spec.get("name", now.name) == now.name
            and isinstance(spec.get("params", {}), dict)
        ):
            spec["params"] = {**now.params, **spec.get("params", {})}
        model[slot] = {"params": {}, **spec} if isinstance(spec, dict) else spec
    return layer


def _slot_layer(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The command line's other settings, and the slots' as one layer: ``--model.head mmoe --model.head.experts 3``,
    in either order, is ``{model: {head: {name: mmoe, experts: 3}}}``."""
    layer: dict[str, Any] = {}
    for key, raw in filter(lambda pair: _is_slot(pair[0]), pairs):
        value = as_value(raw)
        layer[key if key.count(".") > 1 or isinstance(value, Mapping) else f"{key}.name"] = value
    return [(key, raw) for key, raw in pairs if not _is_slot(key)], _nested(layer)


def _is_slot(key: str) -> bool:
    section, _, rest = key.partition(".")
    return section == "model" and rest.split(".")[0] in SLOT_FIELDS


def validate(raw: dict[str, Any]) -> RunConfig:
    """The parsed config as a RunConfig, after the rules no type states and each slot's parameters are checked."""
    raw = component_params.plain(raw)
    raw["seed"] = rules.seed(raw["seed"])
    rules.check_settings(raw)
    from farmcli import components

    for key in CLASS_SETTINGS:  # each one's changed arguments only, so what farm injects (a logger's name) applies
        section, _, name = key.rpartition(".")
        node = raw[section] if section else raw
        node[name] = components.check(key, node.get(name))
    model = ModelConfig.from_dict(raw["model"])
    rules.check_cutoffs(model, raw["data"]["history_len"])  # the ones given, before the components are imported
    model = with_component_defaults(model)
    rules.check_cutoffs(model, raw["data"]["history_len"])  # the defaults too
    rules.check_attention_heads(model)
    sections = {"data": DataConfig, "optim": OptimConfig, "fit": FitConfig}
    return RunConfig(**{**raw, "model": model, **{k: cls(**raw[k]) for k, cls in sections.items()}})


def with_component_defaults(model: ModelConfig) -> ModelConfig:
    """Every slot's parameters spelled out and checked, so config.yaml shows (and pins) all of them."""
    from farmcli import registry

    filled = dataclasses.replace(model)
    for slot in SLOT_FIELDS:
        spec = getattr(model, slot)
        params = component_params.check(slot, spec.name, registry.get(slot, spec.name), spec.params)
        setattr(filled, slot, dataclasses.replace(spec, params=params))
    return filled
