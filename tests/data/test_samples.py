"""Sample building and the cached sample store (farmcli.data.encoding / build / store), checked against a slow reference."""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from farmcli.data import store as store_module
from farmcli.data.build import build_samples, sample_store_path
from farmcli.data.encoding import Encoder, lag_bucket, lex_searchsorted, partition_of, play_bucket, tie_order
from farmcli.data.schema import (
    ACTIVITY_LEVELS,
    LIVE_COLUMNS,
    LIVE_FLAGS,
    SPLITS,
    TASKS,
    TRUTH_COLUMNS,
    VIDEO_COLUMNS,
    VIDEO_FLAGS,
    schema_of,
)
from farmcli.data.store import SampleStore, store_summary
from farmcli.errors import UserError

T0 = 1_700_000_000_000
HOUR = 3_600_000
NEWCOMER = 5  # a user whose only event is one live impression in the test window
LATECOMER = 7  # a user seen only in valid/test (out-of-vocabulary user)


# ------------------------------------------------------------------------------------------ test data


def make_dataset(
    root: Path,
    *,
    seed: int = 0,
    shards: bool = True,
    users_table: bool = True,
    truth: bool = True,
    train_start: bool = True,
    no_valid: bool = False,
) -> Path:
    """A small random farm-events/1 dataset with the awkward cases planted on purpose."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    man = {
        "format": "farm-events/1",
        "name": "test",
        "source": "custom",
        "time_unit": "ms",
        "train_start": T0 + 2 * HOUR,
        "train_end": T0 + 10 * HOUR,
        "valid_end": T0 + 12 * HOUR,
        "test_end": T0 + 14 * HOUR,
    }
    if not train_start:
        del man["train_start"]
    if no_valid:
        man["valid_end"] = man["train_end"]
    (root / "manifest.json").write_text(json.dumps(man))
    users = rng.choice(10**12, size=30, replace=False).astype(np.int64) + 100
    authors = rng.choice(10**6, size=40, replace=False).astype(np.int64)

    def ts(n):
        t = T0 + rng.integers(0, 15 * HOUR, n)  # warm-up, splits and some rows after test_end
        coarse = rng.random(n) < 0.5
        return np.where(coarse, (t // 60_000) * 60_000, t)  # minute-rounded ts: many ties

    def ids(n, t, pool, oov):
        """Ids from the pool; after train_end sometimes an id never seen in training."""
        out = rng.choice(pool, n)
        late = (t >= man["train_end"]) & (rng.random(n) < 0.15)
        return np.where(late, oov, out)

    def play(n):
        kind = rng.integers(0, 4, n)
        return np.select(
            [kind == 0, kind == 1, kind == 2],
            [0, rng.integers(1, 5_000, n), rng.integers(5_000, 600_000, n)],
            rng.integers(10**7, 10**9, n),
        ).astype(np.int64)

    nv, nl = 1500, 900
    vt = ts(nv)
    video = {
        "user_id": rng.choice(users, nv),
        "author_id": ids(nv, vt, authors, 10**13 + 1),
        "ts": vt,
        "page": ids(nv, vt, np.arange(4), 99),
        "tag": ids(nv, vt, np.arange(8), 77),
        "play_ms": play(nv),
    }
    for f in VIDEO_FLAGS:
        video[f] = (rng.random(nv) < 0.3).astype(np.int8)
    lt = ts(nl)
    live = {
        "user_id": rng.choice(users, nl),
        "author_id": ids(nl, lt, authors[:25], 10**13 + 2),
        "ts": lt,
        "page": ids(nl, lt, np.arange(4), 98),
        "tag": ids(nl, lt, np.arange(8), 76),
        "cluster": ids(nl, lt, np.arange(6), 55),
        "play_ms": play(nl),
    }
    click = (rng.random(nl) < 0.45).astype(np.int8)
    live["click"] = click
    for f in TASKS[1:]:
        live[f] = (click & (rng.random(nl) < 0.4)).astype(np.int8)
    if truth:
        for c in TRUTH_COLUMNS:
            live[c] = rng.random(nl).astype(np.float32)
    video_df, live_df = pl.DataFrame(video), pl.DataFrame(live)

    # events at exactly a sample's ts: a video play and a clicked live row of the same user and ts
    same = live_df.sample(60, seed=seed)
    video_df = pl.concat(
        [
            video_df,
            same.select(video_df.columns[:3]).with_columns(
                page=pl.lit(1), tag=pl.lit(2), play_ms=pl.lit(12_345), **{f: pl.lit(1) for f in VIDEO_FLAGS}
            ),
        ],
        how="diagonal_relaxed",
    )
    live_df = pl.concat(
        [live_df, same.with_columns(author_id=pl.col("author_id") + 1, click=pl.lit(1), play_ms=pl.lit(77_000))],
        how="vertical_relaxed",
    )
    # exact duplicates of some live rows (same user, ts, everything)
    live_df = pl.concat([live_df, live_df.head(5)], how="vertical_relaxed")
    # the newcomer: one test impression, nothing earlier; the latecomer: valid/test only, with clicks
    extra = [
        {
            "user_id": NEWCOMER,
            "author_id": int(authors[0]),
            "ts": man["valid_end"] + 1000,
            "page": 0,
            "tag": 0,
            "cluster": 0,
            "play_ms": 0,
            **{t: 0 for t in TASKS},
        }
    ]
    for k in range(6):
        extra.append(
            {
                "user_id": LATECOMER,
                "author_id": int(authors[k]),
                "ts": man["train_end"] + k * 1_800_000,
                "page": 1,
                "tag": 1,
                "cluster": 1,
                "play_ms": 90_000 * k,
                "click": 1,
                "effective_view": 1,
                "long_view": k % 2,
                "like": 0,
                "comment": 0,
                "gift": int(k == 3),
            }
        )
    if truth:
        for e in extra:
            e.update({c: 0.5 for c in TRUTH_COLUMNS})
    live_df = pl.concat([live_df, pl.DataFrame(extra)], how="diagonal_relaxed")

    live_schema = schema_of(LIVE_COLUMNS) | ({c: pl.Float32 for c in TRUTH_COLUMNS} if truth else {})
    live_df = live_df.select([pl.col(c).cast(t) for c, t in live_schema.items()])
    video_df = video_df.select([pl.col(c).cast(t) for c, t in schema_of(VIDEO_COLUMNS).items()])
    for name, df in (("live", live_df), ("video", video_df)):
        df = df.sample(fraction=1.0, shuffle=True, seed=seed + 1)  # file order must not matter
        if shards:
            (root / f"{name}.parquet").mkdir()
            half = df.height // 2
            df[:half].write_parquet(root / f"{name}.parquet" / "part-0.parquet")
            df[half:].write_parquet(root / f"{name}.parquet" / "part-1.parquet")
        else:
            df.write_parquet(root / f"{name}.parquet")
    if users_table:
        named = users[:-3]  # the last three users are absent from users.parquet
        levels = [ACTIVITY_LEVELS[i % 3] for i in range(len(named))]
        levels[0] = None  # present, but with no level: gets the derived rule
        pl.DataFrame(
            {"user_id": named, "activity": levels}, schema={"user_id": pl.Int64, "activity": pl.String}
        ).write_parquet(root / "users.parquet")
    return root


def _synth(root: Path) -> Path:
    sim = pytest.importorskip("farmcli.data.simulator")
    cfg = sim.sim_config("tiny")
    sim.synthesize(cfg, root)
    return root


# ------------------------------------------------------------------------------------------ reference


def ref_play(ms: int) -> int:
    return 1 + min(30, math.floor(2 * math.log2(1 + ms / 1000)))


def ref_lag(lag: int) -> int:
    return 1 + min(22, math.floor(math.log2(1 + lag / 1000)))


def _rows(root: Path, table: str) -> list[dict]:
    path = root / f"{table}.parquet"
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").to_dicts()


VIDEO_KEY = ("user_id", "ts", "author_id", "page", "tag", "play_ms", *VIDEO_FLAGS)


def reference(root: Path, L: int, min_count: int = 1, cuts=(0.5, 0.85), stride: int = 1) -> dict:
    """Samples and histories the slow, obvious way: loops over samples, dicts for vocabularies."""
    man = json.loads((root / "manifest.json").read_text())
    live, video = _rows(root, "live"), _rows(root, "video")
    truth = all(c in live[0] for c in TRUTH_COLUMNS)
    live_key = (
        "user_id",
        "ts",
        "author_id",
        "page",
        "tag",
        "play_ms",
        "cluster",
        *TASKS,
        *(TRUTH_COLUMNS if truth else ()),
    )
    te, ts0 = man["train_end"], man.get("train_start")

    counts = {k: Counter() for k in ("author", "page", "tag", "cluster", "user")}
    for table, rows in (("live", live), ("video", video)):
        for r in rows:
            if r["ts"] < te:
                counts["author"][r["author_id"]] += 1
                counts["page"][r["page"]] += 1
                counts["tag"][r["tag"]] += 1
                counts["user"][r["user_id"]] += 1
                if table == "live":
                    counts["cluster"][r["cluster"]] += 1
    vocab = {
        k: {x: i + 2 for i, x in enumerate(sorted(x for x, c in cnt.items() if c >= min_count))}
        for k, cnt in counts.items()
    }

    def enc(kind, x):
        return vocab[kind].get(x, 1)

    # activity: users.parquet where valid, else live clicks in [train_start, train_end), 'lower' quantiles
    population = {r["user_id"] for r in live} | {r["user_id"] for r in video}
    clicks = Counter(r["user_id"] for r in live if r["click"] == 1 and r["ts"] < te and (ts0 is None or r["ts"] >= ts0))
    c = sorted(clicks[u] for u in population)
    lo, hi = (c[math.floor(q * (len(c) - 1))] for q in cuts)
    level = {u: 0 if clicks[u] <= lo else 1 if clicks[u] <= hi else 2 for u in population}
    if (root / "users.parquet").exists():
        given = {}
        for r in _rows(root, "users"):
            if r["activity"] in ACTIVITY_LEVELS:
                lvl = ACTIVITY_LEVELS.index(r["activity"])
                given[r["user_id"]] = min(lvl, given.get(r["user_id"], 9))
        level.update({u: v for u, v in given.items() if u in level})

    vh, lh = defaultdict(list), defaultdict(list)
    for r in video:
        if r["ts"] < man["test_end"]:
            vh[r["user_id"]].append(r)
    for r in live:
        if r["click"] == 1 and r["ts"] < man["test_end"]:
            lh[r["user_id"]].append(r)
    for h, key in ((vh, VIDEO_KEY), (lh, live_key)):
        for u in h:
            h[u].sort(key=lambda r: tuple(r[k] for k in key))

    windows = {"train": (ts0, te), "valid": (te, man["valid_end"]), "test": (man["valid_end"], man["test_end"])}
    out = {}
    for split, (a, b) in windows.items():
        rows = sorted(
            (r for r in live if (a is None or r["ts"] >= a) and r["ts"] < b),
            key=lambda r: tuple(r[k] for k in live_key),
        )
        n = len(rows)
        rows = rows[::stride]
        res = defaultdict(list)
        res["n"] = n
        for r in rows:
            u, t = r["user_id"], r["ts"]
            res["user_id"].append(u)
            res["ts"].append(t)
            res["user"].append(enc("user", u))
            res["author"].append(enc("author", r["author_id"]))
            res["page"].append(enc("page", r["page"]))
            res["tag"].append(enc("tag", r["tag"]))
            res["cluster"].append(enc("cluster", r["cluster"]))
            res["labels"].append([r[k] for k in TASKS])
            res["activity"].append(level[u])
            if truth:
                res["p"].append([r[k] for k in TRUTH_COLUMNS])
            for p, hist, flags in (("v", vh, VIDEO_FLAGS), ("l", lh, LIVE_FLAGS)):
                prior = [e for e in hist[u] if e["ts"] < t][-L:]
                pad = [0] * (L - len(prior))
                res[f"{p}_mask"].append([False] * len(pad) + [True] * len(prior))
                res[f"{p}_author"].append(pad + [enc("author", e["author_id"]) for e in prior])
                res[f"{p}_page"].append(pad + [enc("page", e["page"]) for e in prior])
                res[f"{p}_tag"].append(pad + [enc("tag", e["tag"]) for e in prior])
                if p == "l":
                    res["l_cluster"].append(pad + [enc("cluster", e["cluster"]) for e in prior])
                res[f"{p}_play"].append(pad + [ref_play(e["play_ms"]) for e in prior])
                res[f"{p}_lag"].append(pad + [ref_lag(t - e["ts"]) for e in prior])
                res[f"{p}_label"].append(pad + [1 + sum(e[f] << i for i, f in enumerate(flags)) for e in prior])
        out[split] = res
    return {"splits": out, "vocab_sizes": {k: len(v) + 2 for k, v in vocab.items()}, "truth": truth}


def assert_matches_reference(store: SampleStore, ref: dict, stride: int = 1) -> None:
    assert store.vocab_sizes == ref["vocab_sizes"]
    assert store.has_truth == ref["truth"]
    for split in SPLITS:
        r = ref["splits"][split]
        assert store.n(split) == r["n"], split
        idx = np.arange(0, store.n(split), stride)
        s = store.split(split)
        for col in ("user_id", "ts", "user", "author", "page", "tag", "cluster", "labels", "activity"):
            np.testing.assert_array_equal(
                np.asarray(getattr(s, col))[idx],
                np.array(r[col]).reshape(np.asarray(getattr(s, col))[idx].shape),
                err_msg=f"{split}.{col}",
            )
        if ref["truth"]:
            np.testing.assert_array_equal(np.asarray(s.p)[idx], np.array(r["p"], dtype=np.float32).reshape(-1, 6))
        else:
            assert s.p is None
        h = store.histories(split, idx)
        for k, v in h.items():
            want = np.array(r[k]).reshape(len(idx), store.history_len)
            np.testing.assert_array_equal(v, want, err_msg=f"{split}.{k}")


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("rich") / "ds")


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return make_dataset(
        tmp_path_factory.mktemp("plain") / "ds", seed=3, shards=False, users_table=False, truth=False, train_start=False
    )


@pytest.fixture(scope="module")
def rich_store(rich, tmp_path_factory) -> SampleStore:
    return build_samples(rich, tmp_path_factory.mktemp("cache"), history_len=6, partitions=1)


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("L", [6, 50])
@pytest.mark.parametrize("sparse_fill", [0.0, 0.5, 1.1], ids=["read-all", "by-fill", "read-real"])
def test_matches_reference_rich(rich, tmp_path, L, sparse_fill, monkeypatch):
    # every history read at all positions and zeroed, or only at its real positions, or by its batch's fill
    monkeypatch.setattr(store_module, "SPARSE_FILL", sparse_fill)
    store = build_samples(rich, tmp_path, history_len=L, partitions=1)
    assert_matches_reference(store, reference(rich, L))
    idx = np.random.default_rng(0).permutation(store.n("train"))[:64]
    for k, v in store.batch("train", idx).items():  # the model's dtypes by the same paths
        assert v.dtype == (torch.bool if k.endswith("mask") else torch.float32 if k in ("labels", "p") else torch.int64)


def test_matches_reference_plain_min_count(plain, tmp_path):
    store = build_samples(plain, tmp_path, history_len=8, min_count=3, partitions=1)
    assert not store.has_truth
    assert_matches_reference(store, reference(plain, 8, min_count=3))


def test_matches_reference_other_cuts(rich, tmp_path):
    (tmp_path / "ds").mkdir()
    for f in ("manifest.json", "live.parquet", "video.parquet"):
        os.symlink(rich / f, tmp_path / "ds" / f)  # the same events without users.parquet
    store = build_samples(tmp_path / "ds", tmp_path / "cache", history_len=4, activity_cuts=(0.3, 0.6))
    assert_matches_reference(store, reference(tmp_path / "ds", 4, cuts=(0.3, 0.6)))
    assert set(np.unique(store.split("train").activity)) == {0, 1, 2}


@pytest.mark.slow
def test_matches_reference_simulator(tmp_path):
    data = _synth(tmp_path / "sim")
    store = build_samples(data, tmp_path / "cache", history_len=20, partitions=1)
    stride = max(1, max(store.n(s) for s in SPLITS) // 400)
    assert_matches_reference(store, reference(data, 20, stride=stride), stride=stride)
    check_no_leakage(store)


def test_planted_cases(rich, rich_store):
    store = rich_store
    vs = store.vocab_sizes
    assert store.manifest["format"] == "farm-samples/1" and store.manifest["complete"] is True
    assert store.manifest["n_play_buckets"] == 32 and store.manifest["n_lag_buckets"] == 24
    assert store.manifest["n_label_ids"] == 33
    # out-of-vocabulary: the latecomer user and ids seen only after train_end map to 1
    valid = store.split("valid")
    late = np.asarray(valid.user_id) == LATECOMER
    assert late.any() and (np.asarray(valid.user)[late] == 1).all()
    assert (np.asarray(valid.author) == 1).any() and (np.asarray(valid.page) == 1).any()
    for k in ("author", "page", "tag", "cluster", "user"):
        for s in SPLITS:
            a = np.asarray(getattr(store.split(s), k))
            assert a.min(initial=1) >= 1 and a.max(initial=1) < vs[k]
    # the newcomer: all-padding histories, all-zero fields
    test = store.split("test")
    i = np.flatnonzero(np.asarray(test.user_id) == NEWCOMER)
    assert len(i) == 1
    h = store.histories("test", i)
    for k, v in h.items():
        assert not v.any(), k
    b = store.batch("test", i)
    assert not b["v_mask"].any() and not b["l_mask"].any() and int(b["v_author"].abs().sum()) == 0
    # the latecomer's live history grows within valid/test, ties with the sample's own ts excluded
    hl = store.histories("valid", np.flatnonzero(late))
    assert hl["l_mask"].sum(axis=1).tolist() == sorted(hl["l_mask"].sum(axis=1).tolist())
    assert hl["l_mask"][0].sum() == 0
    # users absent from users.parquet (or with a null level) still get a level
    for s in SPLITS:
        assert set(np.unique(store.split(s).activity)) <= {0, 1, 2}
    counts = store.manifest["activity_counts"]
    assert sum(counts["users"].values()) > 0 and set(counts["train"]) == set(ACTIVITY_LEVELS)


def check_no_leakage(store: SampleStore) -> None:
    L = store.history_len
    for split in SPLITS:
        s = store.split(split)
        ts, uid = np.asarray(s.ts), np.asarray(s.user_id)
        for dom, p in (("video", "v"), ("live", "l")):
            ev_ts, ev_u = store.array(f"{dom}.ts"), store.array(f"{dom}.user_id")
            start, end = np.asarray(getattr(s, f"{p}_start")), np.asarray(getattr(s, f"{p}_end"))
            assert (start <= end).all()
            pos = end[:, None] - L + np.arange(L)
            valid = pos >= start[:, None]
            pos = np.where(valid, pos, 0)
            if valid.any():
                assert (ev_ts[pos][valid] < np.broadcast_to(ts[:, None], pos.shape)[valid]).all(), (split, dom)
                assert (ev_u[pos][valid] == np.broadcast_to(uid[:, None], pos.shape)[valid]).all(), (split, dom)
            # completeness: the event at `end` (if the same user's) is not earlier than the sample
            nxt = end < len(ev_ts)
            same = nxt.copy()
            same[nxt] = ev_u[end[nxt]] == uid[nxt]
            assert (ev_ts[end[same]] >= ts[same]).all()
            # and the one before `start` belongs to another user
            prev = start > 0
            assert (ev_u[start[prev] - 1] != uid[prev]).all()


def test_no_leakage(rich_store):
    check_no_leakage(rich_store)
    # ties exist in the data: some sample has an event of its user at exactly its ts, and it was excluded
    s = rich_store.split("train")
    ev_ts, ev_u = rich_store.array("video.ts"), rich_store.array("video.user_id")
    end = np.asarray(s.v_end)
    ok = end < len(ev_ts)
    tie = (
        ok
        & (ev_ts[np.minimum(end, len(ev_ts) - 1)] == np.asarray(s.ts))
        & (ev_u[np.minimum(end, len(ev_ts) - 1)] == np.asarray(s.user_id))
    )
    assert tie.sum() > 10


def test_batch_matches_histories(rich_store):
    store = rich_store
    n = store.n("train")
    idx = np.random.default_rng(0).permutation(n)[:64]  # unsorted on purpose
    h = store.histories("train", idx)
    b = store.batch("train", idx)
    L = store.history_len
    for k, v in h.items():
        assert tuple(b[k].shape) == (64, L)
        assert b[k].dtype == (torch.bool if k.endswith("mask") else torch.int64)
        np.testing.assert_array_equal(b[k].numpy(), v)
    s = store.split("train")
    for k in ("user", "author", "page", "tag", "cluster", "user_id", "activity"):
        assert b[k].dtype == torch.int64 and tuple(b[k].shape) == (64,)
        np.testing.assert_array_equal(b[k].numpy(), np.asarray(getattr(s, k))[idx])
    assert b["labels"].dtype == torch.float32 and tuple(b["labels"].shape) == (64, 6)
    np.testing.assert_array_equal(b["labels"].numpy(), np.asarray(s.labels)[idx])
    assert b["p"].dtype == torch.float32
    np.testing.assert_array_equal(b["p"].numpy(), np.asarray(s.p)[idx])
    # a slice and a sorted index give the same rows
    b2 = store.batch("train", slice(10, 20))
    b3 = store.batch("train", np.arange(10, 20))
    for k in b2:
        assert torch.equal(b2[k], b3[k]), k
    assert store.batch("train", np.array([], dtype=np.int64))["v_mask"].shape == (0, L)


def test_buckets_numpy_and_torch():
    ms = np.array([0, 1, 999, 1000, 2000, 3000, 10**5, 10**9, 10**15], dtype=np.int64)
    want_play = [ref_play(int(x)) for x in ms]
    want_lag = [ref_lag(int(x)) for x in ms]
    assert play_bucket(ms).tolist() == want_play
    assert lag_bucket(ms).tolist() == want_lag
    assert play_bucket(torch.from_numpy(ms)).tolist() == want_play
    assert lag_bucket(torch.from_numpy(ms)).tolist() == want_lag
    assert play_bucket(0) == 1 and play_bucket(1000) == 3 and play_bucket(10**12) == 31
    assert lag_bucket(1) == 1 and lag_bucket(1000) == 2 and lag_bucket(10**15) == 23
    # every bucket edge, and one ms either side, agrees with the float formula
    from farmcli.data.encoding import LAG_THRESHOLDS, PLAY_THRESHOLDS

    edges = np.unique(np.concatenate([t + d for t in (PLAY_THRESHOLDS, LAG_THRESHOLDS) for d in (-1, 0, 1)]))
    assert play_bucket(edges).tolist() == [ref_play(int(x)) for x in edges]
    assert lag_bucket(edges).tolist() == [ref_lag(int(x)) for x in edges]
    assert sorted(set(play_bucket(edges).tolist())) == list(range(1, 32))
    assert sorted(set(lag_bucket(edges).tolist())) == list(range(1, 24))


@pytest.mark.parametrize("force_rank", [False, True])
def test_lex_searchsorted(force_rank):
    rng = np.random.default_rng(1)
    for huge in (False, True):
        u = np.sort(rng.integers(0, 20, 300))
        t = rng.integers(-(2**62) if huge else 0, 2**62 if huge else 50, 300)
        order = np.lexsort((t, u))
        u, t = u[order], t[order]
        qu = rng.integers(-1, 22, 200)
        qt = np.concatenate([rng.choice(t, 100), rng.integers(t.min() - 5, t.max() + 5, 100)])
        start, end = lex_searchsorted(u, t, qu, qt, force_rank=force_rank)
        pairs = list(zip(u.tolist(), t.tolist()))
        for i in range(len(qu)):
            s = sum(1 for p in pairs if p[0] < qu[i])
            e = sum(1 for p in pairs if p < (int(qu[i]), int(qt[i])))
            assert (start[i], end[i]) == (s, e)


def test_tie_order_and_encoder():
    rng = np.random.default_rng(2)
    n = 2000
    keys = [np.sort(rng.integers(0, 30, n)), rng.integers(0, 20, n), rng.integers(0, 3, n), rng.random(n) < 0.5]
    o = np.lexsort((keys[1], keys[0]))  # sorted by the first two keys only
    keys = [k[o] for k in keys]
    perm = tie_order(keys)
    full = np.lexsort(keys[::-1])
    for k in keys:
        np.testing.assert_array_equal(k[perm], k[full])
    assert tie_order([np.arange(5), np.zeros(5)]) is None
    vocab = np.array([3, 7, 10, 2**40])
    ids = np.array([-1, 0, 3, 7, 8, 10, 11, 2**40, 2**62])
    want = [1, 1, 2, 3, 1, 4, 1, 5, 1]
    assert Encoder(vocab)(ids).tolist() == want  # searchsorted path (sparse ids)
    dense = Encoder(vocab[:3], np.int16)
    assert dense.lut is not None and dense(ids).tolist() == [1, 1, 2, 3, 1, 4, 1, 1, 1]
    assert Encoder(np.array([], dtype=np.int64))(ids).tolist() == [1] * len(ids)


def _canonical(store: SampleStore, split: str) -> np.ndarray:
    s = store.split(split)
    keys = [np.asarray(s.p)[:, j] for j in range(5, -1, -1)] if s.p is not None else []
    keys += [np.asarray(s.labels)[:, j] for j in range(5, -1, -1)]
    keys += [np.asarray(getattr(s, k)) for k in ("cluster", "tag", "page", "author_id", "ts", "user_id")]
    return np.lexsort(keys)


def test_partitions_give_same_samples(rich, rich_store, tmp_path):
    one = rich_store
    three = build_samples(rich, tmp_path, history_len=one.history_len, partitions=3)
    assert three.manifest["settings"]["partitions"] == 3
    assert three.vocab_sizes == one.vocab_sizes
    assert three.manifest["activity_counts"] == one.manifest["activity_counts"]
    assert three.manifest["events"] == one.manifest["events"]
    # the three partitions really split the users
    parts = partition_of(np.asarray(one.split("train").user_id), 3)
    assert len(np.unique(parts)) == 3
    for split in SPLITS:
        assert three.n(split) == one.n(split)
        i1, i3 = _canonical(one, split), _canonical(three, split)
        s1, s3 = one.split(split), three.split(split)
        for k in ("user_id", "author_id", "ts", "user", "author", "page", "tag", "cluster", "labels", "p", "activity"):
            np.testing.assert_array_equal(np.asarray(getattr(s1, k))[i1], np.asarray(getattr(s3, k))[i3])
        h1, h3 = one.histories(split, i1), three.histories(split, i3)
        for k in h1:
            np.testing.assert_array_equal(h1[k], h3[k], err_msg=f"{split}.{k}")
    check_no_leakage(three)
    # the automatic choice on small data is one partition
    assert build_samples(rich, tmp_path, history_len=3).manifest["settings"]["partitions"] == 1


def _rewrite_first_shard(ds: Path) -> None:
    f = ds / "video.parquet" / "part-0.parquet"
    df = pl.read_parquet(f)
    df.with_columns(
        play_ms=pl.when(pl.int_range(pl.len()) == 0).then(pl.col("play_ms") + 1).otherwise(pl.col("play_ms"))
    ).write_parquet(f)


def test_cache_reuse_and_invalidation(tmp_path):
    ds = make_dataset(tmp_path / "ds", seed=7)
    cache = tmp_path / "cache"
    a = build_samples(ds, cache, history_len=5)
    assert not a.reused
    assert a.path == sample_store_path(ds, cache, history_len=5)
    mtime = (a.path / "manifest.json").stat().st_mtime_ns
    b = build_samples(ds, cache, history_len=5)
    assert b.reused and b.path == a.path
    assert (a.path / "manifest.json").stat().st_mtime_ns == mtime
    # another setting: another store
    c = build_samples(ds, cache, history_len=6)
    assert not c.reused and c.path != a.path
    assert build_samples(ds, cache, history_len=5, min_count=2).path not in (a.path, c.path)
    # a changed input file: another key, rebuilt
    _rewrite_first_shard(ds)
    d = build_samples(ds, cache, history_len=5)
    assert not d.reused and d.path != a.path
    assert SampleStore.open(a.path).manifest["key"] != d.manifest["key"]
    # a changed manifest.json too
    man = json.loads((ds / "manifest.json").read_text())
    man["description"] = "edited"
    (ds / "manifest.json").write_text(json.dumps(man))
    assert build_samples(ds, cache, history_len=5).path != d.path


def test_killed_build_leaves_nothing_openable(tmp_path):
    ds = make_dataset(tmp_path / "ds", seed=8)
    cache = tmp_path / "cache"
    calls = []

    def boom(step, done, total):
        calls.append((step, done, total))
        if done == 1:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        build_samples(ds, cache, history_len=5, partitions=2, on_progress=boom)
    assert calls[0] == ("vocabularies", 0, 3)
    for d in cache.iterdir():
        with pytest.raises(UserError):
            SampleStore.open(d)
    assert not sample_store_path(ds, cache, history_len=5, partitions=2).exists()
    # a complete build reports every step
    steps = []
    store = build_samples(ds, cache, history_len=5, partitions=2, on_progress=lambda *a: steps.append(a))
    assert steps[-1][1:] == (3, 3) and not store.reused


def test_leftover_temp_and_partial_store(tmp_path):
    ds = make_dataset(tmp_path / "ds", seed=9)
    cache = tmp_path / "cache"
    final = sample_store_path(ds, cache, history_len=5)
    cache.mkdir()
    # a killed builder's temp dir (even with a manifest that claims completeness): its writer pid is gone
    junk = cache / f".{final.name}.{2**22 + 12345}.abc123.tmp"
    junk.mkdir()
    (junk / "manifest.json").write_text(json.dumps({"format": "farm-samples/1", "complete": True}))
    # a directory at the final path that is not a complete store
    final.mkdir()
    (final / "manifest.json").write_text(json.dumps({"format": "farm-samples/1", "complete": False}))
    with pytest.raises(UserError):
        SampleStore.open(final)
    store = build_samples(ds, cache, history_len=5)
    assert store.path == final and not store.reused
    assert not junk.exists()  # its builder is gone: cleaned up
    assert SampleStore.open(final).n("train") == store.n("train") > 0
    assert build_samples(ds, cache, history_len=5).reused
    # a truncated array is refused on open
    victim = final / "train.ts.bin"
    victim.write_bytes(victim.read_bytes()[:-8])
    with pytest.raises(UserError):
        SampleStore.open(final)
    assert not build_samples(ds, cache, history_len=5).reused  # rebuilt in place


def test_empty_split_and_pickle(tmp_path):
    import pickle

    ds = make_dataset(tmp_path / "ds", seed=11, no_valid=True)
    store = build_samples(ds, tmp_path / "cache", history_len=4)
    assert store.n("valid") == 0 and store.n("train") > 0 and store.n("test") > 0
    assert_matches_reference(store, reference(ds, 4))
    assert store.histories("valid", np.array([], dtype=np.int64))["l_mask"].shape == (0, 4)
    assert store.batch("valid", [])["labels"].shape == (0, 6)
    assert store_summary(store)["rows"]["valid"] == 0
    store.batch("train", [0, 1])  # arrays mapped; a pickle must still carry only the path and manifest
    blob = pickle.dumps(store)
    assert len(blob) < 20_000
    again = pickle.loads(blob)
    for k, v in store.batch("train", [3, 1]).items():
        assert torch.equal(v, again.batch("train", [3, 1])[k])
    with pytest.raises(UserError):
        store.n("dev")


def test_open_rejects_non_stores(tmp_path):
    with pytest.raises(UserError):
        SampleStore.open(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text("{not json")
    with pytest.raises(UserError):
        SampleStore.open(tmp_path / "x")


def test_summary(rich_store):
    s = store_summary(rich_store)
    assert s["rows"] == {k: rich_store.n(k) for k in SPLITS}
    assert s["vocab_sizes"] == rich_store.vocab_sizes
    for dom in ("video", "live"):
        h = s["history_length"][dom]
        assert 0 <= h["p10"] <= h["p50"] <= h["p90"] <= h["p99"] <= rich_store.history_len
        assert 0 < h["empty"] < 1
    json.dumps(s)
