"""Every model hyperparameter as a typed dataclass; a variant is a ModelConfig with other slot names.

A slot component's own hyperparameters are ``SlotConfig.params``, checked against its signature (model/params.py).
Defaults follow the paper (Sec. 4.1.3): L = 50, D1 = 92, D2 = 64, tau = 0.07, Adam with lr 1e-3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

from farmcli.batch import TASKS
from farmcli.errors import UserError
from farmcli.slots import SLOT_NAMES as SLOT_FIELDS

N_TASKS = len(TASKS)

Backend = Literal["auto", "reference", "cpu"]
"""Which implementation runs the forward pass (model/backends.py): a run setting (``fit.backend``) that says how to
run the model, not what it is, so checkpoints do not carry it."""
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass
class SlotConfig:
    """Which registered component fills a slot, and its keyword arguments."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: SlotConfig | str | Mapping[str, Any]) -> SlotConfig:
        """Accept ``"none"``, ``{"name": "dft", "params": {...}}`` or a SlotConfig (YAML stays short)."""
        if isinstance(value, SlotConfig):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and "name" in value and not set(value) - {"name", "params"}:
            return cls(str(value["name"]), dict(value.get("params") or {}))
        shown = dict(value) if isinstance(value, Mapping) else value
        raise UserError(f"A slot is a name or {{name: ..., params: {{...}}}}; got {shown!r}.")


@dataclass
class EmbedConfig:
    """Per-field embedding widths (eq. 8); their sums are D1 (video) and D2 (live), by default as in the paper:
    D1 = 24 + 4 + 8 + 16 + 16 + 24 = 92 and D2 = 24 + 4 + 8 + 8 + 8 + 6 + 6 = 64. Id fields share one table across
    the candidate and both domains (model/embed.py); behaviour fields (play, lag, label) have one per domain."""

    author: PositiveInt = 24
    page: PositiveInt = 4
    tag: PositiveInt = 8
    cluster: PositiveInt = 8
    user: PositiveInt = 16
    video_play: PositiveInt = 16
    video_lag: PositiveInt = 16
    video_label: PositiveInt = 24
    live_play: PositiveInt = 8
    live_lag: PositiveInt = 6
    live_label: PositiveInt = 6
    init_std: PositiveFloat = 0.2
    """Std of every embedding table's normal init, chosen on validation (docs/notebook/QUALITY.md): at 0.05 the
    LayerNorm-scaled preference features were ~40x the history features at the head input."""

    @property
    def d1(self) -> int:
        return self.author + self.page + self.tag + self.video_play + self.video_lag + self.video_label

    @property
    def d2(self) -> int:
        return self.author + self.page + self.tag + self.cluster + self.live_play + self.live_lag + self.live_label

    @property
    def cand_dim(self) -> int:
        """Width of x_cand: the candidate's user, author, page, tag and cluster embeddings."""
        return self.user + self.author + self.page + self.tag + self.cluster


@dataclass
class VocabSizes:
    """Table sizes the sample store gives (ids < these; 0 padding, 1 out-of-vocabulary) and the history length."""

    author: int
    page: int
    tag: int
    cluster: int
    user: int
    n_play_buckets: int = 32
    n_lag_buckets: int = 24
    n_label_ids: int = 33
    history_len: int = 50
    """L, the length of every history (the frequency module's DFT basis is made for it)."""

    @classmethod
    def parse(cls, value: VocabSizes | Mapping[str, int]) -> VocabSizes:
        """Accept the sample store's dict; keys this model does not use are ignored."""
        if isinstance(value, VocabSizes):
            return value
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in ("author", "page", "tag", "cluster", "user") if n not in value]
        if missing:
            raise UserError(
                f"Vocabulary sizes lack {', '.join(missing)}; the sample store's manifest should carry them."
            )
        return cls(**{n: int(value[n]) for n in names if n in value})


NOT_THE_MODEL = ("backend",)
"""Keys older checkpoints and config files hold under ``model`` that say how to run it, not what it is."""

WINDOW_GATE_PATH = "experiments.plugins.window_gate.WindowGateDFTFrequency"
"""Where ``gate_mean: window`` of ``dft`` / ``dft_identity`` went in issue 35: the research plugin ``dft_window``."""


def without_gate_mean(slot: str, spec: SlotConfig) -> SlotConfig:
    """``spec`` without the ``gate_mean`` that ``dft`` / ``dft_identity`` took before issue 35: old runs' ``events``
    (what the modules now always do) is dropped, ``window`` (now experiments/plugins/window_gate.py) refused."""
    if spec.name not in ("dft", "dft_identity") or "gate_mean" not in spec.params:
        return spec
    params = dict(spec.params)
    gate_mean = params.pop("gate_mean")
    if gate_mean == "window":
        raise UserError(
            f"Bad setting: model.{slot}.gate_mean = 'window': eq. 10's gate over the mean of the whole window is a "
            f"research component and left farmcli (issue 35): it is the `dft_window` plugin of "
            f"experiments/plugins/window_gate.py in the farmcli repository, not installed with the package "
            f"(experiments/README.md). Load it from the repository root with the root on the path (PYTHONPATH=. farm "
            f"... or python -m farmcli ...): --model.{slot} {WINDOW_GATE_PATH}, and leave gate_mean out (in a "
            f"config file: name: {WINDOW_GATE_PATH}, without gate_mean)."
        )
    if gate_mean != "events":
        raise UserError(
            f"Bad setting: model.{slot}.gate_mean = {gate_mean!r}: {spec.name} no longer takes gate_mean (issue "
            f"35); its gates read the mean of the history's events, which was gate_mean: events. Leave it out."
        )
    return SlotConfig(spec.name, params)


