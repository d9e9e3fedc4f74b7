"""The batch a sample store hands the model, stated once for the store, the embedding, the export and the tests
(the model package imports nothing else of the data side). A dict of tensors: the candidate's ids [B], each history
field [B, L] under its prefix (``v_author`` ...; left-padded with 0) with a bool ``v_mask`` / ``l_mask``, ``labels``
[B, 6] float in ``TASKS`` order, ``user_id`` and ``activity`` [B], and ``p`` [B, 6] for simulated data."""

from __future__ import annotations

TASKS = ("click", "effective_view", "long_view", "like", "comment", "gift")
"""The six live labels, in the paper's order (CTR, ETR, LVTR, LTR, CMTR, GTR)."""

ACTIVITY_LEVELS = ("low", "mid", "high")
"""The user activity groups of ``activity`` (0, 1, 2)."""

CANDIDATE_FIELDS = ("user", "author", "page", "tag", "cluster")
"""The candidate's ids [B]: the user and the live-streaming author it is scored for."""

ID_FIELDS = ("author", "page", "tag", "cluster", "user")
"""Vocabularies with one embedding table each, shared by the candidate and both histories (0 = padding)."""

DOMAINS = {"video": "v", "live": "l"}
"""Each history's batch key prefix."""

HISTORY_FIELDS = {
    "v": ("author", "page", "tag", "play", "lag", "label"),
    "l": ("author", "page", "tag", "cluster", "play", "lag", "label"),
}
"""A history's fields by its prefix, in the order their embeddings are concatenated (eq. 8)."""


def history_keys(prefix: str) -> tuple[str, ...]:
    """The batch keys of one history: its fields, then its mask."""
    return (*(f"{prefix}_{f}" for f in HISTORY_FIELDS[prefix]), f"{prefix}_mask")
