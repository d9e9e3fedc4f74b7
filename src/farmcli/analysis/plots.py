"""The report's figures: plain numpy data in, one PNG out (atomically), so each is tested on synthetic input.

matplotlib's object API on the Agg canvas: no pyplot, no global backend switch. matplotlib is the ``plots`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from farmcli.errors import UserError
from farmcli.io import atomic_path

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover - depends on the installed extras
    raise UserError(
        "farm report draws its figures with matplotlib, which is not installed. "
        "Install it with: pip install 'farmcli[plots]' (or pip install matplotlib)."
    ) from None

DPI = 130
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
GROUP_COLORS = {"low": "#d62728", "mid": "#ff7f0e", "high": "#2ca02c", "full": "#1f77b4"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Lay out, then write ``fig`` as PNG atomically; ``bbox_inches='tight'`` keeps every label inside."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return path


def cosine_histogram(
    series: Mapping[str, np.ndarray], path: str | Path, *, title: str | None = None, bins: int = 40
) -> Path:
    """Figure 3: {legend label: per-user cos(h_video, h_live)} as overlaid histograms with their means, on one set
    of bins over the joint range so the bars compare directly."""
    series = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    values = [v[np.isfinite(v)] for v in series.values()]
    joint = np.concatenate(values) if values else np.empty(0)
    lo, hi = (float(joint.min()), float(joint.max())) if joint.size else (-1.0, 1.0)
    pad = max(0.02, 0.05 * (hi - lo))
    edges = np.linspace(max(-1.0, lo - pad), min(1.0, hi + pad), bins + 1)
    fig = _figure(7.0, 4.2)
    ax = fig.subplots()
    for i, (label, v) in enumerate(zip(series, values)):
        color = COLORS[i % len(COLORS)]
        mean = float(v.mean()) if v.size else float("nan")
        legend = f"{label}: mean {mean:.3f} (n = {v.size:,})"
        ax.hist(v, bins=list(edges), color=color, alpha=0.45, edgecolor=color, linewidth=0.8, label=legend)
        if v.size:
            ax.axvline(mean, color=color, linestyle="--", linewidth=1.4)
    ax.set_xlabel("cos(h_video, h_live)  (one sample per user)")
    ax.set_ylabel("users")
    ax.set_title(title or "Cross-domain preference similarity (Fig. 3)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", frameon=True)
    ax.margins(y=0.25)  # head room for the legend above the bars
    return save(fig, path)


def attention_heatmap(
    weights: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Figure 4: cross-attention weights [n_live (queries), n_video (keys)], labelled per history item (e.g.
    "a123 t7"), oldest first; figure and font size follow the counts."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"weights {w.shape} do not match {len(row_labels)} row and {len(col_labels)} column labels")
    n_rows, n_cols = w.shape
    x_font, y_font = _tick_font(n_cols), _tick_font(n_rows)
    x_room = max([len(s) for s in col_labels] or [1]) * x_font * 0.6 / 72  # inches of rotated label text
    y_room = max([len(s) for s in row_labels] or [1]) * y_font * 0.6 / 72
    x_cell, y_cell = max(0.18, x_font * 1.9 / 72), max(0.18, y_font * 1.9 / 72)  # one tick label per cell
    width = min(30.0, max(5.5, n_cols * x_cell + y_room + 2.4))
    height = min(30.0, max(3.2, n_rows * y_cell + x_room + 1.6))
    fig = _figure(width, height)
    ax = fig.subplots()
    im = ax.imshow(w, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(n_cols))
    ax.set_xticklabels(col_labels, rotation=90, fontsize=x_font)
    ax.set_yticks(np.arange(n_rows))
    ax.set_yticklabels(row_labels, fontsize=y_font)
    ax.set_xlabel("short-video history (keys), oldest \u2192 newest", fontsize=9)
    ax.set_ylabel("live history (queries), oldest \u2192 newest", fontsize=9)
    ax.set_title(title or "Cross-attention weights (Fig. 4)", fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.04 if n_cols > 12 else 0.08, pad=0.02)
    cbar.set_label("attention weight (mean over heads)", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    return save(fig, path)


def _tick_font(n: int) -> float:
    return 9.0 if n <= 15 else 8.0 if n <= 30 else 7.0


def gate_boxplot(gates: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, *, title: str | None = None) -> Path:
    """Table 3 as a figure: a panel per gate, a box per activity group of ``gates[gate][group]`` (p25-p75 and
    median, whiskers p10-p90 as in the table, a diamond at the mean)."""
    names = list(gates)
    if not names:
        raise ValueError("no gates to plot")
    fig = _figure(max(4.5, 3.0 * len(names)), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True, squeeze=False)[0])
    for ax, gate in zip(axes, names):
        groups = [g for g, v in gates[gate].items() if len(v)]
        data = [np.asarray(gates[gate][g], dtype=np.float64) for g in groups]
        if data:
            box = ax.boxplot(
                data, whis=(10, 90), showfliers=False, patch_artist=True, widths=0.6, medianprops={"color": "black"}
            )
            for patch, g in zip(box["boxes"], groups):
                patch.set_facecolor(GROUP_COLORS.get(g, "#bbbbbb"))
                patch.set_alpha(0.55)
            means = [d.mean() for d in data]
            ax.scatter(np.arange(1, len(data) + 1), means, marker="D", s=18, color="black", zorder=3, label="mean")
            ax.set_xticks(np.arange(1, len(groups) + 1))
            ax.set_xticklabels(groups, fontsize=9)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(_GATE_TITLES.get(gate, gate), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlabel("activity group", fontsize=9)
    axes[0].set_ylabel("gate value", fontsize=9)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "Frequency gates per activity group (Table 3)", fontsize=11)
    return save(fig, path)


_GATE_TITLES = {
    "alpha": "\u03b1  video low-freq.",
    "beta": "\u03b2  video high-freq.",
    "gamma": "\u03b3  live low-freq.",
    "delta": "\u03b4  live high-freq.",
}
