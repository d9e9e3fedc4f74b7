"""The CPU backend's embedding layer (eq. 8): the reference's lookups, their backward by ``index_add_``, adjacent
small fields as one product table, and a mostly empty history (live: a median of 3 of 50 events) looked up at its
real positions or its length groups' trailing positions only."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli.batch import CANDIDATE_FIELDS, HISTORY_FIELDS
from farmcli.model.cpu.options import current
from farmcli.model.cpu.ragged import LengthGroups, Trimmed
from farmcli.model.embed import EmbeddingLayer

NARROW_ROWS = 8
"""Tables at most this wide sum their gradient element by element (a flat ``index_add_``): for 51,200 ids,
0.96 against 1.97 ms row by row for a [5, 4] table, 1.9 against 3.0 ms for [42, 8]; from width 16 rows win."""

PRODUCT_ROWS = 8192
"""Adjacent fields whose vocabularies multiply to at most this many rows are one product table: on ``default`` the
six video fields take three lookups, the seven live ones four. Each lookup costs a gather, a slice and a gradient
sum whatever its width: the video embedding's forward and backward ran 1.15x faster (``--compare product-tables``)."""

SPARSE_FILL = 0.5
"""A history batch with fewer real positions than this share is embedded at its real positions only (on CPU)."""

Part = tuple[Tensor, Tensor, int | None]
"""One lookup of a concatenation: (weight [rows, width], ids, padding_idx or None)."""


