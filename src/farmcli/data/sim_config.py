"""The simulator's settings (SIMULATOR.md): every constant a field of `SimConfig`, its presets and ranges.

A module of its own, so that the simulator and its parts (sim_block, sim_entities) import the settings without
importing each other.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from farmcli.errors import UserError

DAY_MS = 86_400_000

# Fewer sessions at night, most in the evening (SIMULATOR.md: "more in the evening").
_HOUR_WEIGHTS = (
    *(0.4, 0.25, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 0.8, 0.8, 0.8, 0.9),  # 00:00 .. 11:00
    *(1.0, 1.0, 0.9, 0.9, 0.9, 1.0, 1.3, 1.6, 1.9, 2.0, 1.7, 1.0),  # 12:00 .. 23:00
)


@dataclass(frozen=True)
class SimConfig:
    """Every constant of SIMULATOR.md; defaults are the spec's values (changes are listed in CHANGELOG.md)."""

    seed: int = 0
    preset: str | None = None  # only names the dataset ("synthetic-<preset>"); None means "custom"
    # Entities.
    k: int = 16
    n_tags: int = 40
    n_tag_groups: int = 8
    tag_noise: float = 0.5
    n_live_authors: int = 3000
    n_video_authors: int = 30000
    share_live_authors_posting_video: float = 0.4
    author_noise: float = 0.6
    quality_sd: float = 0.5
    gift_appeal_sd: float = 0.5
    gift_tag_groups: int = 2
    gift_group_boost: float = 0.5
    zipf_exponent: float = 1.1
    n_clusters: int = 64
    # Users.
    n_users: int = 20000
    activity_shares: tuple[float, float, float] = (0.5, 0.35, 0.15)
    rho: float = 0.75
    pi_like_sd: float = 0.7
    pi_comment_sd: float = 0.7
    gifter_share: float = 0.05
    gifter_pi_gift: float = 3.0
    pi_gift_mean: float = -0.5
    pi_gift_sd: float = 0.5
    act_shift: tuple[float, float, float] = (-0.3, 0.0, 0.3)
    # Timeline and exposure.
    start_ms: int = 1_700_006_400_000  # 2023-11-15 00:00 UTC
    days_warmup: int = 3
    days_train: int = 6
    days_valid: int = 1
    days_test: int = 1
    sessions_per_day: tuple[float, float, float] = (0.6, 2.0, 5.0)
    hour_weights: tuple[float, ...] = _HOUR_WEIGHTS
    session_extra_mean: float = 20.0  # a session has 1 + Geometric(mean this) exposures
    gap_s: tuple[float, float] = (10.0, 40.0)
    p_live: float = 0.1
    p_reexpose: float = 0.2
    p_recommended: float = 0.5
    tag_temperature: float = 0.5
    p_page_flip: float = 0.1
    # Memory features.
    half_life_days: float = 3.0
    m_avid_window_days: float = 3.0
    memory_refresh_minutes: float = 60.0
    # Live labels (logit = intercept + coefficients x features).
    live_click_intercept: float = -3.4
    live_click_s: float = 1.0
    live_click_m_tag: float = 0.5
    live_click_m_avid: float = 0.8
    live_click_m_live: float = 0.6
    live_effective_view_intercept: float = -0.37
    live_effective_view_s: float = 0.8
    live_effective_view_m_live: float = 0.4
    live_long_view_intercept: float = -1.33
    live_long_view_s: float = 0.9
    live_long_view_m_avid: float = 0.5
    live_long_view_m_live: float = 0.4
    live_like_intercept: float = -4.55
    live_like_s: float = 0.7
    live_like_v_like: float = 2.5
    live_like_m_avid: float = 0.5
    live_comment_intercept: float = -4.85
    live_comment_s: float = 0.6
    live_comment_v_comment: float = 2.5
    live_gift_intercept: float = -6.2
    live_gift_s: float = 0.5
    live_gift_v_gift: float = 3.0
    live_gift_v_like: float = 1.0
    # Video labels.
    video_long_view_intercept: float = -1.0
    video_long_view_s: float = 1.0
    video_like_intercept: float = -3.87
    video_like_s: float = 0.8
    video_comment_intercept: float = -5.55
    video_comment_s: float = 0.6
    video_follow_intercept: float = -5.85
    video_follow_s: float = 0.8
    video_share_intercept: float = -6.0
    video_share_s: float = 0.6
    # Play time ranges [lo, hi) in ms, log-normal shaped inside each range.
    live_play_ms_short: tuple[int, int] = (1_000, 10_000)
    live_play_ms_effective: tuple[int, int] = (10_000, 60_000)
    live_play_ms_long: tuple[int, int] = (60_000, 7_200_000)
    video_play_ms_short: tuple[int, int] = (500, 15_000)
    video_play_ms_long: tuple[int, int] = (15_000, 300_000)
    play_log_sd: float = 1.5
    # Engineering.
    block_users: int = 10000  # users per shard; bounds memory (~0.5 GB at the default sizes)

    def __post_init__(self):
        _check_values(self)

    @property
    def days(self) -> int:
        return self.days_warmup + self.days_train + self.days_valid + self.days_test

    @property
    def boundaries(self) -> dict[str, int]:
        """Manifest boundaries in epoch ms."""
        train_start = self.start_ms + self.days_warmup * DAY_MS
        train_end = train_start + self.days_train * DAY_MS
        valid_end = train_end + self.days_valid * DAY_MS
        return {
            "train_start": train_start,
            "train_end": train_end,
            "valid_end": valid_end,
            "test_end": valid_end + self.days_test * DAY_MS,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)
        }


