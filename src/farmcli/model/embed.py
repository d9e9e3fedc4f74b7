"""The embedding layer (eq. 8): a batch of ids becomes V_video [B, L, D1], V_live [B, L, D2] and x_cand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from farmcli.model.config import EmbedConfig, VocabSizes

ID_FIELDS = ("author", "page", "tag", "cluster", "user")
"""Vocabularies with one table each, shared by the candidate and both histories (index 0 = padding)."""

VIDEO_FIELDS = ("author", "page", "tag", "play", "lag", "label")
LIVE_FIELDS = ("author", "page", "tag", "cluster", "play", "lag", "label")
CAND_FIELDS = ("user", "author", "page", "tag", "cluster")


class EmbeddingLayer(nn.Module):
    """Concat of per-field embeddings; padded history positions are zero whatever ids they hold.

    Zeroing by the mask (not only ``padding_idx``) matters: bucket 0 of play/lag/label may be a real value,
    and the frequency split needs padding at exactly zero before the FFT.
    """

    def __init__(self, cfg: EmbedConfig, vocab: VocabSizes):
        super().__init__()
        self.ids = nn.ModuleDict(
            {f: nn.Embedding(getattr(vocab, f), getattr(cfg, f), padding_idx=0) for f in ID_FIELDS}
        )
        sizes = {"play": vocab.n_play_buckets, "lag": vocab.n_lag_buckets, "label": vocab.n_label_ids}
        self.video = nn.ModuleDict({f: nn.Embedding(n, getattr(cfg, f"video_{f}")) for f, n in sizes.items()})
        self.live = nn.ModuleDict({f: nn.Embedding(n, getattr(cfg, f"live_{f}")) for f, n in sizes.items()})
        for module in [*self.ids.values(), *self.video.values(), *self.live.values()]:
            table = cast(nn.Embedding, module)
            nn.init.normal_(table.weight, std=cfg.init_std)
            if table.padding_idx is not None:
                nn.init.zeros_(table.weight[table.padding_idx])

    def _table(self, domain: nn.ModuleDict, field: str) -> nn.Embedding:
        return cast(nn.Embedding, domain[field] if field in domain else self.ids[field])

    def _sequence(
        self, batch: Mapping[str, Tensor], prefix: str, domain: nn.ModuleDict, fields: tuple[str, ...]
    ) -> Tensor:
        v = torch.cat([self._table(domain, f)(batch[f"{prefix}_{f}"]) for f in fields], dim=-1)
        return v * batch[f"{prefix}_mask"].unsqueeze(-1).to(v.dtype)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        v_video = self._sequence(batch, "v", self.video, VIDEO_FIELDS)
        v_live = self._sequence(batch, "l", self.live, LIVE_FIELDS)
        x_cand = torch.cat([self.ids[f](batch[f]) for f in CAND_FIELDS], dim=-1)
        return v_video, v_live, x_cand
