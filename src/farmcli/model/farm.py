"""FARM (Fig. 2): slots filled from the registry, forward pass in the order of equations 8-18.

Where eq. 12's self-attention lives: the preference encoder (V -> V^) is shared by align (eq. 13) and
fuse (eq. 16), so FARM owns it and builds it only when the align or fuse component declares
``uses_preference``. With both ``none`` (the base model) it does not exist: a ``none`` slot adds no
parameters and no loss term. The target attentions of eq. 11 exist in every variant; without a frequency
module they attend over the raw V instead of F.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farmcli import registry
from farmcli.errors import UserError
from farmcli.model import params
from farmcli.model.config import N_TASKS, ModelConfig, SlotConfig, VocabSizes
from farmcli.model.embed import EmbeddingLayer
from farmcli.model.layers import SelfAttention, TargetAttention, attention_weights
from farmcli.model.ragged import BUCKETS, LengthGroups, Trimmed, permute_rows, span_order, take_rows
from farmcli.slots import (
    OPTIONAL_FLAGS,
    SLOTS,
    Align,
    FrequencyModule,
    Fuse,
    Head,
    TrailingFrequencyModule,
    missing_members,
)


@dataclass
class FarmOutput:
    logits: Tensor
    """[B, 6] in TASKS order (click, effective_view, long_view, like, comment, gift)."""
    cl_loss: Tensor | None
    """L_cl of eq. 14; None when align is ``none``."""
    aux: dict[str, Tensor] = field(default_factory=dict)
    """With ``return_aux``: h_video, h_live, the gates alpha, beta (video) and gamma, delta (live),
    cross_attention [B, heads, L_live, L_video], video/live_target_attention [B, heads, L], as present."""


class PreferenceEncoder(nn.Module):
    """Eq. 12: V^_video = MH-Self-Att(V_video), V^_live = MH-Self-Att(V_live) (each user's own preferences)."""

    def __init__(self, video_dim: int, live_dim: int, heads: int):
        super().__init__()
        self.video = SelfAttention(video_dim, heads)
        self.live = SelfAttention(live_dim, heads)

    def forward(
        self,
        v_video: Tensor,
        v_live: Tensor | Trimmed,
        video_mask: Tensor,
        live_mask: Tensor,
        live_groups: LengthGroups | None = None,
    ) -> tuple[Tensor, Tensor]:
        v_hat_video = self.video(v_video, video_mask)[0]
        if live_groups is None:
            assert isinstance(v_live, Tensor)
            return v_hat_video, self.live(v_live, live_mask)[0]
        return v_hat_video, live_groups.apply(lambda x, mask: self.live(x, mask)[0], sequences=(v_live, live_mask))


def _live_rows(x: Tensor | Trimmed, rows: slice, scale: float) -> Tensor | Trimmed:
    """``scale_grad(x[rows], scale)`` for V_live held whole or trimmed (``rows``: a tail of the batch)."""
    if isinstance(x, Trimmed):
        return x.rows_from(rows.start or 0).map(lambda piece: scale_grad(piece, scale))
    return scale_grad(x[rows], scale)


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass; ``scale`` times its gradient in the backward pass (0: a stop-gradient)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return x.detach() + scale * (x - x.detach())


def build(slot: str, spec: SlotConfig, **dims: Any) -> Any:
    """Instantiate the registered component of a slot with FARM's widths plus the config's params (checked
    against its signature), and check the result against the slot's Protocol (farmcli.slots)."""
    factory = registry.get(slot, spec.name)
    params.check(slot, spec.name, factory, spec.params)
    component = factory(**dims, **spec.params)
    missing = missing_members(slot, component)
    if missing:
        raise UserError(
            f"{slot} '{spec.name}' ({type(component).__qualname__}) lacks {', '.join(missing)}, which every "
            f"{slot} component provides (see farmcli.slots.{SLOTS[slot].protocol.__name__})."
        )
    return component


def _required(x: Tensor | None) -> Tensor:
    """A length-invariant fuse returns F^_cross (only ``none`` returns None, and it is not length-invariant)."""
    assert x is not None
    return x


class FARM(nn.Module):
    """Batch of ids -> FarmOutput (six logits, L_cl, and for analysis the aux tensors); see the module docstring."""

    def __init__(self, cfg: ModelConfig | Mapping[str, Any], vocab: VocabSizes | Mapping[str, int]):
        super().__init__()
        self.cfg = cfg = ModelConfig.parse(cfg)
        d1, d2, dc = cfg.embed.d1, cfg.embed.d2, cfg.embed.cand_dim
        self.embed = EmbeddingLayer(cfg.embed, VocabSizes.parse(vocab))
        self.video_frequency: FrequencyModule = build("video_frequency", cfg.video_frequency, dim=d1)
        self.live_frequency: FrequencyModule = build("live_frequency", cfg.live_frequency, dim=d2)
        self.video_target = TargetAttention(dc, d1, cfg.target_heads)
        self.live_target = TargetAttention(dc, d2, cfg.target_heads)
        self.align: Align = build("align", cfg.align, video_dim=d1, live_dim=d2)
        self.fuse: Fuse = build("fuse", cfg.fuse, video_dim=d1, live_dim=d2, cand_dim=dc)
        uses_preference = self.align.uses_preference or self.fuse.uses_preference
        self.preference = PreferenceEncoder(d1, d2, cfg.preference_heads) if uses_preference else None
        self.live_trailing = getattr(self.live_frequency, "trailing_positions", OPTIONAL_FLAGS["trailing_positions"])
        """The live frequency module may run on the live length groups' trailing positions (slots.py)."""
        self.cross_domain = self.preference is not None or not (cfg.align.name == cfg.fuse.name == "none")
        """Eq. 12-17 exist: not with both align and fuse ``none`` (the base model), which read nothing."""
        self.live_rows_only = all(
            getattr(c, "live_rows_only", OPTIONAL_FLAGS["live_rows_only"]) or not c.uses_preference
            for c in (self.align, self.fuse)
        )
        """Align and fuse read nothing of a row without a live event (both say so): eq. 12-17 skip such rows."""
        self.head: Head = build("head", cfg.head, in_dim=d1 + d2 + self.fuse.out_dim + dc, n_tasks=N_TASKS)
        self.length_buckets: tuple[int, ...] | None = BUCKETS
        """Span groups of the live rows in eq. 8-12 and 16-17 (None: every row at full length, as with aux)."""
        self.trim_live = True
        """V_live and eq. 9-11 on the live length groups' trailing positions (False: at full length; for
        benchmarks)."""
        self.sort_rows = True
        """Put the batch in live-span order before the embedding (False: gather each group and compute every row
        in eq. 12-17; for benchmarks)."""

    def set_output_bias(self, logits: list[float]) -> None:
        """Start the six task logits at ``logits`` (heads without towers keep their own init)."""
        if hasattr(self.head, "set_output_bias"):
            self.head.set_output_bias(logits)

    def _groups_on(self, return_aux: bool) -> bool:
        """The live history runs on its length groups: not with groups switched off, or for full-size aux."""
        return self.length_buckets is not None and not return_aux

    def _sorts_rows(self, return_aux: bool) -> bool:
        """The batch is first put in live-span order, so that the groups are slices (model/ragged.py), where eq.
        12-17 run in them: without those (the base model) regrouping the few [B, D] rows that eq. 11 reads and
        writes costs less than sorting the batch's two dozen id tensors."""
        return self.sort_rows and self._groups_on(return_aux) and self.cross_domain

    def _live_groups(self, live_mask: Tensor, return_aux: bool) -> LengthGroups | None:
        """Live rows grouped by length for eq. 8-12 and 16-17; None when switched off, or for full-size aux."""
        if not self._groups_on(return_aux) or self.length_buckets is None:
            return None
        return LengthGroups.of(live_mask, self.length_buckets)

    def _rows_read(self, live_mask: Tensor, sorted_rows: bool) -> slice:
        """The rows eq. 12-17 run on: in a span-sorted batch whose align and fuse read only rows with a live
        event (``live_rows_only``), the rows after those without one (a fifth on ``default``); else all."""
        skipped = int((~live_mask.any(1)).sum()) if sorted_rows and self.live_rows_only else 0
        return slice(skipped, None) if skipped < live_mask.shape[0] else slice(None)  # no live event at all: all

    def forward(self, batch: Mapping[str, Tensor], return_aux: bool = False, with_cl: bool = True) -> FarmOutput:
        """``with_cl=False`` skips the align (eq. 13-14): scoring needs no L_cl, and no ``user_id`` then."""
        with attention_weights(return_aux):
            return self._forward(batch, return_aux, with_cl)

    def _live_frequency(
        self, v_live: Tensor | Trimmed, live_mask: Tensor, groups: LengthGroups | None
    ) -> tuple[Tensor | Trimmed, tuple[Tensor, Tensor] | None]:
        """Eq. 9-10 on the live history, on each length group's trailing positions where the module allows it."""
        if groups is None or not self.live_trailing:
            v_live = v_live.padded() if isinstance(v_live, Trimmed) else v_live
            return self.live_frequency(v_live, live_mask)
        frequency, length = cast(TrailingFrequencyModule, self.live_frequency), live_mask.shape[1]
        f_live = groups.apply(
            lambda v, mask: frequency(v, mask, length=length)[0], sequences=(v_live, live_mask), output="trimmed"
        )
        return f_live, None

    def _cross_domain(
        self,
        batch: Mapping[str, Tensor],
        v_video: Tensor,
        v_live: Tensor | Trimmed,
        x_cand: Tensor,
        video_mask: Tensor,
        live_mask: Tensor,
        live_groups: LengthGroups | None,
        sorted_rows: bool,
        with_cl: bool,
    ) -> tuple[Tensor | None, Tensor | None, dict[str, Tensor]]:
        """Eq. 12-17 -> F^_cross (None without a fuse), L_cl (None without an align or ``with_cl``), aux."""
        # (12) preference encoder, shared by align and fuse. Where both read only rows with a live event, eq. 12-17
        # run on those rows alone (a tail of the sorted batch; the others get F^_cross = 0), live rows on their
        # own length (model/ragged.py)
        rows = self._rows_read(live_mask, sorted_rows)
        video_mask_read, live_mask_read = video_mask[rows], live_mask[rows]
        read_groups = None if live_groups is None else live_groups.rows_from(rows.start or 0)
        if self.preference is not None:
            scale = self.cfg.preference_grad
            v_hat_video, v_hat_live = self.preference(
                scale_grad(v_video[rows], scale),
                _live_rows(v_live, rows, scale),
                video_mask_read,
                live_mask_read,
                read_groups,
            )
        else:  # align and fuse (if any) read V itself
            v_hat_video = v_video[rows]
            v_hat_live = (v_live.padded() if isinstance(v_live, Trimmed) else v_live)[rows]

        # (13-14) cross-domain preference align: L_cl
        cl_loss: Tensor | None = None
        align_aux: dict[str, Tensor] = {}
        if with_cl:
            cl_loss, align_aux = self.align(
                v_hat_video, v_hat_live, video_mask_read, live_mask_read, batch["user_id"][rows]
            )

        # (16-17) cross-domain preference fuse: F^_cross
        if read_groups is None or not getattr(self.fuse, "length_invariant", OPTIONAL_FLAGS["length_invariant"]):
            f_hat_cross, fuse_aux = self.fuse(v_hat_video, v_hat_live, video_mask_read, live_mask_read, x_cand[rows])
        else:  # each live event queries the video history: work in proportion to the live length
            f_hat_cross = read_groups.apply(
                lambda live, l_mask, video, v_mask, cand: _required(self.fuse(video, live, v_mask, l_mask, cand)[0]),
                sequences=(v_hat_live, live_mask_read),
                rows=(v_hat_video, video_mask_read, x_cand[rows]),
                output="rows",
            )
            fuse_aux = {}
        if f_hat_cross is not None and rows.start:  # rows without a live event: no query, F^_cross = 0
            f_hat_cross = F.pad(f_hat_cross, (0, 0, rows.start, 0))
        return f_hat_cross, cl_loss, {**align_aux, **fuse_aux}

    def _forward(self, batch: Mapping[str, Tensor], return_aux: bool, with_cl: bool = True) -> FarmOutput:
        # rows sorted by live length once, on the ids, where the live history runs in length groups: each group
        # is then a slice of the batch, not a gather of [B, L, D] activations (model/ragged.py)
        sorted_rows = self._sorts_rows(return_aux)
        order = span_order(batch["l_mask"]) if sorted_rows else None
        if order is not None:
            batch = take_rows(batch, order)
        video_mask, live_mask = batch["v_mask"].bool(), batch["l_mask"].bool()  # a uint8 mask would break ~mask
        live_groups = self._live_groups(live_mask, return_aux)
        trimmed = live_groups if self.trim_live else None  # the groups that eq. 8-11 run on

        # (8) embedding layer; in length groups, V_live only at each group's trailing positions
        v_video, v_live, x_cand = self.embed(batch, trimmed)

        # (9-10) intra-domain frequency-aware module: F = gate_low * Low[V] + gate_high * High[V]
        f_video, video_gates = self.video_frequency(v_video, video_mask)
        f_live, live_gates = self._live_frequency(v_live, live_mask, trimmed)

        # (11) target attention of the candidate over each domain's history
        f_hat_video, video_weights = self.video_target(x_cand, f_video, video_mask)
        f_hat_live, live_weights = self.live_target(x_cand, f_live, live_mask, trimmed)

        # (12-17) cross-domain preference: encoder, align (L_cl) and fuse (F^_cross); the base model has none
        f_hat_cross, cl_loss, cross_aux = None, None, dict[str, Tensor]()
        if self.cross_domain:
            f_hat_cross, cl_loss, cross_aux = self._cross_domain(
                batch, v_video, v_live, x_cand, video_mask, live_mask, live_groups, sorted_rows, with_cl
            )

        # (18) + (6) multi-task head on Concat(F^_video, F^_live, F^_cross, x_cand)
        features = [f_hat_video, f_hat_live, *([] if f_hat_cross is None else [f_hat_cross]), x_cand]
        logits = self.head(torch.cat(features, dim=-1))
        if order is not None:  # back to the batch's order
            logits = permute_rows(logits, torch.argsort(order), order)

        aux: dict[str, Tensor] = {}
        if return_aux:
            aux = {"video_target_attention": video_weights, "live_target_attention": live_weights, **cross_aux}
            if video_gates is not None:
                aux["alpha"], aux["beta"] = video_gates
            if live_gates is not None:
                aux["gamma"], aux["delta"] = live_gates
        return FarmOutput(logits, cl_loss, aux)
