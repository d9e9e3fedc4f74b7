"""The embedding layer (eq. 8): a batch of ids becomes V_video [B, L, D1], V_live [B, L, D2] and x_cand [B, Dc]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from farmcli.batch import CANDIDATE_FIELDS, HISTORY_FIELDS, ID_FIELDS
from farmcli.model.config import EmbedConfig, VocabSizes


class EmbeddingLayer(nn.Module):
    """Concat of per-field embeddings; padded history positions are zero whatever ids they hold.

    Id tables are shared by the candidate and both histories (the same author is the same row in both domains:
    what lets preference transfer). Zeroing by the mask, not the ids, matters: bucket 0 of play/lag/label is a
    real value, and the frequency split needs padding at exactly zero.
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

    def tables(self, prefix: str) -> list[nn.Embedding]:
        """The tables of a history's fields (``HISTORY_FIELDS[prefix]``), in order."""
        domain = self.video if prefix == "v" else self.live
        return [cast(nn.Embedding, domain[f] if f in domain else self.ids[f]) for f in HISTORY_FIELDS[prefix]]

    def history(self, batch: Mapping[str, Tensor], prefix: str) -> Tensor:
        """V of one domain [B, L, D]: its fields' embeddings side by side, zero at padding."""
        fields = [table(batch[f"{prefix}_{f}"]) for table, f in zip(self.tables(prefix), HISTORY_FIELDS[prefix])]
        v = torch.cat(fields, dim=-1)
        return v * batch[f"{prefix}_mask"].unsqueeze(-1).to(v.dtype)

    def candidate(self, batch: Mapping[str, Tensor]) -> Tensor:
        """x_cand [B, Dc]: the user's and the candidate author's id embeddings side by side."""
        return torch.cat([self.ids[f](batch[f]) for f in CANDIDATE_FIELDS], dim=-1)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        return self.history(batch, "v"), self.history(batch, "l"), self.candidate(batch)
