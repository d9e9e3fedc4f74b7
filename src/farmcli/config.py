"""One typed run configuration, resolved as: built-in defaults < --config files < --variant < overrides.

Each layer is a nested mapping merged onto the last (YAML files, a variant file, dotted command-line
overrides); the result is validated once by a jsonargparse parser built from the typed dataclasses and
the Lightning ``Trainer`` signature, so a mistyped key or a wrong type is named before anything runs. The
Trainer's signature is read from farmcli/trainer_settings.py (made from it, checked by a test): a config error
is answered before torch or Lightning is imported.
"""

from __future__ import annotations

import copy
import dataclasses
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

from farmcli.errors import UserError
from farmcli.io import load_yaml
from farmcli.model import params as component_params
from farmcli.model.config import SLOT_FIELDS, Backend, ModelConfig, OptimConfig

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

PRESETS = ("tiny", "small", "default")
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", 2**32 - 1)])
"""A training seed: Lightning (and numpy) take 0 .. 2**32 - 1."""


@dataclass
class DataConfig:
    """Where samples come from and how they are batched."""

    source: str = "default"
    """A farm-events/1 directory, or a simulator preset (tiny, small, default) made on first use."""
    seed: Seed = 0  # type: ignore[valid-type]
    """Simulator seed when ``source`` is a preset (the training seed is the top-level ``seed``)."""
    history_len: PositiveInt = 50
    min_count: PositiveInt = 1
    batch_size: PositiveInt = 1024
    """1024 suits a CPU; the paper trains with 5000 on a GPU."""
    eval_batch_size: PositiveInt = 8192
    num_workers: NonNegativeInt = 0
    """DataLoader worker processes gathering batches on the CPU (none while ``device_store`` is on)."""
    device_store: Literal["auto", "always", "never"] = "auto"
    """Where batches are gathered. ``auto``: on a CUDA device whose free memory holds the store's arrays (see
    ``device_store_share``) they are copied there once and each batch is gathered there by index, with no worker
    processes; ``always``: so on any device (the CPU too); ``never``: on the CPU, into pinned memory when
    training on CUDA, copied without blocking."""
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
    """What runs the model's forward pass (model/backends.py): ``reference``, the paper's equations in plain
    PyTorch on every device and dtype; ``cpu``, the same model with a CPU's speed-ups (model/cpu/, equal to float
    rounding); ``auto``, ``cpu`` on a CPU in fp32, where it is faster (benchmarks/bench_train.py --compare
    backend), else ``reference``. How to run the model, not what it is: checkpoints do not carry it. Older
    configs' ``model.backend`` is read as this (``MOVED_SETTINGS``)."""


MOVED_SETTINGS = {("model", "backend"): ("fit", "backend")}
"""Settings that moved (old section and key -> new): in any layer (an old run's config.yaml, a variant,
``--model.backend cpu``) the old key sets the new one, so run directories of before issue 35 still resolve."""


def moved_settings(layer: Mapping[str, Any]) -> dict[str, Any]:
    """``layer`` with each setting of ``MOVED_SETTINGS`` under its new key (where a layer holds both, the new
    key's value wins)."""
    out = dict(layer)
    for (old_section, old_key), (new_section, new_key) in MOVED_SETTINGS.items():
        section = out.get(old_section)
        if isinstance(section, Mapping) and old_key in section:
            section = dict(section)
            value = section.pop(old_key)
            target = dict(out.get(new_section) or {})
            target.setdefault(new_key, value)
            out[old_section], out[new_section] = section, target
    return out


TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 10,
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
}
TRAINER_SKIP = {
    "callbacks",
    "logger",
    "plugins",
    "default_root_dir",
    "enable_checkpointing",
    "use_distributed_sampler",
}
OURS = {
    "default_root_dir": "farm writes each run to fit.runs_dir/fit.name (e.g. --fit.runs_dir runs --fit.name my-run)",
    "enable_checkpointing": "every run keeps RUN/checkpoints/best.ckpt and last.ckpt (farm eval, --resume need them)",
    "use_distributed_sampler": "farm's data module gives each rank its own slice of the sample store",
    "plugins": "precision is --trainer.precision; the strategy --trainer.strategy",
}
"""Trainer arguments that farm sets itself, with what a LightningCLI user writes here instead."""


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
    """A torch learning-rate scheduler, ``{class_path, init_args}`` (farmcli/components.py); None: a constant lr.
    ``init_args.monitor`` (LightningCLI's key) names the metric ReduceLROnPlateau watches (default fit.monitor)."""
    optimizer: Optional[dict[str, Any]] = None
    """A torch optimizer, ``{class_path, init_args}``; None: Adam with ``optim.*`` (the paper's). Either way the
    id tables form a parameter group of their own with ``optim.id_weight_decay``."""
    ckpt_path: Optional[str] = None
    """LightningCLI's resume: a run's checkpoint (or the run directory). Not written to config.yaml."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "variant": self.variant,
            "data": dataclasses.asdict(self.data),
            "model": self.model.to_dict(),
            "optim": dataclasses.asdict(self.optim),
            "fit": dataclasses.asdict(self.fit),
            "trainer": dict(self.trainer),
            "lr_scheduler": self.lr_scheduler,
            "optimizer": self.optimizer,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@lru_cache(maxsize=1)
def _parser():
    """The run config's parser. ``trainer.*`` comes from the Trainer signature cached in farmcli.trainer_settings,
    so checking a config imports neither Lightning nor torch (a config error answers in well under a second)."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False, prog="farm train")
    p.add_argument("--seed", type=Seed, default=0)
    p.add_argument("--variant", type=str, default="farm")
    p.add_class_arguments(DataConfig, "data")
    p.add_class_arguments(ModelConfig, "model")
    p.add_class_arguments(OptimConfig, "optim")
    p.add_class_arguments(FitConfig, "fit")
    trainer = _cached_trainer_settings()
    if trainer is not None:
        p.add_function_arguments(trainer, "trainer")
    else:  # another Lightning than the cache was made from: its own signature (imports torch)
        import lightning as L

        p.add_class_arguments(L.Trainer, "trainer", skip=TRAINER_SKIP)
    spec = Optional[Union[bool, str, dict, list]]  # checked by farmcli.components, which may import Lightning
    p.add_argument("--trainer.logger", type=spec, default=None)
    p.add_argument("--trainer.callbacks", type=spec, default=None)
    p.add_argument("--lr_scheduler", type=Optional[Union[str, dict]], default=None)
    p.add_argument("--optimizer", type=Optional[Union[str, dict]], default=None)
    p.add_argument("--ckpt_path", type=Optional[str], default=None)
    p.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    return p


def _cached_trainer_settings() -> Any:
    """farmcli.trainer_settings' signature where it was made from the installed Lightning, else None."""
    from importlib.metadata import PackageNotFoundError, version

    from farmcli import trainer_settings

    try:
        installed = version("lightning")
    except PackageNotFoundError:
        return None
    return trainer_settings.trainer if installed == trainer_settings.LIGHTNING_VERSION else None


def trainer_settings_source() -> str:
    """The text of farmcli/trainer_settings.py, made from the installed Lightning's ``Trainer`` signature.

    A Lightning class in an annotation (an Accelerator, a Strategy, a Profiler) becomes ``str``: farm hands
    ``trainer.*`` to ``Trainer`` as given, so a config names these by string. Used only with the Lightning it was
    made from (``LIGHTNING_VERSION``; another reads Lightning's own signature, slower); after an upgrade rewrite it with
    ``python -c "import farmcli.config as c; c.write_trainer_settings()"`` (then ``ruff format`` it).
    """
    import inspect

    import lightning as L
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    names = {
        "ACCELERATORS": ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())),
        "STRATEGIES": ("auto", *sorted(StrategyRegistry.available_strategies())),
    }
    params = [
        f"    {name}: {_annotation_source(p.annotation)} = {p.default!r},"
        for name, p in inspect.signature(L.Trainer.__init__).parameters.items()
        if name != "self" and name not in TRAINER_SKIP
    ]
    return "\n".join(
        [
            f'"""The settings of Lightning {L.__version__}\'s ``Trainer`` (``trainer.*``), as a signature that imports',
            "neither Lightning nor torch, so a run config is checked in a fraction of a second.",
            "",
            "Generated by farmcli.config.trainer_settings_source(); do not edit.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
            "from datetime import timedelta",
            "from typing import Literal, Optional, Union",
            "",
            f'LIGHTNING_VERSION = "{L.__version__}"',
            '"""The Lightning this was made from; with another, the config reads Lightning\'s own signature."""',
            *(f"{k} = {v!r}" for k, v in names.items()),
            '"""The names ``trainer.accelerator`` and ``trainer.strategy`` take (Lightning\'s registries)."""',
            "",
            "",
            "def trainer(",
            *params,
            ") -> None:",
            '    """Keyword arguments of ``lightning.Trainer`` that a run config may set."""',
            "",
        ]
    )


