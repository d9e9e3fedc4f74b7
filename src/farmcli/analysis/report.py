"""`farm report`: the paper's analysis figures and tables for one trained run (optionally against a second).

What it collects from a run (all model passes batched, under ``torch.inference_mode``, CPU by default):

- Figure 3 shape: cos(h_video, h_live) per test user (each user's last test sample; users with both histories
  non-empty; at most ``max_users``, a seeded sample). A run with align ``infonce`` uses its trained head. A run
  without one (w/o C-PA) has no h, so h is *defined* as the output of the same InfoNCE projection head
  (``InfoNCEAlign`` with its default dims and the run's D1/D2), initialised with the run's seed and never
  trained, applied to that run's preference features (the self-attended V^ when the run has a preference
  encoder, else the raw V): what the head would output with no contrastive loss.
- Figure 4 shape: the cross-attention weights (eq. 16) of one user's last test sample, live history (queries)
  x video history (keys), averaged over heads, real positions only; runs with fuse ``cross_attention`` only.
- Table 3 shape: the frequency gates alpha, beta (video) and gamma, delta (live) over the test split per
  activity group (low, mid, high, full): mean, p10, p50, p90. A sample whose history of a domain is empty is
  left out of that domain's gates (its F is all padding, so the gate has no effect).
- Training curves from logs/metrics.csv and logs/resume*/metrics.csv (a resumed leg wins where steps repeat).

:func:`build_report` writes everything (PNGs, CSVs, report.json and a Markdown page report.md linking each
figure with the numbers behind it) atomically, file by file, and returns the path of report.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from farmcli.data.schema import ACTIVITY_LEVELS, TASKS
from farmcli.errors import UserError
from farmcli.io import write_json, write_text

SPLIT = "test"
GROUPS = (*ACTIVITY_LEVELS, "full")
GATES = ("alpha", "beta", "gamma", "delta")
GATE_DOMAIN = {"alpha": "video", "beta": "video", "gamma": "live", "delta": "live"}
STATS = ("mean", "p10", "p50", "p90")
SAMPLE_SEED = 0
"""Seed of the user sample drawn when a split has more than ``max_users`` eligible users."""

Progress = Callable[[str, int, int | None], None]

FILES = {
    "fig3": "fig3-alignment-cosine.png",
    "cosine_csv": "fig3-alignment-cosine.csv",
    "fig4": "fig4-cross-attention.png",
    "table3": "table3-gates.png",
    "gates_csv": "table3-gates.csv",
    "curves": "training-curves.png",
    "curves_compare": "training-curves-compare.png",
    "json": "report.json",
    "md": "report.md",
}


# --------------------------------------------------------------------------------------------- runs


@dataclass
class LoadedRun:
    """A run directory with its config, checkpoint, model (eval mode, on ``device``) and sample store."""

    run: Path
    ckpt: Path
    cfg: Any
    module: Any
    store: Any
    device: torch.device
    label: str
    """The variant's label (e.g. "FARM", "w/o C-PA"), or the variant name."""

    @property
    def farm(self):
        return self.module.farm

    @property
    def name(self) -> str:
        return self.run.name