@dataclass
class ModelConfig:
    """The FARM model: embedding widths, attention heads, one SlotConfig per slot, the loss weight lambda."""

    embed: EmbedConfig = field(default_factory=EmbedConfig)
    target_heads: PositiveInt = 4
    """Heads of the target attentions over the video and live histories (eq. 11); must divide D1 and D2."""
    preference_heads: PositiveInt = 4
    """Heads of the self-attention preference encoder (eq. 12), built only when align or fuse uses it."""
    video_frequency: SlotConfig = field(default_factory=lambda: SlotConfig("dft"))
    live_frequency: SlotConfig = field(default_factory=lambda: SlotConfig("dft_identity"))
    """``dft_identity``: eq. 9 plus each event's own embedding (docs/DESIGN.md, "Where we depart from the paper");
    ``dft`` is eq. 9 as the paper writes it."""
    align: SlotConfig = field(default_factory=lambda: SlotConfig("infonce"))
    fuse: SlotConfig = field(default_factory=lambda: SlotConfig("cross_attention"))
    head: SlotConfig = field(default_factory=lambda: SlotConfig("ple"))
    cl_weight: NonNegativeFloat = 0.5
    """lambda of eq. 15 (paper range 0.1-0.9); used only when align is not ``none``."""
    output_bias: Literal["zero", "prior"] = "prior"
    """Initial bias of each task's logit: 0 (p = 0.5), or the training label rate's log-odds, so a rare task (gift:
    ~0.1% of impressions) does not spend its first steps unlearning p = 0.5."""
    preference_grad: NonNegativeFloat = 0.1
    """Scale of the gradient the preference branch (eq. 12-17) sends into the embedding tables (1: the paper's,
    0: none). At 1 InfoNCE turns the ids the candidate shares into user fingerprints (docs/DESIGN.md)."""

    def __post_init__(self) -> None:
        if isinstance(self.embed, Mapping):
            self.embed = _from_mapping(EmbedConfig, self.embed, "model.embed")
        for slot in SLOT_FIELDS:
            setattr(self, slot, without_gate_mean(slot, SlotConfig.parse(getattr(self, slot))))

    def with_slots(self, **names: str | SlotConfig) -> ModelConfig:
        """A copy with some slots swapped, e.g. ``cfg.with_slots(fuse="none")`` for w/o C-PF."""
        unknown = set(names) - set(SLOT_FIELDS)
        if unknown:
            raise UserError(f"Unknown slot(s) {', '.join(sorted(unknown))}. Known slots: {', '.join(SLOT_FIELDS)}.")
        copy = dataclasses.replace(self)
        for k, v in names.items():
            setattr(copy, k, SlotConfig.parse(v))
        return copy

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ModelConfig:
        """A mapping as YAML or a checkpoint's hyperparameters give it; old runs' ``backend`` is ignored (it is
        ``fit.backend`` now), and so is their ``gate_mean: events`` (``without_gate_mean``)."""
        return _from_mapping(cls, {k: v for k, v in value.items() if k not in NOT_THE_MODEL}, "model")

    @classmethod
    def parse(cls, value: ModelConfig | Mapping[str, Any] | None) -> ModelConfig:
        """None: the defaults (our recipe; the ``paper`` variant has the paper's values); a mapping: as YAML."""
        if value is None:
            return cls()
        return value if isinstance(value, ModelConfig) else cls.from_dict(value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class OptimConfig:
    """Adam (the paper's optimiser)."""

    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    """Adam's L2 on every parameter but the id tables (those take ``id_weight_decay`` when it is set)."""
    id_weight_decay: NonNegativeFloat | None = 1e-5
    """L2 on the id tables alone (the long tail a model memorises); None: ``weight_decay``; 0: none, as in the paper.
    1e-5 lifts base and FARM alike; a global decay would also shrink the small gates and attention projections
    to zero (docs/notebook/QUALITY.md, issue 27)."""

    @classmethod
    def parse(cls, value: OptimConfig | Mapping[str, Any] | None) -> OptimConfig:
        if value is None:
            return cls()
        return value if isinstance(value, OptimConfig) else _from_mapping(cls, value, "optim")


def _from_mapping(cls: type, value: Mapping[str, Any], where: str) -> Any:
    """Build a dataclass from a (YAML) mapping; a mistyped key is a UserError naming the known ones."""
    if isinstance(value, cls):
        return value
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        keys = ", ".join(f"{where}.{k}" for k in unknown)
        raise UserError(f"Unknown key(s) {keys}. Known: {', '.join(sorted(known))}.")
    return cls(**dict(value))