PRESETS: dict[str, dict] = {
    "tiny": {"n_users": 300, "n_live_authors": 300, "n_video_authors": 2000},
    "small": {"n_users": 3000, "n_live_authors": 1000, "n_video_authors": 10000},
    "default": {},
}


def _fail(name: str, msg: str) -> UserError:
    return UserError(f"simulator setting '{name}': {msg}")


_PLAY_RANGES = tuple(f.name for f in dataclasses.fields(SimConfig) if "_play_ms_" in f.name)
"""The play-time ranges [lo, hi) of SimConfig (ms): each must be 0 < lo < hi <= a day."""
MAX_EPOCH_MS = 253_402_300_799_999
"""9999-12-31 23:59:59.999 UTC: the last epoch millisecond a date can show (start_ms + every day must fit)."""

_LIMITS: dict[str, tuple[float, float, str]] = {
    # name: (low, high, brackets): "[]" closed, "()" open, "(]" / "[)" half-open. Upper bounds keep a block's
    # arrays (and every timestamp, as int64 epoch ms) finite; they sit far above any sensible setting.
    "seed": (0, math.inf, "[)"),
    "k": (1, 1024, "[]"),
    "n_tags": (1, 100_000, "[]"),
    "n_tag_groups": (1, 100_000, "[]"),
    "gift_tag_groups": (0, 100_000, "[]"),
    "n_live_authors": (1, 10**8, "[]"),
    "n_video_authors": (1, 10**8, "[]"),
    "n_clusters": (1, 100_000, "[]"),
    "n_users": (1, 2**53, "[]"),  # the disk check (farm data synth) refuses far fewer
    "block_users": (1, 10**7, "[]"),
    "days_warmup": (0, 3650, "[]"),
    "days_train": (1, 3650, "[]"),
    "days_valid": (0, 3650, "[]"),
    "days_test": (1, 3650, "[]"),
    "start_ms": (0, MAX_EPOCH_MS, "[]"),
    "session_extra_mean": (0, 10_000, "[]"),
    "sessions_per_day": (0, 1_000, "[]"),
    "hour_weights": (0, math.inf, "[)"),
    "activity_shares": (0, math.inf, "[)"),
    "gap_s": (0, 86_400, "(]"),
    "half_life_days": (0, math.inf, "()"),
    "m_avid_window_days": (0, math.inf, "[)"),
    "memory_refresh_minutes": (0, 60, "(]"),  # SIMULATOR.md: chunks of at most one hour
    "tag_temperature": (0, math.inf, "()"),
    "rho": (-1, 1, "[]"),
    "share_live_authors_posting_video": (0, 1, "[]"),
    "gifter_share": (0, 1, "[]"),
    "p_live": (0, 1, "()"),  # 0 writes no live row, 1 no video row: either table would be empty
    "p_reexpose": (0, 1, "[]"),
    "p_recommended": (0, 1, "[]"),
    "p_page_flip": (0, 1, "[]"),
    **dict.fromkeys(("tag_noise", "author_noise", "quality_sd", "gift_appeal_sd"), (0, math.inf, "[)")),
    **dict.fromkeys(("pi_like_sd", "pi_comment_sd", "pi_gift_sd", "play_log_sd"), (0, math.inf, "[)")),
    **dict.fromkeys(_PLAY_RANGES, (0, DAY_MS, "(]")),
}
"""The range of every bounded setting (each value of a list setting), checked before anything is written."""


