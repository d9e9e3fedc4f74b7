"""Figure 4: the cross-attention weights (eq. 16) of one user's last test sample, live history (queries) x video
history (keys), mean over heads, real positions only; for fuse ``cross_attention`` (or ``_null``) only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from farmcli.analysis.report.runs import SPLIT, LoadedRun, Section
from farmcli.data.schema import ACTIVITY_LEVELS
from farmcli.errors import UserError

FILES = {"fig4": "fig4-cross-attention.png"}


def applies(run: LoadedRun) -> bool:
    return run.slot("fuse") in ("cross_attention", "cross_attention_null")


def _item_labels(store, ids_author: np.ndarray, ids_tag: np.ndarray) -> list[str]:
    authors, tags = np.asarray(store.vocab("author")), np.asarray(store.vocab("tag"))

    def raw(vocab, i):
        i = int(i)
        return str(int(vocab[i - 2])) if 2 <= i < len(vocab) + 2 else "?"  # 1 = out of vocabulary

    return [f"a{raw(authors, a)} t{raw(tags, t)}" for a, t in zip(ids_author, ids_tag)]


@torch.inference_mode()
def cross_attention(run: LoadedRun, index: int) -> dict:
    """One test sample's weights [n_live, n_video], row / column labels ("a<author> t<tag>") and their raw ids."""
    store = run.store
    batch = {k: v.to(run.device) for k, v in store.batch(SPLIT, np.array([index])).items()}
    out = run.module(batch, return_aux=True)
    if "cross_attention" not in out.aux:
        raise UserError(f"{run.run}: fuse '{run.slot('fuse')}' returns no cross-attention weights.")
    w = out.aux["cross_attention"][0].float().mean(0).cpu().numpy()  # [L_live, L_video]
    h = store.histories(SPLIT, np.array([index]))
    vm, lm = h["v_mask"][0], h["l_mask"][0]
    return {
        "weights": w[np.ix_(lm, vm)],
        "rows": _item_labels(store, h["l_author"][0][lm], h["l_tag"][0][lm]),
        "cols": _item_labels(store, h["v_author"][0][vm], h["v_tag"][0][vm]),
        "live_author": h["l_author"][0][lm],
        "video_author": h["v_author"][0][vm],
    }


def attention_summary(att: dict) -> dict:
    w = att["weights"]
    r, c = np.unravel_index(int(np.argmax(w)), w.shape)
    same = att["live_author"][:, None] == att["video_author"][None, :]
    row_sums = w.sum(1)
    share = float((w * same).sum() / row_sums.sum()) if row_sums.sum() > 0 else float("nan")
    uniform = float(same.mean())
    entropy = -(np.where(w > 0, w * np.log(np.where(w > 0, w, 1)), 0)).sum(1)
    return {
        "n_live": int(w.shape[0]),
        "n_video": int(w.shape[1]),
        "max_weight": float(w[r, c]),
        "max_row": att["rows"][r],
        "max_col": att["cols"][c],
        "max_pos": [int(r), int(c)],
        "same_author_share": share,
        "same_author_share_uniform": uniform,
        "mean_row_max": float(w.max(1).mean()),
        "uniform_weight": 1.0 / w.shape[1],
        "mean_entropy": float(entropy.mean()),
        "max_entropy": float(np.log(w.shape[1])),
    }


def section(run: LoadedRun, chosen: tuple[int, int, str] | None, out: Path) -> Section:
    """The heatmap of the user :func:`farmcli.analysis.report.users.choose_user` chose, and the text."""
    if chosen is None or not applies(run):
        skipped = (
            f"Skipped: this run's fuse slot is `{run.slot('fuse')}`, so it has no cross-attention "
            f"(eq. 16) to show. Figure 4 needs a run with fuse `cross_attention`."
        )
        return Section(None, {}, ["## Figure 4: cross-attention heatmap", "", skipped])
    from farmcli.analysis import plots

    uid, index, why = chosen
    att = cross_attention(run, index)
    stats = attention_summary(att)
    split = run.store.split(SPLIT)
    act = ACTIVITY_LEVELS[int(split.activity[index])]
    stats.update(user_id=uid, activity=act, why=why, sample_ts=int(split.ts[index]))
    title = (
        f"{run.label}: cross-attention of user {uid} ({act}-active), last test sample\n"
        f"{stats['n_live']} live x {stats['n_video']} video items, mean over heads"
    )
    plots.attention_heatmap(att["weights"], att["rows"], att["cols"], out / FILES["fig4"], title=title)
    return Section(stats, dict(FILES), _text(stats))


def _text(s: dict) -> list[str]:
    ratio = s["same_author_share"] / s["same_author_share_uniform"] if s["same_author_share_uniform"] else None
    same = (
        f"{100 * s['same_author_share']:.1f}% of the attention mass goes to video items by the same author as "
        f"the live query (uniform attention would give {100 * s['same_author_share_uniform']:.1f}%)"
        if s["same_author_share_uniform"] > 0
        else "no video item shares an author with a live item"
    )
    return [
        "## Figure 4: cross-attention heatmap",
        "",
        "![cross-attention heatmap](fig4-cross-attention.png)",
        "",
        f"Cross-attention weights of eq. 16 (live history as queries, rows; short-video history as keys, "
        f"columns; mean over heads; real positions only, oldest first; labels `a<author id> t<tag>`) for "
        f"user {s['user_id']} ({s['activity']}-active; {s['why']}), on their last {SPLIT} sample: "
        f"{s['n_live']} live x {s['n_video']} video items.",
        f"The largest weight is {s['max_weight']:.3f} (live `{s['max_row']}` -> video `{s['max_col']}`; uniform "
        f"would be {s['uniform_weight']:.3f}); the mean row maximum is {s['mean_row_max']:.3f}, the mean row "
        f"entropy {s['mean_entropy']:.2f} nats (uniform: {s['max_entropy']:.2f}); {same}"
        + (f", {ratio:.1f}x the uniform share." if ratio is not None else "."),
    ]