def load_run(target: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """A run directory (best checkpoint) or a .ckpt inside one; anything else is a UserError."""
    from farmcli.config import resolve
    from farmcli.evaluate import locate, run_store
    from farmcli.model.module import FarmModule

    target = Path(target)
    if target.is_dir() and not (target / "config.yaml").is_file():
        raise UserError(f"{target}: not a run directory (no config.yaml). Runs are made by `farm train`.")
    run, ckpt = locate(target)
    cfg = resolve([run / "config.yaml"])
    store = run_store(run, cfg)
    device = torch.device(device)
    try:
        module = FarmModule.load_from_checkpoint(ckpt, map_location="cpu")
    except (RuntimeError, KeyError, OSError, EOFError) as e:
        raise UserError(f"{ckpt}: cannot load the checkpoint ({str(e).splitlines()[0][:200]}).") from None
    module = module.to(device).eval()
    return LoadedRun(run, ckpt, cfg, module, store, device, variant_label(cfg.variant))


def variant_label(variant: str) -> str:
    """The label a built-in variant gives itself ("FARM", "w/o C-PA", ...); otherwise the variant name."""
    from farmcli.variants import VARIANTS_DIR, load_variant

    path = VARIANTS_DIR / f"{variant}.yaml"
    if path.is_file():
        try:
            return load_variant(str(path)).label
        except UserError:
            pass
    return variant


def _slot(run: LoadedRun, slot: str) -> str:
    return getattr(run.cfg.model, slot).name


# --------------------------------------------------------------------------------------------- samples


def last_sample_per_user(store, split: str = SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """(user ids ascending, index of each user's last sample of ``split``: latest ts, the later row on ties)."""
    s = store.split(split)
    n = s.n
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    users = np.asarray(s.user_id, dtype=np.int64)
    order = np.lexsort((np.arange(n), np.asarray(s.ts, dtype=np.int64), users))
    last = np.append(users[order][1:] != users[order][:-1], True)
    idx = order[last]
    return users[idx], idx


def history_lengths(store, split: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real (non-padding) video and live history lengths of samples ``idx`` (each at most L)."""
    s = store.split(split)
    L = store.history_len
    idx = np.asarray(idx, dtype=np.int64)
    nv = np.minimum(np.asarray(s.v_end[idx], np.int64) - np.asarray(s.v_start[idx], np.int64), L)
    nl = np.minimum(np.asarray(s.l_end[idx], np.int64) - np.asarray(s.l_start[idx], np.int64), L)
    return np.maximum(nv, 0), np.maximum(nl, 0)


def alignment_users(store, split: str = SPLIT, max_users: int = 10_000) -> tuple[np.ndarray, np.ndarray, int]:
    """(user ids, sample index, number eligible): each user's last sample of ``split`` where both histories
    are non-empty, at most ``max_users`` of them (a seeded random sample, kept in user order)."""
    users, idx = last_sample_per_user(store, split)
    nv, nl = history_lengths(store, split, idx)
    keep = (nv > 0) & (nl > 0)
    users, idx = users[keep], idx[keep]
    eligible = len(users)
    if max_users is not None and eligible > max_users:
        pick = np.sort(np.random.default_rng(SAMPLE_SEED).choice(eligible, size=int(max_users), replace=False))
        users, idx = users[pick], idx[pick]
    return users, idx, eligible


def _batches(
    store,
    split: str,
    idx: np.ndarray | None,
    batch_size: int,
    device: torch.device,
    progress: Progress | None = None,
    what: str = "",
):
    """Model batches of ``split`` (all samples in order when ``idx`` is None), moved to ``device``."""
    n = store.n(split) if idx is None else len(idx)
    for start in range(0, n, batch_size):
        sel = slice(start, min(n, start + batch_size)) if idx is None else idx[start : start + batch_size]
        batch = store.batch(split, sel)
        yield {k: v.to(device) for k, v in batch.items()}
        if progress:
            progress(what, min(n, start + batch_size), n)


# --------------------------------------------------------------------------------------------- Figure 3


def untrained_head(run: LoadedRun):
    """The w/o C-PA stand-in: an InfoNCE head with its default dims, seeded with the run's seed, never trained."""
    from farmcli.model.align import InfoNCEAlign

    embed = run.cfg.model.embed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(run.cfg.seed))
        head = InfoNCEAlign(video_dim=embed.d1, live_dim=embed.d2)
    return head.to(run.device).eval()


def _head_dims(head) -> list[int]:
    return (
        [m.out_features for m in head.video_mlp if isinstance(m, torch.nn.Linear)] if hasattr(head, "video_mlp") else []
    )


@torch.inference_mode()
def preference_cosines(
    run: LoadedRun, idx: np.ndarray, batch_size: int = 4096, progress: Progress | None = None
) -> tuple[np.ndarray, dict]:
    """cos(h_video, h_live) for samples ``idx`` of the test split, and how h was obtained.

    h = head(preference features): the run's trained align head when it outputs h (align ``infonce``),
    otherwise :func:`untrained_head`. Preference features are V^ (eq. 12) when the run has a preference
    encoder, else the embedded V (eq. 8).
    """
    farm = run.farm
    trained = _slot(run, "align") != "none"
    head = farm.align if trained else untrained_head(run)
    out = np.empty(len(idx), np.float32)
    pos = 0
    for batch in _batches(run.store, SPLIT, np.asarray(idx), batch_size, run.device, progress, "Fig. 3: h"):
        vm, lm = batch["v_mask"].bool(), batch["l_mask"].bool()
        v_video, v_live, _ = farm.embed(batch)
        if farm.preference is not None:
            v_video, v_live = farm.preference(v_video, v_live, vm, lm)
        _, aux = head(v_video, v_live, vm, lm, batch["user_id"])
        if "h_video" not in aux:  # a third-party align without h: fall back to the untrained head
            trained, head = False, untrained_head(run)
            _, aux = head(v_video, v_live, vm, lm, batch["user_id"])
        cos = F.cosine_similarity(aux["h_video"].float(), aux["h_live"].float(), dim=-1)
        out[pos : pos + len(cos)] = cos.clamp(-1.0, 1.0).cpu().numpy()
        pos += len(cos)
    info = {
        "h": "trained InfoNCE head" if trained else "untrained InfoNCE head",
        "features": "self-attended V^ (eq. 12)" if farm.preference is not None else "raw V (eq. 8)",
        "head_dims": _head_dims(head),
        "seed": int(run.cfg.seed),
    }
    return out, info


def describe(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean": None, "std": None, "p10": None, "p50": None, "p90": None}
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "p10": float(p10),
        "p50": float(p50),
        "p90": float(p90),
    }


# --------------------------------------------------------------------------------------------- Figure 4


def choose_user(store, user: int | None = None, split: str = SPLIT) -> tuple[int, int, str]:
    """(user id, sample index, why) of the Figure 4 user: ``user`` (raw id) when given, else a low-active user
    with both histories non-empty and the longest live history (longer video history, then smaller id, on ties);
    mid / high users only when no low-active user qualifies."""
    users, idx = last_sample_per_user(store, split)
    if user is not None:
        where = np.flatnonzero(users == int(user))
        if not len(where):
            known = np.isin(int(user), np.asarray(store.vocab("user")))
            raise UserError(
                f"--user {user}: "
                + (
                    f"this user has no samples in the {split} split, so there is no history to show; pick a user "
                    f"with {split} samples, or leave out --user to pick a low-active one."
                    if known
                    else f"unknown user id (not in the data this run was trained on). Give a raw user_id with {split} "
                    f"samples, or leave out --user to pick a low-active one."
                )
            )
        i = int(idx[where[0]])
        nv, nl = history_lengths(store, split, np.array([i]))
        if nv[0] == 0 or nl[0] == 0:
            empty = " and ".join(d for d, n in (("video", nv[0]), ("live", nl[0])) if n == 0)
            raise UserError(
                f"--user {user}: the {empty} history of this user's last {split} sample is empty, so "
                f"there is no cross-attention to show; pick another user or leave out --user."
            )
        return int(user), i, "chosen with --user"
    nv, nl = history_lengths(store, split, idx)
    act = np.asarray(store.split(split).activity, dtype=np.int64)[idx]
    ok = (nv > 0) & (nl > 0)
    for level, name in enumerate(ACTIVITY_LEVELS):
        cand = np.flatnonzero(ok & (act == level))
        if len(cand):
            best = cand[np.lexsort((users[cand], -nv[cand], -nl[cand]))[0]]
            why = (
                f"the {name}-active user with the longest live history"
                if level == 0
                else f"no low-active user has both histories non-empty; the {name}-active user with the longest "
                f"live history"
            )
            return int(users[best]), int(idx[best]), why
    raise UserError(f"no user in the {split} split has both a video and a live history; nothing for Figure 4.")


def _item_labels(store, ids_author: np.ndarray, ids_tag: np.ndarray) -> list[str]:
    authors, tags = np.asarray(store.vocab("author")), np.asarray(store.vocab("tag"))

    def raw(vocab, i):
        i = int(i)
        return str(int(vocab[i - 2])) if 2 <= i < len(vocab) + 2 else "?"  # 1 = out of vocabulary

    return [f"a{raw(authors, a)} t{raw(tags, t)}" for a, t in zip(ids_author, ids_tag)]


@torch.inference_mode()
def cross_attention(run: LoadedRun, index: int) -> dict:
    """Cross-attention of one test sample: weights [n_live, n_video] (mean over heads, real positions only),
    row / column labels ("a<author> t<tag>", oldest first) and the raw ids behind them."""
    store = run.store
    batch = {k: v.to(run.device) for k, v in store.batch(SPLIT, np.array([index])).items()}
    out = run.module(batch, return_aux=True)
    if "cross_attention" not in out.aux:
        raise UserError(f"{run.run}: fuse '{_slot(run, 'fuse')}' returns no cross-attention weights.")
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


# --------------------------------------------------------------------------------------------- Table 3


@torch.inference_mode()
def gate_values(run: LoadedRun, batch_size: int = 4096, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Per-sample gates of the test split, {gate: [N]} for the gates the run has; NaN where that domain's
    history is empty. Per-channel gates are averaged over channels."""
    n = run.store.n(SPLIT)
    out: dict[str, np.ndarray] = {}
    pos = 0
    for batch in _batches(run.store, SPLIT, None, batch_size, run.device, progress, "Table 3: gates"):
        aux = run.module(batch, return_aux=True).aux
        b = len(batch["labels"])
        empty = {"video": ~batch["v_mask"].bool().any(1), "live": ~batch["l_mask"].bool().any(1)}
        for g in GATES:
            if g not in aux:
                continue
            v = aux[g].float().reshape(b, -1).mean(1)
            v = v.masked_fill(empty[GATE_DOMAIN[g]], float("nan"))
            out.setdefault(g, np.full(n, np.nan, np.float32))[pos : pos + b] = v.cpu().numpy()
        pos += b
    return out


def gate_table(gates: Mapping[str, np.ndarray], activity: np.ndarray) -> list[dict]:
    """Rows {group, gate, n, mean, p10, p50, p90} for each group present (low, mid, high, full) and gate."""
    activity = np.asarray(activity)
    rows = []
    for group in GROUPS:
        sel = np.ones(len(activity), bool) if group == "full" else activity == ACTIVITY_LEVELS.index(group)
        if not sel.any():
            continue
        for g, v in gates.items():
            x = np.asarray(v)[sel]
            x = x[np.isfinite(x)]
            if not x.size:
                continue
            p10, p50, p90 = np.percentile(x, [10, 50, 90])
            rows.append(
                {
                    "group": group,
                    "gate": g,
                    "n": int(x.size),
                    "mean": float(x.mean()),
                    "p10": float(p10),
                    "p50": float(p50),
                    "p90": float(p90),
                }
            )
    return rows


def _gates_by_group(gates: Mapping[str, np.ndarray], activity: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for g, v in gates.items():
        v = np.asarray(v)
        out[g] = {}
        for group in GROUPS:
            sel = np.ones(len(v), bool) if group == "full" else activity == ACTIVITY_LEVELS.index(group)
            x = v[sel]
            x = x[np.isfinite(x)]
            if x.size:
                out[g][group] = x
    return out


# --------------------------------------------------------------------------------------------- curves


def log_files(run: Path) -> list[Path]:
    """logs/metrics.csv, then logs/resumeN/metrics.csv in N order (the legs of a resumed run)."""
    logs = Path(run) / "logs"
    files = [logs / "metrics.csv"] if (logs / "metrics.csv").is_file() else []
    legs = [p for p in logs.glob("resume*/metrics.csv") if re.fullmatch(r"resume\d+", p.parent.name)]
    return files + sorted(legs, key=lambda p: int(p.parent.name[len("resume") :]))


def training_logs(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (x, y)} from every leg's metrics.csv: x = step for train/*, epoch for val/*; where a resumed
    leg logged a step (epoch) again, the later leg's value wins."""
    import polars as pl

    frames = []
    for leg, f in enumerate(log_files(run)):
        try:
            df = pl.read_csv(f, infer_schema_length=None)
        except Exception as e:  # a truncated or empty log: say which
            raise UserError(f"{f}: cannot read the training log ({str(e).splitlines()[0][:200]}).") from None
        if df.height:
            frames.append(df.with_columns(pl.lit(leg).alias("_leg")))
    if not frames:
        return {}
    df = pl.concat(frames, how="diagonal_relaxed")
    out = {}
    for col in df.columns:
        if col in ("epoch", "step", "_leg") or not (col.startswith("train/") or col.startswith("val/")):
            continue
        x = "epoch" if col.startswith("val/") else "step"
        d = (
            df.select(x, col, "_leg")
            .drop_nulls()
            .filter(pl.col(col).is_not_nan())
            .sort([x, "_leg"])
            .unique(subset=[x], keep="last", maintain_order=True)
        )
        if d.height:
            out[col] = (d[x].to_numpy(), d[col].to_numpy().astype(np.float64))
    return out


def curve_inputs(logs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    tasks = {t: logs[f"train/bce_{t}"] for t in TASKS if f"train/bce_{t}" in logs}
    val = {}
    if "val/auc_mean" in logs:
        val["mean"] = logs["val/auc_mean"]
    val.update({t: logs[f"val/auc_{t}"] for t in TASKS if f"val/auc_{t}" in logs})
    return {"task_losses": tasks, "cl": logs.get("train/cl"), "val": val}


# --------------------------------------------------------------------------------------------- report


@dataclass
class _Page:
    """report.md being written: sections of Markdown, plus the files each section links."""

    parts: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.parts.extend(lines)
        self.parts.append("")


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _fig3_labels(runs: list[LoadedRun]) -> list[str]:
    labels = []
    for r in runs:
        label = r.label
        if "C-PA" not in label:
            label += " (with C-PA)" if _slot(r, "align") != "none" else " (w/o C-PA)"
        labels.append(label)
    if len(labels) == 2 and labels[0] == labels[1]:
        labels = [f"{lab} [{r.name}]" for lab, r in zip(labels, runs)]
    return labels


def build_report(
    run: str | Path,
    compare: str | Path | None = None,
    user: int | None = None,
    out: str | Path | None = None,
    max_users: int = 10_000,
    *,
    batch_size: int = 4096,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Path:
    """Write the report of ``run`` (and ``compare`` overlaid in Figure 3) to ``out`` (default RUN/report/).

    Returns the path of report.md. Bad input (not a run directory, unknown ``user``) raises UserError before any
    model pass.
    """
    if max_users is not None and int(max_users) < 1:
        raise UserError(f"--max-users must be at least 1, got {max_users}.")
    main = load_run(run, device)
    other = load_run(compare, device) if compare is not None else None
    has_fuse = _slot(main, "fuse") == "cross_attention"
    chosen = choose_user(main.store, user) if (has_fuse or user is not None) else None
    from farmcli.analysis import plots  # after the input checks, which need no matplotlib

    out = Path(out) if out is not None else main.run / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs = [main] + ([other] if other is not None else [])
    summary: dict[str, Any] = {
        "run": str(main.run),
        "checkpoint": str(main.ckpt),
        "variant": main.cfg.variant,
        "compare": str(other.run) if other else None,
        "split": SPLIT,
        "files": {},
    }
    page = _Page()
    title = f"# Report: {main.name}" + (f" vs {other.name}" if other else "")
    page.add(title, "", *_run_lines(runs))

    # ---- Figure 3
    labels = _fig3_labels(runs)
    cos_series, fig3 = {}, {}
    csv_rows = io.StringIO()
    w = csv.writer(csv_rows)
    w.writerow(["run", "label", "user_id", "cosine"])
    for r, label in zip(runs, labels):
        users, idx, eligible = alignment_users(r.store, SPLIT, max_users)
        cos, info = preference_cosines(r, idx, batch_size, _named(progress, f"Fig. 3: h of {r.name}"))
        cos_series[label] = cos
        fig3[label] = {"run": str(r.run), **describe(cos), "eligible_users": eligible, **info}
        for u, c in zip(users, cos):
            w.writerow([r.name, label, int(u), f"{float(c):.6f}"])
    summary["figure3"] = fig3
    if any(len(v) for v in cos_series.values()):
        plots.cosine_histogram(
            cos_series, out / FILES["fig3"], title="cos(h_video, h_live) per test user (Fig. 3 shape)"
        )
        write_text(out / FILES["cosine_csv"], csv_rows.getvalue())
        summary["files"].update(fig3=FILES["fig3"], cosine_csv=FILES["cosine_csv"])
    page.add(*_fig3_text(fig3, max_users, summary["files"]))

    # ---- Figure 4
    if not has_fuse:
        summary["figure4"] = None
        page.add(
            "## Figure 4: cross-attention heatmap",
            "",
            f"Skipped: this run's fuse slot is `{_slot(main, 'fuse')}`, so it has no cross-attention "
            f"(eq. 16) to show. Figure 4 needs a run with fuse `cross_attention`.",
        )
    else:
        uid, index, why = chosen
        att = cross_attention(main, index)
        stats = attention_summary(att)
        act = ACTIVITY_LEVELS[int(main.store.split(SPLIT).activity[index])]
        stats.update(user_id=uid, activity=act, why=why, sample_ts=int(main.store.split(SPLIT).ts[index]))
        plots.attention_heatmap(
            att["weights"],
            att["rows"],
            att["cols"],
            out / FILES["fig4"],
            title=f"{main.label}: cross-attention of user {uid} ({act}-active), last test "
            f"sample\n{stats['n_live']} live x {stats['n_video']} video items, "
            f"mean over heads",
        )
        summary["figure4"] = stats
        summary["files"]["fig4"] = FILES["fig4"]
        page.add(*_fig4_text(stats))

    # ---- Table 3
    gates = (
        gate_values(main, batch_size, _named(progress, f"Table 3: gates of {main.name}"))
        if any(_slot(main, s) != "none" for s in ("video_frequency", "live_frequency"))
        else {}
    )
    activity = np.asarray(main.store.split(SPLIT).activity, dtype=np.int64)
    rows = gate_table(gates, activity)
    summary["table3"] = rows
    missing = [s for s in ("video_frequency", "live_frequency") if _slot(main, s) == "none"]
    if rows:
        buf = io.StringIO()
        cw = csv.DictWriter(buf, fieldnames=["group", "gate", "n", *STATS])
        cw.writeheader()
        for row in rows:
            cw.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text(out / FILES["gates_csv"], buf.getvalue())
        plots.gate_boxplot(
            _gates_by_group(gates, activity),
            out / FILES["table3"],
            title=f"{main.label}: frequency gates per activity group, test split (Table 3 shape)",
        )
        summary["files"].update(table3=FILES["table3"], gates_csv=FILES["gates_csv"])
    page.add(*_table3_text(rows, missing, gates))

    # ---- training curves
    summary["curves"] = {}
    page.add("## Training curves")
    for r, key in zip(runs, ("curves", "curves_compare")):
        logs = training_logs(r.run)
        inputs = curve_inputs(logs)
        if not inputs["task_losses"] and not inputs["val"]:
            page.add(f"No training log for {r.name} (no logs/metrics.csv with train/ or val/ columns).")
            continue
        plots.training_curves(
            inputs["task_losses"],
            out / FILES[key],
            cl=inputs["cl"],
            val=inputs["val"],
            title=f"{r.label} ({r.name}): training curves",
        )
        summary["files"][key] = FILES[key]
        legs = len(log_files(r.run))
        stats = _curve_stats(inputs, legs)
        summary["curves"][r.name] = stats
        page.add(*_curves_text(r, FILES[key], stats))

    summary["files"]["md"] = FILES["md"]
    summary["files"]["json"] = FILES["json"]
    for key, name in FILES.items():  # files of an earlier report in this directory that this one did not write
        if key not in summary["files"] and (out / name).is_file():
            (out / name).unlink()
    write_json(out / FILES["json"], summary)
    md = out / FILES["md"]
    write_text(md, "\n".join(page.parts).rstrip() + "\n")
    return md


# --------------------------------------------------------------------------------------------- text


def _named(progress: Progress | None, what: str) -> Progress | None:
    return None if progress is None else (lambda _what, done, total: progress(what, done, total))


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _run_lines(runs: list[LoadedRun]) -> list[str]:
    lines = []
    for i, r in enumerate(runs):
        slots = ", ".join(f"{s}={_slot(r, s)}" for s in ("video_frequency", "live_frequency", "align", "fuse", "head"))
        role = "Run" if i == 0 else "Compared with"
        info = _read_json(r.run / "run.json")
        best = (
            f" ({info['monitor']} {info['best_score']:.4f} in run.json)"
            if isinstance(info.get("best_score"), (int, float)) and info.get("monitor")
            else ""
        )
        lines.append(
            f"- **{role}:** `{r.run}` — variant `{r.cfg.variant}` ({r.label}); checkpoint "
            f"`{r.ckpt.name}`{best}; data `{r.cfg.data.source}`; seed {r.cfg.seed}; {slots}."
        )
    lines.append(f"- Everything below is computed on the **{SPLIT}** split of each run's own sample store.")
    return lines


def _fig3_text(fig3: dict, max_users: int, files: dict) -> list[str]:
    lines = ["## Figure 3: cross-domain preference alignment", ""]
    if "fig3" not in files:
        return lines + ["No test user has both a video and a live history, so there is nothing to plot."]
    lines += [f"![cos(h_video, h_live) histogram]({files['fig3']})", ""]
    lines.append(
        f"Histogram of the cosine between each user's video and live preference vectors, h_video and h_live "
        f"(eq. 13), one sample per user (their last {SPLIT} sample), over users whose two histories are both "
        f"non-empty (at most {max_users:,}; per-user values in [{files['cosine_csv']}]({files['cosine_csv']}))."
    )
    parts = []
    for label, d in fig3.items():
        capped = f" of {d['eligible_users']:,} eligible" if d["eligible_users"] > d["n"] else ""
        parts.append(
            f"**{label}**: mean {_f(d['mean'])}, median {_f(d['p50'])}, p10-p90 "
            f"[{_f(d['p10'])}, {_f(d['p90'])}] over {d['n']:,} users{capped} ({d['h']} on "
            f"{d['features']})"
        )
    lines.append("; ".join(parts) + ".")
    means = [d["mean"] for d in fig3.values()]
    if len(means) == 2 and None not in means:
        (a, da), (b, db) = fig3.items()
        diff = da["mean"] - db["mean"]
        lines[-1] += f" The mean of {a} is {abs(diff):.3f} {'higher' if diff >= 0 else 'lower'} than that of {b}."
        aligned = [label for label, d in fig3.items() if d["h"].startswith("trained")]
        if len(aligned) == 1:
            lead = max(fig3, key=lambda k: fig3[k]["mean"])
            lines[-1] += (
                " As in the paper's Fig. 3, the run trained with the contrastive loss has the more similar preferences."
                if lead == aligned[0]
                else " The paper's Fig. 3 finds the opposite (the contrastively aligned run higher); on this run "
                "the alignment has not (yet) raised the cosine."
            )
    untrained = [(label, d) for label, d in fig3.items() if d["h"].startswith("untrained")]
    for label, d in untrained:
        lines += [
            "",
            f"*How h is defined for {label}:* that run has no align head (align `none`), so h is the "
            f"output of the same InfoNCE projection head (`InfoNCEAlign`, default dims "
            f"{d['head_dims']}, normalised), initialised with the run's seed ({d['seed']}) and never "
            f"trained, applied to the run's {d['features']}: what the head would give with no "
            f"contrastive loss. Its cosines therefore reflect the geometry of the untrained projection "
            f"of that run's features, not a learned alignment.",
        ]
    return lines


def _fig4_text(s: dict) -> list[str]:
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


def _table3_text(rows: list[dict], missing: list[str], gates: Mapping[str, np.ndarray]) -> list[str]:
    lines = ["## Table 3: frequency gates per activity group", ""]
    note = {"video_frequency": "video (alpha, beta)", "live_frequency": "live (gamma, delta)"}
    if missing:
        lines += [
            f"This run has no frequency module on the {' and '.join(note[m] for m in missing)} side "
            f"(slot `none`), so {'that side has' if len(missing) == 1 else 'neither side has'} gates.",
            "",
        ]
    if not rows:
        return (
            lines
            if len(missing) == 2
            else lines + ["No gate values to report (no test sample has a history on the side that has gates)."]
        )
    groups = [g for g in GROUPS if any(r["group"] == g for r in rows)]
    names = [g for g in GATES if g in gates]
    mean = {(r["group"], r["gate"]): r for r in rows}
    lines += [
        "![gate box plot](table3-gates.png)",
        "",
        "Learned gates of eq. 10 (alpha / beta: video low / high frequency; gamma / delta: live low / high) "
        f"over the samples of the {SPLIT} split, per user-activity group. A sample whose history of a domain "
        "is empty is left out of that domain's gates (the gate has nothing to weigh). Boxes: p25-p75 and "
        f"median; whiskers p10-p90; diamonds: mean. All values: [table3-gates.csv](table3-gates.csv).",
        "",
        "Mean per group (Table 3 shape):",
        "",
        "| group | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for g in groups:
        lines.append(
            f"| {g} | " + " | ".join(_f(mean[(g, n)]["mean"]) if (g, n) in mean else "n/a" for n in names) + " |"
        )
    lines += [
        "",
        "Distribution (p10 / p50 / p90 and samples):",
        "",
        "| group | gate | samples | mean | p10 | p50 | p90 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {r['gate']} | {r['n']:,} | {_f(r['mean'])} | {_f(r['p10'])} | "
            f"{_f(r['p50'])} | {_f(r['p90'])} |"
        )
    high = [n for n in ("beta", "delta") if n in names]
    if high and "low" in groups and "full" in groups:
        parts = []
        for n in high:
            if ("low", n) in mean:
                lo, full = mean[("low", n)]["mean"], mean[("full", n)]["mean"]
                low_name = "alpha" if n == "beta" else "gamma"
                side = (
                    f" (its low-frequency partner {low_name}: {_f(mean[('low', low_name)]['mean'], 4)} for "
                    f"low-active users)"
                    if ("low", low_name) in mean
                    else ""
                )
                parts.append(f"{n} averages {_f(lo, 4)} for low-active users vs {_f(full, 4)} overall{side}")
        if parts:
            lines += [
                "",
                "High-frequency gates: "
                + "; ".join(parts)
                + ". The paper's Table 3 finds beta and delta high (about 0.9) for a low-active user.",
            ]
            if all(abs(r["mean"] - 0.5) < 0.05 for r in rows if r["group"] == "full"):
                lines[-1] += (
                    " Here every gate averages within 0.05 of 0.5, its value at initialisation: the gate "
                    "MLPs have barely moved (a short run), so the groups cannot differ much yet."
                )
    return lines


def _curve_stats(inputs: dict, legs: int) -> dict:
    stats: dict[str, Any] = {"legs": legs}
    tl = inputs["task_losses"]
    if tl:
        stats["steps"] = int(max(x.max() for x, _ in tl.values()))
        stats["points"] = int(max(len(x) for x, _ in tl.values()))
        stats["first_bce"] = {t: float(y[0]) for t, (_, y) in tl.items()}
        stats["last_bce"] = {t: float(y[-1]) for t, (_, y) in tl.items()}
    if inputs["cl"] is not None:
        x, y = inputs["cl"]
        stats["cl_first"], stats["cl_last"] = float(y[0]), float(y[-1])
    if "mean" in inputs["val"]:
        x, y = inputs["val"]["mean"]
        b = int(np.nanargmax(y))
        stats.update(epochs=int(len(x)), best_val_auc_mean=float(y[b]), best_epoch=int(x[b]))
    return stats


def _curves_text(r: LoadedRun, fname: str, s: dict) -> list[str]:
    lines = [f"![training curves of {r.name}]({fname})", ""]
    text = (
        f"{r.label} (`{r.name}`), from {s['legs']} log file{'s' if s['legs'] != 1 else ''} "
        f"(logs/metrics.csv{' and the resumed legs' if s['legs'] > 1 else ''}): per-task training BCE by step "
        f"(rolling mean when there are many points)"
    )
    if "cl_first" in s:
        text += ", the contrastive loss L_cl by step"
    text += " and validation AUC per epoch."
    if "last_bce" in s and s["points"] > 1:
        ch = ", ".join(f"{t} {s['first_bce'][t]:.3f} -> {s['last_bce'][t]:.3f}" for t in s["last_bce"])
        text += f" From the first to the last logged step ({s['steps']}) the BCE went {ch}."
        if "cl_first" in s:
            text += f" L_cl went {s['cl_first']:.3f} -> {s['cl_last']:.3f}."
    elif "last_bce" in s:
        ch = ", ".join(f"{t} {v:.3f}" for t, v in s["last_bce"].items())
        text += f" Only one training step was logged ({s['steps']}): BCE {ch}."
        if "cl_first" in s:
            text += f" L_cl {s['cl_last']:.3f}."
    if "best_val_auc_mean" in s:
        text += (
            f" The best mean validation AUC is {s['best_val_auc_mean']:.4f} at epoch {s['best_epoch']} "
            f"(of {s['epochs']} validated)."
        )
    return lines + [text]