def _inside(v: float, lo: float, hi: float, brackets: str) -> bool:
    return (lo < v if brackets[0] == "(" else lo <= v) and (v < hi if brackets[1] == ")" else v <= hi)


def _interval(lo: float, hi: float, brackets: str) -> str:
    show = lambda x: "inf" if x == math.inf else f"{x:,}"  # noqa: E731
    return f"{brackets[0]}{show(lo)}, {show(hi)}{brackets[1]}"


def _check_values(c: SimConfig) -> None:
    """Range checks, so a bad setting fails up front with its name and range rather than deep inside numpy."""
    for name, (lo, hi, brackets) in _LIMITS.items():
        v = getattr(c, name)
        if not all(_inside(x, lo, hi, brackets) for x in (v if isinstance(v, tuple) else (v,))):
            what = "every value must be" if isinstance(v, tuple) else "must be"
            shown = list(v) if isinstance(v, tuple) else v
            raise _fail(name, f"{what} in {_interval(lo, hi, brackets)}, got {shown!r}")
    last = c.start_ms + c.days * DAY_MS
    if last > MAX_EPOCH_MS:
        raise _fail(
            "start_ms",
            f"start_ms + {c.days} days ends at {last:,} ms, past {MAX_EPOCH_MS:,} (year 9999); "
            f"start_ms must be in [0, {MAX_EPOCH_MS - c.days * DAY_MS:,}] with these days",
        )
    if c.n_tag_groups > c.n_tags:
        raise _fail("n_tag_groups", f"must be <= n_tags ({c.n_tags})")
    if round(c.share_live_authors_posting_video * c.n_live_authors) > c.n_video_authors:
        raise _fail("n_video_authors", "must be >= share_live_authors_posting_video x n_live_authors")
    for name in ("activity_shares", "sessions_per_day", "hour_weights"):
        v = getattr(c, name)
        if sum(v) <= 0:
            raise _fail(name, f"must be non-negative with a positive sum, got {list(v)}")
    if len(c.hour_weights) != 24:
        raise _fail("hour_weights", f"needs 24 values (one per hour), got {len(c.hour_weights)}")
    for name in ("gap_s", *_PLAY_RANGES):
        lo, hi = getattr(c, name)
        if not 0 < lo < hi:
            raise _fail(name, f"must be [lo, hi] with 0 < lo < hi, got {[lo, hi]}")


def _number(text: str) -> Any:
    """``text`` as an int or float where it spells one, else unchanged."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _coerce(name: str, default: Any, value: Any) -> Any:
    """Check an override's type against the field's default; ints are accepted where floats are."""
    if name == "preset":
        if value is None or isinstance(value, str):
            return value
        raise _fail(name, f"must be a string, got {type(value).__name__}")
    if isinstance(value, str):  # YAML reads 1e17 (no dot) as a string: take it as the number it spells
        value = _number(value)
    if isinstance(default, bool) or isinstance(value, bool):
        raise _fail(name, f"must be a number, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(name, f"must be an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float, np.integer, np.floating)):
            try:
                number = float(value)
            except OverflowError:  # an int past float's range
                number = math.inf
            if math.isfinite(number):
                return number
        raise _fail(name, f"must be a finite number, got {value!r}")
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(name, f"must be a list of {len(default)} numbers, got {value!r}")
        if len(value) != len(default):
            raise _fail(name, f"must have {len(default)} values, got {len(value)}")
        return tuple(_coerce(name, d, v) for d, v in zip(default, value))
    raise _fail(name, "cannot be set")  # pragma: no cover


def sim_config(preset: str = "default", **overrides: Any) -> SimConfig:
    """The preset's config with ``overrides`` applied; UserError names any unknown or ill-typed setting."""
    if preset not in PRESETS:
        raise UserError(f"unknown simulator preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    defaults = {f.name: f.default for f in dataclasses.fields(SimConfig)}
    values = {"preset": preset, **PRESETS[preset]}
    for name, value in overrides.items():
        if name not in defaults:
            raise UserError(f"unknown simulator setting '{name}'; known settings: {', '.join(defaults)}.")
        values[name] = _coerce(name, defaults[name], value)
    return SimConfig(**values)