def write_trainer_settings() -> None:
    from pathlib import Path

    Path(__file__).with_name("trainer_settings.py").write_text(trainer_settings_source())


def _annotation_source(t: Any) -> str:
    """A type annotation as source text (``Optional[int]``, ``Union[list[int], str, int]``)."""
    import typing

    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is type(None):
        return "None"
    if origin is typing.Union:
        parts = list(dict.fromkeys(_annotation_source(a) for a in args))
        if parts[-1] == "None" and len(parts) == 2:
            return f"Optional[{parts[0]}]"
        return parts[0] if len(parts) == 1 else f"Union[{', '.join(parts)}]"
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(_annotation_source(a) for a in args)}]"
    if isinstance(t, type):
        if t.__module__ == "builtins":
            return t.__name__
        if t.__module__ == "datetime":
            return t.__name__
        if t.__module__.startswith("lightning."):
            return "str"
    raise TypeError(f"Cannot write the annotation {t!r} of Lightning's Trainer; extend _annotation_source.")


def defaults() -> dict[str, Any]:
    return _parser().get_defaults().as_dict()


def _slot(value: Any) -> Any:
    """A slot given by name alone means that component with its default parameters; LightningCLI's spelling
    ``{class_path: NAME, init_args: {...}}`` is read as ``{name: NAME, params: {...}}``."""
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, Mapping) and ("class_path" in value or "init_args" in value):
        rest = {k: v for k, v in value.items() if k not in ("class_path", "init_args")}
        if "class_path" in value:
            rest["name"] = value["class_path"]
        if "init_args" in value:
            rest["params"] = value["init_args"]
        return rest
    return value


SPEC_SETTINGS = ("trainer.logger", "trainer.callbacks", "lr_scheduler", "optimizer")
"""Settings that name a class (farmcli/components.py): a name alone is ``{class_path: NAME, init_args: {}}``."""


LIST_SETTINGS = ("trainer.logger", "trainer.callbacks")
"""Settings that hold several classes: ``KEY+=VALUE`` appends to them."""


def _spec(value: Any) -> Any:
    return {"class_path": value, "init_args": {}} if isinstance(value, str) else value


def _as_list(value: Any) -> list:
    return [] if value in (None, False) else list(value) if isinstance(value, list) else [value]


def _seed_everything(value: Any) -> Any:
    """LightningCLI's ``seed_everything``: a seed, or ``true`` for a random one (recorded in config.yaml)."""
    if value is True:
        import random

        return random.SystemRandom().randrange(2**32)
    if value is False:
        raise UserError(
            "Bad setting: seed_everything = false: farm seeds every run, so that config.yaml repeats it. Give a "
            "seed (e.g. --seed_everything 3) or true for a random one."
        )
    return value


