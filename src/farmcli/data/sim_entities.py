"""The simulator's global entities (tags, authors, sampling tables), drawn once from the seed.

Users are independent given these, which is what lets the simulator generate users block by block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from farmcli.data.sim_config import SimConfig


@dataclass(frozen=True)
class Domain:
    """The authors of one domain (live or video) with the tables that sample them in O(log n)."""

    ids: np.ndarray
    """Author ids of the domain, ordered by primary tag (tag-major) so each tag is one contiguous run."""
    tag_cum: np.ndarray
    """tag + cumulative popularity within the tag, normalised to (tag, tag + 1]: sampling an author of
    tag t is one searchsorted of t + U(0,1), vectorised over any mix of tags."""
    pop_cum: np.ndarray
    """Cumulative global popularity over ``ids`` normalised to (0, 1]."""
    has_tag: np.ndarray
    """Tags with at least one author here; the tag softmax masks the others so a draw never lands empty."""
    tag_last: np.ndarray
    """Index in ``ids`` of each tag's last author: t + r can round up to t + 1, this keeps it in tag t."""

    def by_tag(self, tag: np.ndarray, r: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.tag_cum, tag + r, side="right")
        return self.ids[np.minimum(i, self.tag_last[tag])]

    def by_popularity(self, r: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.pop_cum, r, side="right")
        return self.ids[np.minimum(i, len(self.ids) - 1)]


@dataclass(frozen=True)
class Entities:
    tag_centre: np.ndarray  # (T, k) float64, unit rows
    vec: np.ndarray  # (n_authors, k) float32, author vector a
    tag: np.ndarray  # (n_authors,) int32, primary tag
    cluster: np.ndarray  # (n_authors,) int32
    q: np.ndarray  # (n_authors,) float64, quality
    ga: np.ndarray  # (n_authors,) float64, gift appeal
    live: Domain
    video: Domain

    @property
    def n_authors(self) -> int:
        return len(self.tag)


def _domain(ids: np.ndarray, tag: np.ndarray, weight: np.ndarray, n_tags: int) -> Domain:
    ids = ids[np.lexsort((ids, tag[ids]))]
    t, w = tag[ids], weight[ids]
    pop_cum = np.cumsum(w) / w.sum()
    pop_cum[-1] = 1.0
    counts = np.bincount(t, minlength=n_tags)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cs = np.cumsum(w)
    before = np.concatenate([[0.0], cs])[start][t]  # cumulative weight before this tag's run
    total = np.bincount(t, weights=w, minlength=n_tags)[t]
    tag_cum = t + (cs - before) / total
    last = start + counts - 1
    has = counts > 0
    tag_cum[last[has]] = np.arange(n_tags)[has] + 1.0  # exact upper end: t + U never spills into tag t+1
    return Domain(ids=ids.astype(np.int64), tag_cum=tag_cum, pop_cum=pop_cum, has_tag=has, tag_last=np.maximum(last, 0))


def make_entities(cfg: SimConfig) -> Entities:
    """Tags, authors and their domains; the only randomness here is SeedSequence([seed, 0])."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))
    k, T, G = cfg.k, cfg.n_tags, cfg.n_tag_groups
    group_centre = rng.standard_normal((G, k))
    tag_group = np.arange(T) * G // T
    c = group_centre[tag_group] + cfg.tag_noise * rng.standard_normal((T, k))
    tag_centre = c / np.linalg.norm(c, axis=1, keepdims=True)

    n_live = cfg.n_live_authors
    n_shared = int(round(cfg.share_live_authors_posting_video * n_live))
    n_video_only = cfg.n_video_authors - n_shared
    n = n_live + n_video_only  # live authors are ids 0..n_live-1, video-only authors follow
    tag = rng.integers(0, T, n).astype(np.int32)
    vec = tag_centre[tag] + cfg.author_noise * rng.standard_normal((n, k))
    q = cfg.quality_sd * rng.standard_normal(n)
    ga = cfg.gift_appeal_sd * rng.standard_normal(n)
    ga += np.where(tag_group[tag] < cfg.gift_tag_groups, cfg.gift_group_boost, 0.0)
    # Centroids from the same per-coordinate spread as author vectors, so every cluster gets authors.
    centroid = rng.standard_normal((cfg.n_clusters, k)) * np.sqrt(1.0 / k + cfg.author_noise**2)
    d2 = (vec**2).sum(1)[:, None] - 2.0 * vec @ centroid.T + (centroid**2).sum(1)[None, :]
    cluster = d2.argmin(1).astype(np.int32)
    shared = np.sort(rng.permutation(n_live)[:n_shared])

    live_ids = np.arange(n_live)
    video_ids = np.concatenate([shared, np.arange(n_live, n)])
    # Zipf popularity by rank within each domain: ranks over the union would let the one author of rank 1
    # dominate whichever domain it lands in (a third of all live impressions at the `small` size).
    live_weight, video_weight = np.zeros(n), np.zeros(n)
    live_weight[live_ids] = (rng.permutation(len(live_ids)) + 1.0) ** -cfg.zipf_exponent
    video_weight[video_ids] = (rng.permutation(len(video_ids)) + 1.0) ** -cfg.zipf_exponent
    return Entities(
        tag_centre=tag_centre,
        vec=vec.astype(np.float32),
        tag=tag,
        cluster=cluster,
        q=q,
        ga=ga,
        live=_domain(live_ids, tag, live_weight, T),
        video=_domain(video_ids, tag, video_weight, T),
    )
