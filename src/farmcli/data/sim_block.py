"""One block of users: sessions, exposures, candidates and labels, vectorised over the whole block.

Video labels need no memory, so every video exposure of the block is drawn at once. Live labels depend on
the user's earlier live clicks (m_live, v_*, re-exposure), so live impressions are walked in time chunks
of at most an hour (SIMULATOR.md allows the memory to be refreshed at such boundaries), each chunk
vectorised over all users of the block. Features from video events (m_tag, m_avid) are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farmcli.data.sim_config import DAY_MS, SimConfig
from farmcli.data.sim_entities import Domain, Entities
from farmcli.data.sim_memory import DecayedCount, LastEventAge, LiveMemory, check_packable, pack, time_bits

HOUR_MS = 3_600_000
DOT_CHUNK = 1 << 19
PAGE_RECOMMENDED, PAGE_POPULAR, PAGE_REEXPOSED = 0, 1, 2
N_PAGES = 3


@dataclass
class Block:
    """Columns of one block as numpy arrays in (user, ts) order; users' activity is an index into the levels."""

    users: dict[str, np.ndarray]
    live: dict[str, np.ndarray]
    video: dict[str, np.ndarray]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _affinity(taste: np.ndarray, user: np.ndarray, vec: np.ndarray, author: np.ndarray) -> np.ndarray:
    """taste[user] . vec[author] in slices, so the gathered (rows, k) matrices stay small."""
    out = np.empty(len(user))
    for i in range(0, len(user), DOT_CHUNK):
        sl = slice(i, i + DOT_CHUNK)
        out[sl] = np.einsum("ij,ij->i", taste[user[sl]], vec[author[sl]])
    return out


class TagSampler:
    """softmax(taste . c_t / temperature) per user, drawn by one searchsorted over a flat row-offset table."""

    def __init__(self, taste: np.ndarray, ent: Entities, dom: Domain, temperature: float):
        logits = taste @ ent.tag_centre.T / temperature
        logits[:, ~dom.has_tag] = -np.inf
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        cum = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
        self.last = int(np.flatnonzero(dom.has_tag)[-1])
        cum[:, self.last :] = 1.0
        self.T = cum.shape[1]
        self.flat = (np.arange(len(cum))[:, None] + cum).ravel()

    def __call__(self, user: np.ndarray, r: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.flat, user + r, side="right")
        return np.clip(i - user.astype(np.int64) * self.T, 0, self.last)


def _candidates(rng, n, user, taste_sampler: TagSampler, dom: Domain, p_rec: float):
    """Recommended (tag by taste, author by popularity in it) or globally popular authors, with their page."""
    rec = rng.random(n) < p_rec
    author = np.empty(n, np.int64)
    nr = int(rec.sum())
    tags = taste_sampler(user[rec], rng.random(nr))
    author[rec] = dom.by_tag(tags, rng.random(nr))
    author[~rec] = dom.by_popularity(rng.random(n - nr))
    page = np.where(rec, PAGE_RECOMMENDED, PAGE_POPULAR).astype(np.int32)
    return author, page


def _flip_pages(rng, page: np.ndarray, p_flip: float) -> np.ndarray:
    flip = rng.random(len(page)) < p_flip
    other = (page + 1 + rng.integers(0, N_PAGES - 1, len(page))) % N_PAGES
    return np.where(flip, other, page).astype(np.int32)


def _play_ms(z: np.ndarray, lo: np.ndarray, hi: np.ndarray, sd: float) -> np.ndarray:
    """Log-normal-shaped play time confined to [lo, hi): position in log-space is sigmoid(sd * z)."""
    llo, lhi = np.log(lo), np.log(hi)
    return np.exp(llo + (lhi - llo) * _sigmoid(sd * z)).astype(np.int64).clip(lo, hi - 1)


def _exposures(cfg: SimConfig, rng, act: np.ndarray, span_ms: int, tbits: int):
    """(user, t) of every exposure of the block, sorted by (user, t), t in ms from the start."""
    n_b, D = len(act), cfg.days
    lam = np.asarray(cfg.sessions_per_day, float)[act]
    n_sess = rng.poisson(lam[:, None], (n_b, D)).ravel()
    s_user = np.repeat(np.repeat(np.arange(n_b, dtype=np.int64), D), n_sess)
    s_day = np.repeat(np.tile(np.arange(D, dtype=np.int64), n_b), n_sess)
    n_s = len(s_user)
    hw = np.asarray(cfg.hour_weights, float)
    hour = rng.choice(24, n_s, p=hw / hw.sum())
    start = s_day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n_s)
    order = np.argsort(pack(s_user, start, tbits), kind="stable")  # sessions by (user, start)
    s_user, start = s_user[order], start[order]
    length = rng.geometric(1.0 / (1.0 + cfg.session_extra_mean), n_s)
    rep = np.repeat(np.arange(n_s), length)
    lo_ms, hi_ms = (int(round(x * 1000)) for x in cfg.gap_s)
    gap = rng.integers(lo_ms, hi_ms + 1, len(rep))
    first = np.cumsum(length) - length
    gap[first] = 0
    c = np.cumsum(gap)
    t = start[rep] + (c - c[first][rep])
    user = s_user[rep]
    del rep, gap, c
    keep = t < span_ms
    user, t = user[keep], t[keep]
    order = np.argsort(pack(user, t, tbits), kind="stable")  # nearly sorted already: cheap
    return user[order], t[order]


