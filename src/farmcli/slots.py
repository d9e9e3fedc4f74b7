"""FARM's slots and what a component of each must provide: the one list of slots, as code.

A component is a callable registered under a slot (usually an ``nn.Module``), built with :attr:`Slot.injected` and
its ``params`` as keywords and checked against the slot's Protocol before training, so a missing attribute is an
error naming it, not an ``AttributeError`` at the first batch. No torch import: the annotations are strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor


@runtime_checkable
class FrequencyModule(Protocol):
    """Eq. 9-10 for one domain: ``(V [B, L, D], mask [B, L]) -> (F [B, L, D], gates)``, built with ``dim`` and
    ``length`` (L); ``gates`` is (low, high), each [B] or [B, D], or None for a component without gates (``none``)."""

    def __call__(self, v: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]: ...


@runtime_checkable
class Align(Protocol):
    """Eq. 13-14: ``(video, live, video_mask, live_mask, user_id) -> (L_cl or None, aux)``; ``aux`` may carry
    "h_video" and "h_live" [B, d] (``farm report`` plots their cosine)."""

    uses_preference: bool
    """True: receive the self-attended histories V^ of eq. 12 (FARM builds the encoder only when asked)."""

    def __call__(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, user_id: Tensor
    ) -> tuple[Tensor | None, dict[str, Tensor]]: ...


@runtime_checkable
class Fuse(Protocol):
    """Eq. 16-17: ``(video, live, video_mask, live_mask, x_cand) -> (F^_cross [B, out_dim] or None, aux)``."""

    uses_preference: bool
    out_dim: int
    """Width FARM adds to the head's input (0 when the component returns None)."""

    def __call__(
        self, video: Tensor, live: Tensor, video_mask: Tensor, live_mask: Tensor, x_cand: Tensor
    ) -> tuple[Tensor | None, dict[str, Tensor]]: ...


@runtime_checkable
class Head(Protocol):
    """Eq. 18 + 6: ``x [B, in_dim] -> logits [B, n_tasks]``; optional ``set_output_bias(logits)`` starts each
    task's logit at its label rate's log-odds."""

    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Slot:
    """One slot: the Protocol its components satisfy and the keyword arguments FARM passes them."""

    protocol: type
    injected: tuple[str, ...]
    """Widths FARM passes itself (see farmcli.model.farm); a component's other arguments are hyperparameters."""


SLOTS: dict[str, Slot] = {
    "video_frequency": Slot(FrequencyModule, ("dim", "length")),
    "live_frequency": Slot(FrequencyModule, ("dim", "length")),
    "align": Slot(Align, ("video_dim", "live_dim")),
    "fuse": Slot(Fuse, ("video_dim", "live_dim", "cand_dim")),
    "head": Slot(Head, ("in_dim", "n_tasks")),
}
"""Every slot in the order of the forward pass; the one list that the registry, the config and FARM read."""

SLOT_NAMES: tuple[str, ...] = tuple(SLOTS)


def missing_members(slot: str, component: object) -> list[str]:
    """Members of the slot's Protocol that ``component`` lacks (empty when it satisfies the contract)."""
    protocol = SLOTS[slot].protocol
    if isinstance(component, protocol):
        return []
    members = [m for m in ("__call__", *getattr(protocol, "__annotations__", {})) if m != "return"]
    return [m for m in members if not hasattr(component, m)]


__all__ = ["SLOTS", "SLOT_NAMES", "Slot", "FrequencyModule", "Align", "Fuse", "Head", "missing_members"]
