"""FARM's slots and what a component of each must provide: the one list of slots, as code.

A component is any callable registered under a slot (``farmcli.registry.register``), usually an
``nn.Module`` subclass. FARM builds it with the widths of :attr:`Slot.injected` (keyword arguments, followed by
the slot config's ``params``) and checks the result against the slot's Protocol before it trains anything, so
a component missing an attribute is an error naming it, not an ``AttributeError`` at the first batch.

Importing this module does not import torch: the Protocols' annotations are strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor


@runtime_checkable
class FrequencyModule(Protocol):
    """Eq. 9-10 for one domain: ``(V [B, L, D], mask [B, L]) -> (F [B, L, D], gates)``.

    ``gates`` is (low, high), each broadcastable to F, or None for a component without gates (``none``).
    A component with ``trailing_positions`` (see OPTIONAL_FLAGS) is also called as ``(V, mask, length=L)``.
    """

    def __call__(self, v: Tensor, mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]: ...


class TrailingFrequencyModule(Protocol):
    """A ``FrequencyModule`` with ``trailing_positions``: V may be the last l positions of windows of ``length``."""

    def __call__(
        self, v: Tensor, mask: Tensor, length: int | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]: ...


@runtime_checkable
class Align(Protocol):
    """Eq. 13-14: ``(video, live, video_mask, live_mask, user_id) -> (L_cl or None, aux)``.

    ``aux`` may carry "h_video" and "h_live" [B, d] (``farm report`` plots their cosine).
    """

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
    """Eq. 18 + 6: ``x [B, in_dim] -> logits [B, n_tasks]``.

    Optional: ``set_output_bias(logits)`` to start each task's logit at its label rate's log-odds.
    """

    def __call__(self, x: Tensor) -> Tensor: ...


OPTIONAL_FLAGS = {"length_invariant": False, "live_rows_only": False, "trailing_positions": False}
"""Attributes a component may set (read with these defaults). ``length_invariant`` (fuse): each live row's
output depends only on its own real events, so FARM may run live rows grouped by length (model/ragged.py).
``live_rows_only`` (align, fuse): a row without a live event changes neither the loss nor any other row's
output, and its own output is zero (InfoNCE leaves it out of L_cl and of everyone's negatives; the fuse has no
query for it), so FARM runs eq. 12-17 without such rows (a fifth of the rows on ``default``).
``trailing_positions`` (frequency): called as ``(V, mask, length=L)`` with V [B, l, D] the last l positions of
windows of L whose first L - l are padding, it returns F at those l positions as at full length; FARM then runs
the live frequency module on each live length group's trailing positions (model/ragged.py)."""


@dataclass(frozen=True)
class Slot:
    """One slot: the Protocol its components satisfy and the keyword arguments FARM passes them."""

    protocol: type
    injected: tuple[str, ...]
    """Widths FARM passes itself (see farmcli.model.farm); a component's other arguments are hyperparameters."""


SLOTS: dict[str, Slot] = {
    "video_frequency": Slot(FrequencyModule, ("dim",)),
    "live_frequency": Slot(FrequencyModule, ("dim",)),
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


__all__ = [
    "SLOTS",
    "SLOT_NAMES",
    "Slot",
    "FrequencyModule",
    "TrailingFrequencyModule",
    "Align",
    "Fuse",
    "Head",
    "missing_members",
]