def simulate_block(cfg: SimConfig, ent: Entities, block: int, user0: int, n_b: int) -> Block:
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, block]))
    k, T, n_live = cfg.k, cfg.n_tags, cfg.n_live_authors
    span_ms = cfg.days * DAY_MS
    tbits = time_bits(span_ms + DAY_MS)  # + a day: sessions may start late on the last day
    check_packable(n_b * max(T, n_live) + 1, tbits, "users x authors")
    h_ms = cfg.half_life_days * DAY_MS

    # Users.
    act = rng.choice(3, n_b, p=np.asarray(cfg.activity_shares) / sum(cfg.activity_shares))
    u = rng.standard_normal((n_b, k))
    u_l = cfg.rho * u + np.sqrt(1.0 - cfg.rho**2) * rng.standard_normal((n_b, k))
    pi_like = cfg.pi_like_sd * rng.standard_normal(n_b)
    pi_comment = cfg.pi_comment_sd * rng.standard_normal(n_b)
    gifter = rng.random(n_b) < cfg.gifter_share
    pi_gift = np.where(gifter, cfg.gifter_pi_gift, cfg.pi_gift_mean + cfg.pi_gift_sd * rng.standard_normal(n_b))
    act_shift = np.asarray(cfg.act_shift, float)[act]

    user, t = _exposures(cfg, rng, act, span_ms, tbits)
    is_live = rng.random(len(t)) < cfg.p_live
    inv_sqrt_k = 1.0 / np.sqrt(k)

    lu, lt = user[is_live], t[is_live]
    vu, vt = user[~is_live], t[~is_live]
    del user, t, is_live

    # Short videos: candidates and labels, all at once.
    n_v = len(vt)
    va, vpage = _candidates(
        rng, n_v, vu, TagSampler(u, ent, ent.video, cfg.tag_temperature), ent.video, cfg.p_recommended
    )
    vpage = _flip_pages(rng, vpage, cfg.p_page_flip)
    vtag = ent.tag[va]
    s_v = _affinity(u.astype(np.float32), vu, ent.vec, va) * inv_sqrt_k + ent.q[va]
    v_flags = {}
    for name, extra in (
        ("long_view", 0.0),
        ("like", pi_like[vu]),
        ("comment", pi_comment[vu]),
        ("follow", 0.0),
        ("share", 0.0),
    ):
        b0, bs = getattr(cfg, f"video_{name}_intercept"), getattr(cfg, f"video_{name}_s")
        v_flags[name] = rng.random(n_v) < _sigmoid(b0 + bs * s_v + extra)
    del s_v
    vlv = v_flags["long_view"]
    vplay = _play_ms(
        rng.standard_normal(n_v), *_ranges(vlv, cfg.video_play_ms_short, cfg.video_play_ms_long), cfg.play_log_sd
    )

    # Memory from videos, exact: m_tag (decayed long-views/likes per user x tag), m_avid (per user x author).
    qual = vlv | v_flags["like"]
    m_tag_of = DecayedCount(vu[qual] * T + vtag[qual], vt[qual], tbits, h_ms)
    qa = qual & (va < n_live)  # live author ids are 0..n_live-1
    m_avid_age = LastEventAge(vu[qa] * n_live + va[qa], vt[qa], tbits)
    del qual, qa

    video = {
        "user_id": vu + user0,
        "author_id": va,
        "ts": vt + cfg.start_ms,
        "page": vpage,
        "tag": vtag.astype(np.int32),
        "play_ms": vplay,
        **{f: v.astype(np.int8) for f, v in v_flags.items()},
    }
    del vu, vt, va, vpage, vtag, vplay, v_flags

    live = _live(cfg, ent, rng, lu, lt, u_l, m_tag_of, m_avid_age, pi_like, pi_comment, pi_gift, act_shift)
    live["user_id"] = lu + user0
    live["ts"] = lt + cfg.start_ms
    users = {"user_id": np.arange(n_b, dtype=np.int64) + user0, "activity": act}
    return Block(users=users, live=live, video=video)


def _ranges(flag: np.ndarray, short: tuple, long: tuple) -> tuple[np.ndarray, np.ndarray]:
    return np.where(flag, long[0], short[0]), np.where(flag, long[1], short[1])