def merge(base: dict[str, Any], layer: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge ``layer`` onto ``base`` in place; a slot (or a class setting: a logger, a scheduler) whose
    component changes starts from empty params. A moved setting (``MOVED_SETTINGS``) merges under its new key."""
    if not path:
        layer = moved_settings(layer)
    for key, value in layer.items():
        if not path and key == "seed_everything":  # LightningCLI's name of farm's seed
            key, value = "seed", _seed_everything(value)
        where = f"{path}.{key}" if path else str(key)
        if where.endswith("+") and where[:-1] in LIST_SETTINGS:  # --trainer.callbacks+=NAME appends, as in LightningCLI
            key = key[:-1]
            base[key] = [*map(_spec, _as_list(base.get(key))), *map(_spec, _as_list(value))]
            continue
        if where in SPEC_SETTINGS:
            value, cur = _spec(value), _spec(base.get(key))
            if (
                isinstance(value, Mapping)
                and isinstance(cur, Mapping)
                and value.get("class_path") in (None, cur.get("class_path"))
            ):
                base[key] = {**cur, "init_args": {**(cur.get("init_args") or {}), **(value.get("init_args") or {})}}
            else:
                base[key] = copy.deepcopy(value)
            continue
        if path == "model" and key in SLOT_FIELDS:
            value = _slot(value)
            cur = base.get(key) or {}
            if (
                isinstance(value, Mapping)
                and isinstance(cur, Mapping)
                and "name" in value
                and value["name"] != cur.get("name")
            ):
                base[key] = {"name": value["name"], "params": copy.deepcopy(dict(value.get("params") or {}))}
                continue
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key != "params":
            merge(base[key], value, where)
        elif isinstance(value, Mapping) and key == "params" and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """``--model.fuse.name none``, ``--trainer.max_epochs=3`` or ``model.fuse.heads=4`` -> a nested mapping.

    Values are read as YAML scalars (``3`` is an int, ``[64, 32]`` a list, ``none`` a string). Inside a slot,
    a key other than ``name``/``params`` is a component parameter: ``model.fuse.heads`` = ``model.fuse.params.heads``.
    """
    out: dict[str, Any] = {}
    i = 0
    tokens = list(tokens)
    while i < len(tokens):
        tok = tokens[i]
        key = tok[2:] if tok.startswith("--") else tok
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif tok.startswith("--") and i + 1 < len(tokens) and not _is_option(tokens[i + 1]):
            raw = tokens[i + 1]
            i += 2
        elif tok.startswith("--"):
            raise UserError(
                f"{tok} needs a value: {tok} VALUE or {tok}=VALUE, e.g. --trainer.max_epochs 3. "
                f"`farm train --print-config` shows every setting with its current value."
            )
        else:
            raise UserError(
                f"Cannot read the setting '{tok}': give it as --KEY VALUE, --KEY=VALUE or "
                f"--set KEY=VALUE, e.g. --trainer.max_epochs 3."
            )
        parts = key.split(".")
        slot = len(parts) >= 2 and parts[0] == "model" and parts[1] in SLOT_FIELDS
        if slot and len(parts) >= 3:  # model.head.class_path / init_args.X, as LightningCLI writes them
            parts[2] = {"class_path": "name", "init_args": "params"}.get(parts[2], parts[2])
        if slot and len(parts) >= 3 and parts[2] not in ("name", "params"):
            parts = [*parts[:2], "params", *parts[2:]]
        for setting in SPEC_SETTINGS:  # --lr_scheduler.T_max 2 is its init_args.T_max
            n = setting.count(".") + 1
            if ".".join(parts[:n]) == setting and len(parts) > n and parts[n] not in ("class_path", "init_args"):
                parts = [*parts[:n], "init_args", *parts[n:]]
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw  # "" stays an (empty) string, not null
        except yaml.YAMLError:
            value = raw
        node = out
        for depth, p in enumerate(parts[:-1]):
            if ".".join(parts[: depth + 1]) in SPEC_SETTINGS and isinstance(node.get(p), str):
                node[p] = _spec(node[p])  # --lr_scheduler NAME, then --lr_scheduler.ARG VALUE
            elif slot and depth == 1 and isinstance(node.get(p), str):
                node[p] = _slot(node[p])  # --model.head mmoe, then --model.head.experts 3
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"The setting '{key}' conflicts with another override of '{p}'.")
        if ".".join(parts) in SPEC_SETTINGS and isinstance(node.get(parts[-1]), dict) and isinstance(value, str):
            node[parts[-1]]["class_path"] = value  # its arguments given first
        elif slot and len(parts) == 2 and isinstance(node.get(parts[-1]), dict) and isinstance(value, str):
            node[parts[-1]]["name"] = value
        elif parts[-1].endswith("+") and parts[-1] in node:  # --trainer.callbacks+=A --trainer.callbacks+=B
            node[parts[-1]] = [*_as_list(node[parts[-1]]), *_as_list(value)]
        else:
            node[parts[-1]] = value
    return out


def _is_option(tok: str) -> bool:
    """``--fit.name`` or ``-x`` is the next option, not a value; ``-1`` is a value."""
    if not tok.startswith("-"):
        return False
    try:
        float(tok)
    except ValueError:
        return True
    return False


def variant_layer(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """A variant (by name from the variants folder, or a YAML path) as (name, config layer)."""
    from farmcli.variants import load_variant

    v = load_variant(name_or_path)
    return v.name, v.layer


def resolve(
    config_files: Sequence[str | os.PathLike] = (),
    variant: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> RunConfig:
    """Defaults < config files (in order) < variant < overrides (``["--trainer.max_epochs", "1"]`` or
    ``{"trainer.max_epochs": 1}``), validated into a RunConfig.

    A config file's ``variant`` key is only a label (a resolved run config already holds the variant's
    choices); ``variant`` here, from ``--variant``, is applied as a layer.
    """
    d = defaults()
    for f in config_files:
        merge(d, load_yaml(f))
    if variant is not None and not variant.strip():
        raise UserError(
            "--variant is an empty string: give a variant name (`farm variants` lists them) or a YAML file."
        )
    if variant:
        name, layer = variant_layer(variant)
        merge(d, layer)
        d["variant"] = name
    merge(d, parse_overrides(as_tokens(overrides)))
    return validate(d)


def as_tokens(overrides: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """Overrides as the command line's ``KEY=VALUE`` items: a mapping may use dotted keys
    (``{"trainer.max_epochs": 1}``) or nest them; JSON is YAML, so the values keep their types."""
    import json

    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return list(overrides)


def validate(d: Mapping[str, Any]) -> RunConfig:
    """Check a merged config and make it a RunConfig: the names, types and ranges of the settings first (neither
    torch nor Lightning is imported for that, so a config error answers at once), then each slot component's
    parameters against its signature (no model is built to check a config)."""
    p = _parser()
    for key in set(d.get("trainer") or {}) & set(OURS):
        raise UserError(f"Bad setting: trainer.{key} is farm's to set: {OURS[key]}.")
    try:
        ns = p.parse_object(dict(d))
    except ArgumentError as e:
        raise UserError(
            f"Bad setting: {component_params.explain(e, d)}\nSettings are data.*, model.*, optim.*, fit.*, trainer.*, "
            f"seed and variant; `farm train --print-config` shows them all."
        ) from None
    raw = _plain_numbers(ns.as_dict())
    check_settings(raw)
    check_components(raw)
    model = ModelConfig.from_dict(raw["model"])
    check_cutoffs(model, raw["data"]["history_len"])  # the ones given, before the components are imported
    model = with_component_defaults(model)
    check_cutoffs(model, raw["data"]["history_len"])  # the defaults too
    check_attention_heads(model)
    return RunConfig(
        seed=raw["seed"],
        variant=raw["variant"],
        data=DataConfig(**raw["data"]),
        model=model,
        optim=OptimConfig(**raw["optim"]),
        fit=FitConfig(**raw["fit"]),
        trainer=raw["trainer"],
        lr_scheduler=raw.get("lr_scheduler"),
        optimizer=raw.get("optimizer"),
        ckpt_path=raw.get("ckpt_path"),
    )


def check_components(raw: dict[str, Any]) -> None:
    """Loggers, callbacks and the scheduler: each class found and its arguments named right (farmcli/components.py),
    written back as ``{class_path, init_args}`` (a list for loggers and callbacks)."""
    from farmcli import components

    for where in SPEC_SETTINGS:
        group, _, key = where.rpartition(".")
        node = raw[group] if group else raw
        if node.get(key) in (None, False, []):
            continue
        specs = components.check(where, node[key])
        node[key] = specs if where in LIST_SETTINGS else specs[0]


def check_settings(raw: Mapping[str, Any]) -> None:
    """The rules that a setting's type cannot say: finite numbers, the epoch and device counts, a run name."""
    bad = component_params.non_finite(raw)
    if bad is not None:
        key, value = bad
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "model" and parts[1] in SLOT_FIELDS and parts[2] == "params":
            key = ".".join([*parts[:2], *parts[3:]])  # model.head.params.dropout as the user writes it
        raise UserError(f"Bad setting: {key} = {value}: must be a finite number (inf and nan are not settings).")
    epochs = raw["trainer"].get("max_epochs")
    if epochs is not None and (epochs == 0 or epochs < -1):
        raise UserError(f"Bad setting: trainer.max_epochs must be >= 1 (or -1: no limit), got {epochs}.")
    devices = raw["trainer"].get("devices")
    if not _devices_ok(devices):
        raise UserError(
            f"Bad setting: trainer.devices = {devices!r}: give a number of devices (>= 1), a list of device ids "
            f'such as [0, 1], or -1 or "auto" for every device of trainer.accelerator.'
        )
    check_trainer_ranges(raw["trainer"])
    for key in ("data.source", "data.cache_dir", "fit.monitor", "fit.runs_dir", "variant"):
        group, _, field_ = key.rpartition(".")
        text = (raw[group] if group else raw).get(field_)
        if isinstance(text, str) and not text.strip():
            raise UserError(
                f"Bad setting: {key} is an empty string: give a value (`farm train --print-config` shows the default), "
                f"or leave the setting out."
            )
    workers, cores = raw["data"]["num_workers"], os.cpu_count() or 1
    if workers > 4 * cores:
        raise UserError(
            f"Bad setting: data.num_workers = {workers}: this machine has {cores} CPU cores, and each worker is a "
            f"process with its own memory. Use at most {4 * cores} (0 gathers batches in the training process)."
        )
    name = raw["fit"].get("name")
    if name is not None and (name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", os.sep))):
        raise UserError(
            f"Bad setting: fit.name = {name!r}: a run name is one folder name inside fit.runs_dir (no '/', not "
            f"'.' or '..'), e.g. --fit.name my-run; to write runs elsewhere, set --fit.runs_dir."
        )


TRAINER_RANGES: dict[str, tuple[float, str]] = {
    "check_val_every_n_epoch": (1, "validation runs every N epochs"),
    "accumulate_grad_batches": (1, "gradients of N batches make one step"),
    "log_every_n_steps": (1, "values are logged every N steps"),
    "num_nodes": (1, "the number of machines"),
    "gradient_clip_val": (0, "the largest gradient norm (0: no clipping)"),
    "num_sanity_val_steps": (-1, "validation batches before training (-1: all)"),
    "reload_dataloaders_every_n_epochs": (0, "0: never"),
    "overfit_batches": (0, "0: off"),
}
"""Lower bounds of Trainer arguments whose type admits what Lightning cannot run (or divides by, after an epoch)."""


def check_trainer_names(trainer: Mapping[str, Any]) -> None:
    """An unknown accelerator or strategy name, named without importing Lightning (its registries, as
    farmcli/trainer_settings.py recorded them; farmcli.trainer_check builds the Trainer for everything else)."""
    import difflib

    from farmcli import trainer_settings as ts

    if _cached_trainer_settings() is None:
        return
    for key, names in (("accelerator", ts.ACCELERATORS), ("strategy", ts.STRATEGIES)):
        value = trainer.get(key)
        if isinstance(value, str) and value not in names:
            near = difflib.get_close_matches(value, names, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise UserError(
                f"Bad setting: trainer.{key} = {value!r} is not a Lightning {key}.{hint} Known: {', '.join(names)}."
            )


def check_trainer_ranges(trainer: Mapping[str, Any]) -> None:
    """Trainer values that fail inside Lightning, or only after a whole epoch, named here before anything runs."""
    check_trainer_names(trainer)
    for key, (low, meaning) in TRAINER_RANGES.items():
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
            raise UserError(f"Bad setting: trainer.{key} = {value}: must be >= {low:g} ({meaning}).")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        raise UserError(
            f"Bad setting: trainer.val_check_interval = {interval}: a fraction of an epoch in (0, 1] or a number of "
            f"batches >= 1."
        )
    for key in ("max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise UserError(
                f"Bad setting: trainer.{key} = 0 leaves nothing to train. Leave it out (or -1 / 1.0: no limit)."
            )
    if trainer.get("limit_val_batches") == 0:
        raise UserError(
            "Bad setting: trainer.limit_val_batches = 0: farm keeps and evaluates the best epoch on the validation "
            "split, so it needs validation batches. Leave it out, or give a fraction such as 0.25."
        )
    least, most = trainer.get("min_epochs"), trainer.get("max_epochs")
    if isinstance(least, int) and isinstance(most, int) and most != -1 and least > most:
        raise UserError(
            f"Bad setting: trainer.min_epochs = {least} is above trainer.max_epochs = {most}: raise max_epochs or "
            f"lower min_epochs."
        )
    if trainer.get("barebones"):
        raise UserError(
            "Bad setting: trainer.barebones = true turns off the logging, checkpoints and progress a farm run needs "
            "(its best checkpoint is what farm evaluates). Leave it out."
        )


def _devices_ok(devices: Any) -> bool:
    """What Lightning takes as ``devices``: a count >= 1, -1 (all), "auto", or device ids (a list or "0,1")."""
    if isinstance(devices, list):
        return bool(devices) and all(isinstance(i, int) and i >= 0 for i in devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return True
        if "," in text:
            ids = [t.strip() for t in text.split(",") if t.strip()]
            return bool(ids) and all(t.isdigit() for t in ids)
        try:
            devices = int(text)
        except ValueError:
            return True  # not a count: Lightning names what it expects
    return not isinstance(devices, int) or devices >= 1 or devices == -1


def check_cutoffs(model: ModelConfig, history_len: int) -> None:
    """The dft and dft_identity modules keep the ``cutoff`` lowest of the L // 2 + 1 DFT bins of a length-L history."""
    bins = history_len // 2 + 1
    for slot in ("video_frequency", "live_frequency"):
        spec = getattr(model, slot)
        cutoff = spec.params.get("cutoff")
        if spec.name in ("dft", "dft_identity") and isinstance(cutoff, int) and cutoff < 1:
            raise UserError(
                f"Bad setting: model.{slot}.cutoff = {cutoff}: the frequency cut-off c must be >= 1 (the paper "
                f"tries 1, 3, 5, 7 and 9)."
            )
        if spec.name in ("dft", "dft_identity") and isinstance(cutoff, int) and cutoff > bins:
            raise UserError(
                f"Bad setting: model.{slot}.cutoff = {cutoff} with data.history_len = {history_len}: a history "
                f"of length L has L // 2 + 1 = {bins} frequency bins, so the cut-off must be <= {bins}. Lower "
                f"model.{slot}.cutoff or raise data.history_len."
            )


def check_attention_heads(model: ModelConfig) -> None:
    """The target attentions (eq. 11) and the preference encoder (eq. 12) split each history's width into heads."""
    from farmcli.model.layers import check_heads

    for key in ("target_heads", "preference_heads"):
        for width in ("d1", "d2"):
            check_heads(getattr(model.embed, width), getattr(model, key), f"model.{key}", f"model.embed.{width}")


def with_component_defaults(model: ModelConfig) -> ModelConfig:
    """Spell out every slot component's default parameters, so config.yaml shows (and pins) all of them; check
    every parameter (name and type) against the component's signature (``registry.get`` imports the built-in
    components itself)."""
    from farmcli import registry

    filled = dataclasses.replace(model)
    for slot in SLOT_FIELDS:
        spec = getattr(model, slot)
        factory = registry.get(slot, spec.name)
        params = {**component_params.defaults(slot, factory), **spec.params}
        component_params.check(slot, spec.name, factory, params)
        setattr(filled, slot, dataclasses.replace(spec, params=params))
    return filled


def _plain_numbers(x: Any) -> Any:
    """jsonargparse's range-checked numbers (PositiveInt ...) as plain int / float, so YAML and checkpoints
    hold ordinary values."""
    if isinstance(x, dict):
        return {k: _plain_numbers(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain_numbers(v) for v in x]
    if isinstance(x, int) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, float):
        return float(x)
    return x
