"""The embedding layer (eq. 8): a batch of ids becomes V_video [B, L, D1], V_live [B, L, D2] and x_cand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.model.config import EmbedConfig, VocabSizes
from farmcli.model.ragged import LengthGroups, Trimmed

ID_FIELDS = ("author", "page", "tag", "cluster", "user")
"""Vocabularies with one table each, shared by the candidate and both histories (index 0 = padding)."""

VIDEO_FIELDS = ("author", "page", "tag", "play", "lag", "label")
LIVE_FIELDS = ("author", "page", "tag", "cluster", "play", "lag", "label")
CAND_FIELDS = ("user", "author", "page", "tag", "cluster")


class _RowGather(torch.autograd.Function):
    """table[ids] whose backward sums the rows with ``index_add_``.

    On CPU, torch's ``embedding_dense_backward`` adds one row per id through a TensorIterator call each: 5-6 ms
    for the 51,200 ids of a [1024, 50] history, against 1-3.5 ms for ``index_add_`` on the same gradient; a
    base training step is 1.13x faster, FARM's 1.05x (``benchmarks/bench_train.py --compare embedding``).
    Both add the rows in id order, so the gradients are the same to the bit (tests/model/test_embed.py).
    """

    @staticmethod
    def forward(ctx, table: Tensor, ids: Tensor, padding_idx: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(ids)
        ctx.rows, ctx.padding_idx = table.shape[0], padding_idx
        return F.embedding(ids, table)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        width = grad.shape[-1]
        table_grad = grad.new_zeros(ctx.rows, width).index_add_(
            0, ids.reshape(-1), grad.reshape(-1, width).contiguous()
        )
        if ctx.padding_idx >= 0:
            table_grad[ctx.padding_idx] = 0
        return table_grad, None, None


def lookup(table: nn.Embedding, ids: Tensor, row_gather: bool = True, weight: Tensor | None = None) -> Tensor:
    """``table(ids)``, with the faster CPU backward of ``_RowGather`` when a gradient is being recorded.

    ``weight``: look up in this tensor instead of ``table.weight`` (one made from it, e.g. with a row appended).
    """
    if weight is None:
        weight = table.weight
    if not row_gather or weight.device.type != "cpu" or not (weight.requires_grad and torch.is_grad_enabled()):
        return F.embedding(ids, weight, table.padding_idx)
    padding_idx = -1 if table.padding_idx is None else table.padding_idx
    return _RowGather.apply(weight, ids, padding_idx)


def masked_lookup(table: nn.Embedding, ids: Tensor, mask: Tensor, row_gather: bool = True) -> Tensor:
    """``table(ids)`` with zero rows where ``mask`` is False, with no pass over the output to zero them.

    A masked position looks up a zero row instead: the table's padding row (zero at init, and it never gets a
    gradient, so it stays zero), or for a table without one (a bucket 0 that is a real value) a zero row
    appended to a copy of the table for this lookup; these tables are small. Values and gradients are those
    of ``table(ids) * mask``.
    """
    if table.padding_idx is not None:
        return lookup(table, ids.masked_fill(~mask, table.padding_idx), row_gather)
    weight = torch.cat([table.weight, table.weight.new_zeros(1, table.embedding_dim)])
    return lookup(table, ids.masked_fill(~mask, table.num_embeddings), row_gather, weight)


SPARSE_FILL = 0.5
"""A history batch with fewer real positions than this share is embedded at its real positions only (on CPU)."""


class EmbeddingLayer(nn.Module):
    """Concat of per-field embeddings; padded history positions are zero whatever ids they hold.

    Zeroing by the mask (not only by the ids) matters: bucket 0 of play/lag/label may be a real value, and the
    frequency split needs padding at exactly zero before the FFT (``masked_lookup``).
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

        self.row_gather = True
        """CPU backward by ``index_add_`` (``lookup``); False: torch's ``embedding_dense_backward``."""

    def _table(self, domain: nn.ModuleDict, field: str) -> nn.Embedding:
        return cast(nn.Embedding, domain[field] if field in domain else self.ids[field])

    def _sequence(
        self, batch: Mapping[str, Tensor], prefix: str, domain: nn.ModuleDict, fields: tuple[str, ...]
    ) -> Tensor:
        mask = batch[f"{prefix}_mask"].bool()
        tables, ids = [self._table(domain, f) for f in fields], [batch[f"{prefix}_{f}"] for f in fields]
        if mask.device.type == "cpu" and not torch.compiler.is_compiling() and mask.float().mean() < SPARSE_FILL:
            # a mostly empty history (live: a median of 3 of 50 events): look up the real positions only and
            # put them into zeros; the backward sums a tenth of the rows
            real = mask.reshape(-1).nonzero().squeeze(1)
            rows = torch.cat([lookup(t, i.reshape(-1)[real], self.row_gather) for t, i in zip(tables, ids)], dim=-1)
            return rows.new_zeros(mask.numel(), rows.shape[1]).index_copy(0, real, rows).view(*mask.shape, -1)
        return torch.cat([masked_lookup(t, i, mask, self.row_gather) for t, i in zip(tables, ids)], dim=-1)

    def _trimmed(
        self,
        batch: Mapping[str, Tensor],
        prefix: str,
        domain: nn.ModuleDict,
        fields: tuple[str, ...],
        groups: LengthGroups,
    ) -> Trimmed:
        """The history at its length groups' trailing positions only: one lookup per field on their flat index."""
        index = groups.trailing_index().to(batch[f"{prefix}_mask"].device)
        mask = batch[f"{prefix}_mask"].bool().reshape(-1)[index]
        rows = torch.cat(
            [
                masked_lookup(self._table(domain, f), batch[f"{prefix}_{f}"].reshape(-1)[index], mask, self.row_gather)
                for f in fields
            ],
            dim=-1,
        )
        return Trimmed.of_rows(groups, rows)

    def forward(
        self, batch: Mapping[str, Tensor], live_groups: LengthGroups | None = None
    ) -> tuple[Tensor, Tensor | Trimmed, Tensor]:
        """With ``live_groups``, V_live comes as each group's trailing positions (the rest would be padding)."""
        v_video = self._sequence(batch, "v", self.video, VIDEO_FIELDS)
        v_live: Tensor | Trimmed
        if live_groups is None:
            v_live = self._sequence(batch, "l", self.live, LIVE_FIELDS)
        else:
            v_live = self._trimmed(batch, "l", self.live, LIVE_FIELDS, live_groups)
        x_cand = torch.cat(
            [lookup(cast(nn.Embedding, self.ids[f]), batch[f], self.row_gather) for f in CAND_FIELDS], dim=-1
        )
        return v_video, v_live, x_cand