def _live(
    cfg: SimConfig, ent: Entities, rng, lu, lt, u_l, m_tag_of, m_avid_age, pi_like, pi_comment, pi_gift, act_shift
) -> dict[str, np.ndarray]:
    """Live impressions, chunk by chunk in time: clicks of earlier chunks drive re-exposure and the labels.

    A re-exposed author is drawn uniformly among the distinct live authors the user clicked before.
    """
    n, T, n_live = len(lt), cfg.n_tags, cfg.n_live_authors
    h_ms = cfg.half_life_days * DAY_MS
    avid_ms = cfg.m_avid_window_days * DAY_MS
    inv_sqrt_k = 1.0 / np.sqrt(cfg.k)
    # Every random number is drawn up front in row order, so results do not depend on the chunking.
    author, page = _candidates(
        rng, n, lu, TagSampler(u_l, ent, ent.live, cfg.tag_temperature), ent.live, cfg.p_recommended
    )
    r_reexpose, r_pick = rng.random(n), rng.random(n)
    r_label = rng.random((6, n))
    z_play = rng.standard_normal(n)
    flip_coin, flip_off = rng.random(n), rng.integers(0, N_PAGES - 1, n)

    p = np.empty((6, n))
    flags = np.zeros((6, n), bool)
    mem = LiveMemory(n_live, h_ms)
    c = cfg
    chunk_ms = int(cfg.memory_refresh_minutes * 60_000)
    order = np.argsort(lt, kind="stable")
    bounds = np.searchsorted(lt[order], np.arange(0, int(lt.max(initial=0)) + 2 * chunk_ms, chunk_ms))
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        if b0 == b1:
            continue
        idx = order[b0:b1]
        uu, tt = lu[idx], lt[idx]
        a = author[idx]
        lo, cnt = mem.clicked_range(uu)
        re = (cnt > 0) & (r_reexpose[idx] < cfg.p_reexpose)
        if re.any():
            pick = lo[re] + (r_pick[idx[re]] * cnt[re]).astype(np.int64)
            a[re] = mem.key[pick] - uu[re] * n_live
            author[idx] = a
            page[idx[re]] = PAGE_REEXPOSED
        s = np.einsum("ij,ij->i", u_l[uu], ent.vec[a]) * inv_sqrt_k + ent.q[a]
        m_tag = m_tag_of(uu * T + ent.tag[a], tt)
        m_avid = (m_avid_age(uu * n_live + a, tt) <= avid_ms).astype(float)
        m_live, (v_like, v_comment, v_gift) = mem.features(uu, a, tt)
        lm = np.log1p(m_live)
        pc = _sigmoid(
            c.live_click_intercept
            + c.live_click_s * s
            + c.live_click_m_tag * np.log1p(m_tag)
            + c.live_click_m_avid * m_avid
            + c.live_click_m_live * lm
            + act_shift[uu]
        )
        pev = _sigmoid(
            c.live_effective_view_intercept + c.live_effective_view_s * s + c.live_effective_view_m_live * lm
        )
        plv = _sigmoid(
            c.live_long_view_intercept
            + c.live_long_view_s * s
            + c.live_long_view_m_avid * m_avid
            + c.live_long_view_m_live * lm
        )
        plike = _sigmoid(
            c.live_like_intercept
            + c.live_like_s * s
            + pi_like[uu]
            + c.live_like_v_like * v_like
            + c.live_like_m_avid * m_avid
        )
        pcom = _sigmoid(
            c.live_comment_intercept + c.live_comment_s * s + pi_comment[uu] + c.live_comment_v_comment * v_comment
        )
        pgift = _sigmoid(
            c.live_gift_intercept
            + c.live_gift_s * s
            + ent.ga[a]
            + pi_gift[uu]
            + c.live_gift_v_gift * v_gift
            + c.live_gift_v_like * v_like
        )
        r = r_label[:, idx]
        click = r[0] < pc
        ev = click & (r[1] < pev)
        lv = ev & (r[2] < plv)
        like, com, gift = click & (r[3] < plike), click & (r[4] < pcom), click & (r[5] < pgift)
        flags[:, idx] = np.stack([click, ev, lv, like, com, gift])
        p[:, idx] = np.stack([pc, pc * pev, pc * pev * plv, pc * plike, pc * pcom, pc * pgift])
        mem.update(uu[click], a[click], tt[click], np.stack([like, com, gift])[:, click])

    page = np.where(flip_coin < cfg.p_page_flip, (page + 1 + flip_off) % N_PAGES, page).astype(np.int32)
    click, ev, lv = flags[0], flags[1], flags[2]
    lo = np.where(lv, c.live_play_ms_long[0], np.where(ev, c.live_play_ms_effective[0], c.live_play_ms_short[0]))
    hi = np.where(lv, c.live_play_ms_long[1], np.where(ev, c.live_play_ms_effective[1], c.live_play_ms_short[1]))
    play = np.where(click, _play_ms(z_play, lo, hi, cfg.play_log_sd), 0)
    out = {
        "author_id": author,
        "page": page,
        "tag": ent.tag[author].astype(np.int32),
        "cluster": ent.cluster[author].astype(np.int32),
        "play_ms": play.astype(np.int64),
    }
    for j, name in enumerate(("click", "effective_view", "long_view", "like", "comment", "gift")):
        out[name] = flags[j].astype(np.int8)
        out[f"p_{name}"] = p[j].astype(np.float32)
    return out
