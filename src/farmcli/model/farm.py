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
from typing import Any

import torch
from torch import Tensor, nn

from farmcli import registry
from farmcli.errors import UserError
from farmcli.model import params
from farmcli.model.config import N_TASKS, ModelConfig, SlotConfig, VocabSizes
from farmcli.model.embed import EmbeddingLayer
from farmcli.model.layers import SelfAttention, TargetAttention, attention_weights
from farmcli.model.ragged import BUCKETS, LengthGroups, on_rows, permute_rows, span_order, take_rows
from farmcli.slots import OPTIONAL_FLAGS, SLOTS, Align, FrequencyModule, Fuse, Head, missing_members


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
        v_live: Tensor,
        video_mask: Tensor,
        live_mask: Tensor,
        live_groups: LengthGroups | None = None,
        video_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``video_rows`` [B] bool: the rows whose V^_video is read (None: all); the others are left zero."""
        if video_rows is None:
            v_hat_video = self.video(v_video, video_mask)[0]
        else:
            v_hat_video = on_rows(lambda x, mask: self.video(x, mask)[0], video_rows, v_video, video_mask)
        if live_groups is None:
            return v_hat_video, self.live(v_live, live_mask)[0]
        return v_hat_video, live_groups.apply(lambda x, mask: self.live(x, mask)[0], sequences=(v_live, live_mask))


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
        self.live_rows_only = all(
            getattr(c, "live_rows_only", OPTIONAL_FLAGS["live_rows_only"]) or not c.uses_preference
            for c in (self.align, self.fuse)
        )
        """V^_video is read only for rows with a live event (both consumers say so): eq. 12 skips the others."""
        self.head: Head = build("head", cfg.head, in_dim=d1 + d2 + self.fuse.out_dim + dc, n_tasks=N_TASKS)
        self.length_buckets: tuple[int, ...] | None = BUCKETS
        """Span groups of the live rows in eq. 12 and 16-17 (None: every row at full length, as with aux)."""
        self.sort_rows = True
        """Put the batch in live-span order before the embedding (False: gather each group; for benchmarks)."""

    def set_output_bias(self, logits: list[float]) -> None:
        """Start the six task logits at ``logits`` (heads without towers keep their own init)."""
        if hasattr(self.head, "set_output_bias"):
            self.head.set_output_bias(logits)

    def _live_groups_off(self, return_aux: bool) -> bool:
        """Nothing runs on live length groups: no eq. 12, groups switched off, or full-size aux asked for."""
        return self.preference is None or self.length_buckets is None or return_aux

    def _live_groups(self, live_mask: Tensor, return_aux: bool) -> LengthGroups | None:
        """Live rows grouped by length for eq. 12 and 16-17; None where nothing uses them, or for full-size aux."""
        if self._live_groups_off(return_aux) or self.length_buckets is None:
            return None
        return LengthGroups.of(live_mask, self.length_buckets)

    def _video_rows(self, live_mask: Tensor, return_aux: bool) -> Tensor | None:
        """Rows whose V^_video is read (those with a live event); None: all of them (aux shows every row)."""
        if self.preference is None or return_aux or not self.live_rows_only:
            return None
        return live_mask.any(1)

    def forward(self, batch: Mapping[str, Tensor], return_aux: bool = False, with_cl: bool = True) -> FarmOutput:
        """``with_cl=False`` skips the align (eq. 13-14): scoring needs no L_cl, and no ``user_id`` then."""
        with attention_weights(return_aux):
            return self._forward(batch, return_aux, with_cl)

    def _forward(self, batch: Mapping[str, Tensor], return_aux: bool, with_cl: bool = True) -> FarmOutput:
        # rows sorted by live length once, on the ids, where eq. 12 and 16-17 run in length groups: each group
        # is then a slice of the batch, not a gather of [B, L, D] activations (model/ragged.py)
        order = None if self._live_groups_off(return_aux) or not self.sort_rows else span_order(batch["l_mask"])
        if order is not None:
            batch = take_rows(batch, order)
        video_mask, live_mask = batch["v_mask"].bool(), batch["l_mask"].bool()  # a uint8 mask would break ~mask

        # (8) embedding layer
        v_video, v_live, x_cand = self.embed(batch)

        # (9-10) intra-domain frequency-aware module: F = gate_low * Low[V] + gate_high * High[V]
        f_video, video_gates = self.video_frequency(v_video, video_mask)
        f_live, live_gates = self.live_frequency(v_live, live_mask)

        # (11) target attention of the candidate over each domain's history
        f_hat_video, video_weights = self.video_target(x_cand, f_video, video_mask)
        f_hat_live, live_weights = self.live_target(x_cand, f_live, live_mask)

        # (12) preference encoder, shared by align and fuse; live rows run on their own length and the video
        # self-attention only on rows with a live event, the only ones align and fuse read (model/ragged.py)
        live_groups = self._live_groups(live_mask, return_aux)
        if self.preference is not None:
            scale = self.cfg.preference_grad
            v_hat_video, v_hat_live = self.preference(
                scale_grad(v_video, scale),
                scale_grad(v_live, scale),
                video_mask,
                live_mask,
                live_groups,
                self._video_rows(live_mask, return_aux),
            )
        else:
            v_hat_video, v_hat_live = v_video, v_live

        # (13-14) cross-domain preference align: L_cl
        cl_loss: Tensor | None = None
        align_aux: dict[str, Tensor] = {}
        if with_cl:
            cl_loss, align_aux = self.align(v_hat_video, v_hat_live, video_mask, live_mask, batch["user_id"])

        # (16-17) cross-domain preference fuse: F^_cross
        if live_groups is None or not getattr(self.fuse, "length_invariant", OPTIONAL_FLAGS["length_invariant"]):
            f_hat_cross, fuse_aux = self.fuse(v_hat_video, v_hat_live, video_mask, live_mask, x_cand)
        else:  # each live event queries the video history: work in proportion to the live length
            f_hat_cross = live_groups.apply(
                lambda live, l_mask, video, v_mask, cand: _required(self.fuse(video, live, v_mask, l_mask, cand)[0]),
                sequences=(v_hat_live, live_mask),
                rows=(v_hat_video, video_mask, x_cand),
                sequence_output=False,
            )
            fuse_aux = {}

        # (18) + (6) multi-task head on Concat(F^_video, F^_live, F^_cross, x_cand)
        features = [f_hat_video, f_hat_live, *([] if f_hat_cross is None else [f_hat_cross]), x_cand]
        logits = self.head(torch.cat(features, dim=-1))
        if order is not None:  # back to the batch's order
            logits = permute_rows(logits, torch.argsort(order), order)

        aux: dict[str, Tensor] = {}
        if return_aux:
            aux = {"video_target_attention": video_weights, "live_target_attention": live_weights}
            aux.update(align_aux)
            aux.update(fuse_aux)
            if video_gates is not None:
                aux["alpha"], aux["beta"] = video_gates
            if live_gates is not None:
                aux["gamma"], aux["delta"] = live_gates
        return FarmOutput(logits, cl_loss, aux)
