"""KuaiLive-M3's per-author fields (module docstring of :mod:`~farmcli.data.importers.kuailive_m3`): a live
author's tag, from the videos they post, and cluster, from their live rooms' embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from farmcli.data.importers._kmeans import kmeans_labels
from farmcli.data.importers._readers import RawTable, embedding_components, str_expr


def _owners(pairs: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """``key`` -> its author (the smallest valid author id paired with it)."""
    valid = pl.col(key).is_not_null() & pl.col("author_id").is_not_null() & (pl.col("author_id") >= 0)
    return pairs.filter(valid).group_by(key).agg(pl.col("author_id").min())


def photo_tags(tables: dict[str, RawTable]) -> tuple[pl.DataFrame | None, list[str]]:
    """(photo_id -> tag id, tag names in id order from 1), from photo_tag's first-level category."""
    t = tables.get("photo_tag")
    if t is None:
        return None, []
    named = t.scan().select(
        photo_id=t.int_col("photo_id"),
        name=str_expr("first_level_category_name", t.schema["first_level_category_name"]),
    )
    pairs = named.filter(pl.col("photo_id").is_not_null() & pl.col("name").is_not_null()).collect(engine="streaming")
    names = sorted(pairs["name"].unique().to_list())
    vocab = pl.DataFrame({"name": names, "tag": pl.Series(range(1, len(names) + 1), dtype=pl.Int32)})
    per_photo = pairs.join(vocab, on="name").group_by("photo_id").agg(pl.col("tag").min()).sort("photo_id")
    return per_photo, names


def author_tags(tables: dict[str, RawTable], photo_tags: pl.DataFrame | None, plays: pl.LazyFrame) -> pl.DataFrame:
    """author_id -> the most frequent tag of the videos they post (ties: the smaller tag); photo -> author from
    photo_meta, else from ``plays`` (the staged photo_play rows)."""
    if photo_tags is None:
        return pl.DataFrame(schema={"author_id": pl.Int64, "tag": pl.Int32})
    meta = tables.get("photo_meta")
    if meta is not None:
        pairs = meta.scan().select(photo_id=meta.int_col("photo_id"), author_id=meta.int_col("author_id"))
    else:
        pairs = plays.select("photo_id", "author_id")
    counts = _owners(pairs, "photo_id").join(photo_tags.lazy(), on="photo_id").group_by("author_id", "tag").len("n")
    best = counts.group_by("author_id").agg(pl.col("tag").sort_by(["n", "tag"], descending=[True, False]).first())
    return best.collect(engine="streaming").sort("author_id").select("author_id", pl.col("tag").cast(pl.Int32))


def author_clusters(
    tables: dict[str, RawTable], events: list[pl.LazyFrame], k: int, seed: int
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """author_id -> cluster 1..k (k-means of their rooms' L2-normalised embeddings, averaged and normalised again),
    and what was clustered; room -> author from live_room_meta, else from ``events`` (the kept sessions and
    impressions)."""
    empty = pl.DataFrame(schema={"author_id": pl.Int64, "cluster": pl.Int32})
    emb = tables.get("live_emb_64")
    if emb is None:
        return empty, {}
    meta = tables.get("live_room_meta")
    if meta is not None:
        pairs = meta.scan().select(live_id=meta.int_col("live_id"), author_id=meta.int_col("author_id"))
    else:
        pairs = pl.concat(events, how="diagonal").select("live_id", "author_id")
    comps = embedding_components(emb, "embedding")
    if not comps:
        return empty, {"authors": 0, "dim": 0}
    names = [f"e{i}" for i in range(len(comps))]
    vec = emb.scan().select(emb.int_col("live_id").alias("live_id"), *comps).drop_nulls()
    norm = pl.sum_horizontal([pl.col(c) ** 2 for c in names]).sqrt()
    vec = (
        vec.with_columns(_norm=norm)
        .filter(pl.col("_norm").is_finite() & (pl.col("_norm") > 0))
        .with_columns([pl.col(c) / pl.col("_norm") for c in names])
        .drop("_norm")
    )
    means = vec.join(_owners(pairs, "live_id"), on="live_id").group_by("author_id").agg(pl.col(names).mean())
    per_author = means.collect(engine="streaming").sort("author_id")
    if per_author.height == 0:
        return empty, {"authors": 0, "dim": len(names)}
    x = per_author.select(names).to_numpy().astype(np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.where(n > 0, x / np.maximum(n, 1e-12), x)
    labels = kmeans_labels(x, k, seed=seed)
    out = pl.DataFrame({"author_id": per_author["author_id"], "cluster": pl.Series(labels, dtype=pl.Int32)})
    return out, {"authors": per_author.height, "dim": len(names), "clusters": int(labels.max())}


def author_attrs(tags: pl.DataFrame, clusters: pl.DataFrame) -> pl.DataFrame:
    """(author_id, tag, cluster) of every author with either; 0 for the one they lack."""
    both = tags.join(clusters, on="author_id", how="full", coalesce=True)
    return both.with_columns(pl.col("tag").fill_null(0), pl.col("cluster").fill_null(0)).sort("author_id")
