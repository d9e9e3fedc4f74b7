"""The CPU backend's length groups: row-wise sequence work on length buckets, so short histories skip their padding.

Live histories are short (``default``: median 3 of L = 50 events, 90% at most 13), yet eq. 12 and 16-17 cost in
proportion to L. Each row is computed on its own, so rows grouped by span run on only that many trailing positions
(histories are left-padded): the same outputs up to float rounding, padding being masked and zeroed anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

BUCKETS = (4, 8, 16, 32)
"""Upper bounds of the span groups; a last group takes the rest. Few groups: each costs a set of kernel calls."""


@dataclass(frozen=True)
class LengthGroups:
    """Rows of a batch sorted into groups by span; group i is ``sizes[i]`` consecutive rows of ``perm`` whose
    last ``keep[i]`` positions hold every real event."""

    length: int
    perm: Tensor
    sizes: tuple[int, ...]
    keep: tuple[int, ...]
    in_order: bool = False
    """``perm`` is the identity (the rows were sorted by span first, ``span_order``): groups are slices."""
    _pieces: list[tuple[Tensor, list[Tensor]]] = field(default_factory=list, compare=False, repr=False)
    """Sequence outputs of ``apply`` with their per-group pieces: a later ``apply`` reads the pieces instead of
    splitting and trimming the output again (whose backward writes zero-filled full-size gradients)."""

    @classmethod
    def of(cls, mask: Tensor, bounds: Sequence[int] = BUCKETS) -> LengthGroups:
        """Group rows of ``mask`` [B, L] (True = real event) by span, empty rows first (``span``): with any mask the
        span keeps every real event, so the result never depends on how the mask looks."""
        length = mask.shape[1]
        spans = span(mask)
        perm = torch.argsort(spans, stable=True)
        ordered = spans[perm]
        uppers = [*(b for b in sorted(bounds) if b < length), length]
        ends = torch.searchsorted(ordered, torch.tensor(uppers, device=mask.device), right=True).tolist()
        sizes, keep = [], []
        for start, end in zip([0, *ends], ends):
            if end > start:
                sizes.append(end - start)
                keep.append(max(1, int(ordered[end - 1])))
        in_order = bool((spans[1:] >= spans[:-1]).all())
        return cls(length, perm, tuple(sizes), tuple(keep), in_order)

    def apply(
        self,
        fn: Callable[..., Tensor],
        sequences: Sequence[Tensor | Trimmed],
        rows: Sequence[Tensor] = (),
        output: Literal["padded", "rows", "trimmed"] = "padded",
    ) -> Any:
        """``fn(*trimmed sequences, *row tensors)`` per group, in batch order: ``sequences`` [B, L, ...] or
        ``Trimmed`` by these groups, ``rows`` [B, ...]. fn's [b, keep, D] is left-padded back to [B, L, D]
        (``"padded"``) or kept as a ``Trimmed``; with ``"rows"`` fn returns [b, D]."""
        if len(self.sizes) == 1 and self.keep[0] == self.length and self.in_order:  # nothing to trim or move
            out = fn(*(s.pieces[0] if isinstance(s, Trimmed) else s for s in sequences), *rows)
            return Trimmed(self, (out,)) if output == "trimmed" else out
        # one gather per input (none when the rows are in order), then contiguous splits: their backward is a
        # concatenation, not a zero-filled full-size gradient per group
        inverse = torch.argsort(self.perm)
        split_sequences = [self._trimmed(s, inverse) for s in sequences]
        split_rows = [self._grouped(r, inverse).split(self.sizes) for r in rows]
        pieces = [fn(*(s[i] for s in split_sequences), *(r[i] for r in split_rows)) for i in range(len(self.sizes))]
        if output == "trimmed":
            return Trimmed(self, tuple(pieces))
        if output == "rows":
            out = torch.cat(pieces)
            return out if self.in_order else permute_rows(out, inverse, self.perm)
        out = Trimmed(self, tuple(pieces)).padded()
        self._pieces.append((out, pieces))
        return out

    def rows_from(self, start: int) -> LengthGroups:
        """These groups without the batch's first ``start`` rows (rows in span order: the rows without an event)."""
        if not start:
            return self
        assert self.in_order, "only a span-sorted batch drops leading rows"
        sizes, keep, left = [], [], start
        for size, k in zip(self.sizes, self.keep, strict=True):
            if size > left:
                sizes.append(size - left)
                keep.append(k)
            left = max(0, left - size)
        return LengthGroups(self.length, self.perm[start:] - start, tuple(sizes), tuple(keep), True)

    def trailing_index(self) -> Tensor:
        """Flat positions in a [B, L] batch of every group's trailing ``keep`` positions, group by group."""
        starts = [0, *torch.tensor(self.sizes).cumsum(0).tolist()]
        positions = [torch.arange(self.length - k, self.length, device=self.perm.device) for k in self.keep]
        return torch.cat(
            [(self.perm[a:b, None] * self.length + p).reshape(-1) for a, b, p in zip(starts, starts[1:], positions)]
        )

    def _trimmed(self, x: Tensor | Trimmed, inverse: Tensor) -> Sequence[Tensor]:
        """Each group's rows of x [B, L, ...] on its trailing ``keep`` positions."""
        if isinstance(x, Trimmed):
            assert x.groups.sizes == self.sizes and x.groups.keep == self.keep, "trimmed by other groups"
            return x.pieces
        for output, pieces in self._pieces:
            if output is x:
                return pieces
        groups = self._grouped(x, inverse).split(self.sizes)
        return [g[:, self.length - keep :] for g, keep in zip(groups, self.keep, strict=True)]

    def _grouped(self, x: Tensor, inverse: Tensor) -> Tensor:
        return x if self.in_order else permute_rows(x, self.perm, inverse)