class _RowGather(torch.autograd.Function):
    """cat([weight[ids] for each part], -1) gathered straight into one output's columns (5.7-6.2 against 7.6-7.8 ms
    with ``torch.cat``), whose backward sums rows by ``index_add_``: 1-3.5 against 5-6 ms for 51,200 ids with
    ``embedding_dense_backward`` (a base step 1.13x faster, FARM's 1.05x). Both add in id order: bit-equal."""

    @staticmethod
    def forward(ctx: Any, ids: tuple[Tensor, ...], paddings: tuple[int | None, ...], *weights: Tensor) -> Tensor:
        widths = [w.shape[1] for w in weights]
        out = weights[0].new_empty(ids[0].numel(), sum(widths))
        for weight, part_ids, columns in zip(weights, ids, out.split(widths, dim=1), strict=True):
            torch.index_select(weight, 0, part_ids.reshape(-1), out=columns)
        ctx.save_for_backward(*ids)
        ctx.paddings, ctx.rows, ctx.widths = paddings, [w.shape[0] for w in weights], widths
        return out.view(*ids[0].shape, out.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        grads = grad.reshape(-1, grad.shape[-1]).split(ctx.widths, dim=1)
        parts = zip(ctx.saved_tensors, grads, ctx.rows, ctx.paddings, strict=True)
        return None, None, *(_table_grad(ids.reshape(-1), g.contiguous(), rows, pad) for ids, g, rows, pad in parts)


def _table_grad(ids: Tensor, grad: Tensor, rows: int, padding_idx: int | None) -> Tensor:
    """The rows of ``grad`` [N, width] summed into a [rows, width] table by ``ids`` [N]; none at padding."""
    width = grad.shape[1]
    if width <= NARROW_ROWS:
        flat = (ids.reshape(-1, 1) * width + torch.arange(width, device=ids.device)).reshape(-1)
        table_grad = grad.new_zeros(rows * width).index_add_(0, flat, grad.reshape(-1)).view(rows, width)
    else:
        table_grad = grad.new_zeros(rows, width).index_add_(0, ids, grad)
    if padding_idx is not None:
        table_grad[padding_idx] = 0
    return table_grad


def gather(parts: Sequence[Part]) -> Tensor:
    """cat of ``F.embedding`` per part; by ``_RowGather`` on CPU while a gradient is recorded (``row_gather``)."""
    weights = [w for w, _, _ in parts]
    on_cpu = current().row_gather and weights[0].device.type == "cpu"
    if on_cpu and torch.is_grad_enabled() and any(w.requires_grad for w in weights):
        return _RowGather.apply(tuple(i for _, i, _ in parts), tuple(p for _, _, p in parts), *weights)
    return torch.cat([F.embedding(i, w, p) for w, i, p in parts], dim=-1)


def masked_lookup(table: nn.Embedding, ids: Tensor, mask: Tensor) -> Part:
    """``table(ids) * mask`` as a lookup, no pass over the output: a masked position reads the padding row (zero,
    never a gradient) or, where bucket 0 is a real value, a zero row appended to a copy of the (small) table."""
    if table.padding_idx is not None:
        return table.weight, ids.masked_fill(~mask, table.padding_idx), table.padding_idx
    weight = torch.cat([table.weight, table.weight.new_zeros(1, table.embedding_dim)])
    return weight, ids.masked_fill(~mask, table.num_embeddings), None


def field_runs(sizes: Sequence[int], max_rows: int = PRODUCT_ROWS) -> tuple[tuple[int, ...], ...]:
    """Adjacent fields (by position) in runs whose vocabularies multiply to <= ``max_rows`` (a larger one alone)."""
    runs: list[list[int]] = []
    rows = max_rows + 1
    for i, n in enumerate(sizes):
        if rows * n <= max_rows:
            runs[-1].append(i)
            rows *= n
        else:
            runs.append([i])
            rows = n
    return tuple(tuple(run) for run in runs)


def product_table(tables: Sequence[nn.Embedding]) -> Tensor:
    """Row (i_1 n_2 + i_2) n_3 + i_3 ... is cat(t_1[i_1], t_2[i_2], ...), plus a last zero row for padding; built
    from the parameters at every call (small), so gradients reach each table (none to a padding row)."""
    sizes = [t.num_embeddings for t in tables]
    parts = []
    for k, table in enumerate(tables):
        weight = table.weight
        if table.padding_idx is not None:
            weight = weight.index_fill(0, torch.tensor([table.padding_idx], device=weight.device), 0.0)
        shape = [1] * len(tables)
        shape[k] = sizes[k]
        parts.append(weight.view(*shape, -1).expand(*sizes, -1))
    product = torch.cat(parts, dim=-1).flatten(0, -2)
    return torch.cat([product, product.new_zeros(1, product.shape[1])])


def product_ids(tables: Sequence[nn.Embedding], ids: Sequence[Tensor], mask: Tensor | None) -> Tensor:
    """Rows of ``product_table(tables)`` for the fields' ``ids``, the zero row where ``mask`` is False; an id out
    of its table's range gets a row past the end, so the lookup fails as it would alone (no branch: it exports)."""
    combined, bad = torch.zeros_like(ids[0]), torch.zeros_like(ids[0], dtype=torch.bool)
    for table, field_ids in zip(tables, ids, strict=True):
        bad |= (field_ids < 0) | (field_ids >= table.num_embeddings)
        combined = combined * table.num_embeddings + field_ids
    rows = math.prod(t.num_embeddings for t in tables)
    combined = combined.masked_fill(bad, rows + 1)
    return combined if mask is None else combined.masked_fill(~mask, rows)


def _fields(layer: EmbeddingLayer, prefix: str, ids: Sequence[Tensor], mask: Tensor | None) -> Tensor:
    """The concatenated field embeddings of a history's ``ids``, zero where ``mask`` is False (None: all real)."""
    tables = layer.tables(prefix)
    parts: list[Part] = []
    for run in field_runs([t.num_embeddings for t in tables], PRODUCT_ROWS if current().product_tables else 0):
        if len(run) > 1:
            run_tables = [tables[i] for i in run]
            parts.append((product_table(run_tables), product_ids(run_tables, [ids[i] for i in run], mask), None))
        elif mask is None:
            parts.append((tables[run[0]].weight, ids[run[0]], tables[run[0]].padding_idx))
        else:
            parts.append(masked_lookup(tables[run[0]], ids[run[0]], mask))
    return gather(parts)


def history(layer: EmbeddingLayer, batch: Mapping[str, Tensor], prefix: str) -> Tensor:
    """``EmbeddingLayer.history``: V of one domain [B, L, D]."""
    mask = batch[f"{prefix}_mask"].bool()
    ids = [batch[f"{prefix}_{f}"] for f in HISTORY_FIELDS[prefix]]
    if mask.float().mean() < SPARSE_FILL:  # the real positions only, put into zeros: the backward sums fewer rows
        real = mask.reshape(-1).nonzero().squeeze(1)
        rows = _fields(layer, prefix, [i.reshape(-1)[real] for i in ids], None)
        return rows.new_zeros(mask.numel(), rows.shape[1]).index_copy(0, real, rows).view(*mask.shape, -1)
    return _fields(layer, prefix, ids, mask)


def trimmed_history(layer: EmbeddingLayer, batch: Mapping[str, Tensor], prefix: str, groups: LengthGroups) -> Trimmed:
    """The history at its length groups' trailing positions only: the lookups on their flat index."""
    index = groups.trailing_index()
    mask = batch[f"{prefix}_mask"].bool().reshape(-1)[index]
    ids = [batch[f"{prefix}_{f}"].reshape(-1)[index] for f in HISTORY_FIELDS[prefix]]
    return Trimmed.of_rows(groups, _fields(layer, prefix, ids, mask))


def candidate(layer: EmbeddingLayer, batch: Mapping[str, Tensor]) -> Tensor:
    """``EmbeddingLayer.candidate``: x_cand [B, Dc]."""
    tables = [layer.ids[f] for f in CANDIDATE_FIELDS]
    return gather([(t.weight, batch[f], t.padding_idx) for t, f in zip(tables, CANDIDATE_FIELDS)])  # type: ignore[misc]
