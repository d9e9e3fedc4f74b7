"""Random batches shaped like the sample store's, and tiny model configs, for fast CPU tests."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from farmcli.model.config import SLOT_FIELDS, EmbedConfig, ModelConfig, SlotConfig
from farmcli.variants import slot_names

VOCAB = {
    "author": 40,
    "page": 5,
    "tag": 12,
    "cluster": 6,
    "user": 30,
    "n_play_buckets": 32,
    "n_lag_buckets": 24,
    "n_label_ids": 33,
    "history_len": 12,
}
"""Vocabulary sizes and L of the sample store; the frequency module's basis is made for L = 12 (most tests' L):
a batch of another L makes its own."""

FARM_SLOTS = {
    "video_frequency": "dft",
    "live_frequency": "dft_identity",
    "align": "infonce",
    "fuse": "cross_attention",
    "head": "ple",
}

TINY_PARAMS = {
    "none": {},
    "dft": {"gate_dims": [8]},
    "dft_identity": {"gate_dims": [8]},
    "infonce": {"dims": [16, 8]},
    "cross_attention": {"dim": 8, "heads": 2},
    "cross_attention_null": {"dim": 8, "heads": 2},
    "ple": {"expert_dims": [16], "tower_dims": [8]},
    "mmoe": {"experts": 3, "expert_dims": [16], "tower_dims": [8]},
    "shared_bottom": {"bottom_dims": [16], "tower_dims": [8]},
}

TINY_EMBED = EmbedConfig(
    author=4,
    page=2,
    tag=2,
    cluster=2,
    user=2,
    video_play=2,
    video_lag=2,
    video_label=2,
    live_play=2,
    live_lag=2,
    live_label=2,
)  # D1 = 14, D2 = 16, x_cand = 12


def tiny_config(variant: str = "farm", **slots: str) -> ModelConfig:
    """A built-in variant (its YAML's slot choices) with tiny widths; keyword arguments swap further slots."""
    names = {**FARM_SLOTS, **slot_names(variant), **slots}
    return ModelConfig(
        embed=TINY_EMBED,
        target_heads=2,
        preference_heads=2,
        **{slot: SlotConfig(names[slot], dict(TINY_PARAMS.get(names[slot], {}))) for slot in SLOT_FIELDS},
    )


def random_batch(
    B: int,
    L: int,
    vocab: dict[str, int] = VOCAB,
    seed: int = 0,
    empty_rows: Iterable[int] = (),
    empty_live_rows: Iterable[int] = (),
    n_users: int | None = None,
) -> dict[str, torch.Tensor]:
    """A left-padded batch; rows in ``empty_rows`` have no history at all, ``empty_live_rows`` no live history.

    Users repeat (``n_users`` distinct, default B // 2), as in a real batch.
    """
    g = torch.Generator().manual_seed(seed)

    def ints(low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=g)

    def mask(empty: set[int]) -> torch.Tensor:
        lengths = ints(1, L + 1, (B,))
        lengths[list(empty)] = 0
        return torch.arange(L)[None, :] >= (L - lengths)[:, None]

    empty = set(empty_rows)
    v_mask, l_mask = mask(empty), mask(empty | set(empty_live_rows))
    batch: dict[str, torch.Tensor] = {"v_mask": v_mask, "l_mask": l_mask}
    sizes = {
        "author": vocab["author"],
        "page": vocab["page"],
        "tag": vocab["tag"],
        "cluster": vocab["cluster"],
        "play": vocab["n_play_buckets"],
        "lag": vocab["n_lag_buckets"],
        "label": vocab["n_label_ids"],
    }
    for prefix, m, fields in (
        ("v", v_mask, ("author", "page", "tag", "play", "lag", "label")),
        ("l", l_mask, ("author", "page", "tag", "cluster", "play", "lag", "label")),
    ):
        for f in fields:
            low = 0 if f in ("play", "lag") else 1  # id 1 = out-of-vocabulary; buckets start at 0
            batch[f"{prefix}_{f}"] = ints(low, sizes[f], (B, L)) * m
    user_id = ints(0, n_users or max(1, B // 2), (B,)) + 1000
    batch["user_id"] = user_id
    batch["user"] = user_id % (vocab["user"] - 2) + 2
    for f in ("author", "page", "tag", "cluster"):
        batch[f] = ints(1, vocab[f], (B,))
    batch["labels"] = (torch.rand((B, 6), generator=g) < 0.3).float()
    batch["activity"] = ints(0, 3, (B,))
    batch["p"] = torch.rand((B, 6), generator=g)
    return batch