@dataclass(frozen=True)
class Trimmed:
    """A [B, L, D] sequence batch held as its length groups' trailing positions: ``pieces[i]`` is
    [groups.sizes[i], groups.keep[i], D], the rows of group i. What is left out is zero (padding)."""

    groups: LengthGroups
    pieces: tuple[Tensor, ...]

    @classmethod
    def of_rows(cls, groups: LengthGroups, rows: Tensor) -> Trimmed:
        """The pieces of ``rows`` [N, D], the positions of ``groups.trailing_index()`` in its order."""
        pieces = rows.split([size * keep for size, keep in zip(groups.sizes, groups.keep, strict=True)])
        return cls(groups, tuple(p.view(s, k, -1) for p, s, k in zip(pieces, groups.sizes, groups.keep, strict=True)))

    def map(self, fn: Callable[[Tensor], Tensor]) -> Trimmed:
        return Trimmed(self.groups, tuple(fn(p) for p in self.pieces))

    def rows_from(self, start: int) -> Trimmed:
        """Without the batch's first ``start`` rows (``LengthGroups.rows_from``): each group left keeps its last."""
        if not start:
            return self
        groups = self.groups.rows_from(start)
        kept = self.pieces[len(self.pieces) - len(groups.sizes) :]
        return Trimmed(groups, tuple(p[p.shape[0] - n :] for p, n in zip(kept, groups.sizes, strict=True)))

    def padded(self) -> Tensor:
        """[B, L, D] in batch order, zeros where the pieces leave positions out; padded piece by piece and
        concatenated, so the backward is views of the gradient, not a clone of it per piece."""
        groups = self.groups
        out = torch.cat([F.pad(p, (0, 0, groups.length - k, 0)) for p, k in zip(self.pieces, groups.keep, strict=True)])
        return out if groups.in_order else permute_rows(out, torch.argsort(groups.perm), groups.perm)


def span(mask: Tensor) -> Tensor:
    """[B] positions from a row's first real event to the end of ``mask`` [B, L]; 0 for an empty row."""
    length, mask = mask.shape[1], mask.bool()
    first = mask.to(torch.uint8).argmax(1)
    return torch.where(mask.any(1), length - first, torch.zeros_like(first))


def span_order(mask: Tensor) -> Tensor | None:
    """The stable row order that sorts ``mask`` [B, L] by span (empty rows first), None if it already is: applied to
    a batch's ids, every length group is a slice and no [B, L, D] activation is gathered into groups and back."""
    spans = span(mask)
    if bool((spans[1:] >= spans[:-1]).all()):
        return None
    return torch.argsort(spans, stable=True)


def take_rows(batch: Mapping[str, Any], order: Tensor) -> dict[str, Any]:
    """``batch`` with the rows of each tensor (all [B, ...]) in ``order``; other values as they are."""
    return {k: v.index_select(0, order) if isinstance(v, Tensor) and v.ndim else v for k, v in batch.items()}


class _PermuteRows(torch.autograd.Function):
    """x[perm] whose gradient is grad[inverse], another row gather: advanced indexing would scatter-add it into
    zeros (index_put with accumulate), 20-30 ms per [1024, 50, D] tensor on a CPU, 6% of FARM's training step."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(x: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
    """``x[perm]`` along the first axis, where ``perm`` is a permutation and ``inverse`` its inverse."""
    if not x.requires_grad:
        return x.index_select(0, perm)
    return _PermuteRows.apply(x, perm, inverse)
