"""A small deterministic k-means (numpy only) for author clusters."""

from __future__ import annotations

import numpy as np

_CHUNK = 65536


def _assign(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of every row (ties: the lowest index), in chunks to bound memory."""
    c = centers.astype(np.float64)
    c2 = (c * c).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    for lo in range(0, len(x), _CHUNK):
        xs = x[lo : lo + _CHUNK].astype(np.float64)
        d = c2[None, :] - 2.0 * xs @ c.T
        out[lo : lo + _CHUNK] = d.argmin(axis=1)
    return out


def kmeans_labels(x: np.ndarray, k: int, *, seed: int = 0, fit_rows: int = 200_000, max_iter: int = 50) -> np.ndarray:
    """Cluster ids 1..m (m <= k) of the rows of ``x``; the same input and seed give the same ids.

    k-means++ initialisation and Lloyd iterations on at most ``fit_rows`` rows (a seeded sample), then every
    row goes to its nearest centre. Ids are renumbered by first occurrence in ``x``: the cluster of row 0
    is 1, the next new cluster met going down the rows is 2, and so on, so the ids do not depend on the
    order in which centres were found (callers pass rows sorted by a key, e.g. author id).
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    k = max(1, min(int(k), n))
    rng = np.random.default_rng(seed)
    fit = x if n <= fit_rows else x[np.sort(rng.choice(n, size=fit_rows, replace=False))]
    fit = fit.astype(np.float64)
    m = len(fit)
    first = int(rng.integers(m))
    centers = [fit[first]]
    d2 = ((fit - fit[first]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:
            break  # fewer distinct points than k
        idx = int(rng.choice(m, p=d2 / total))
        centers.append(fit[idx])
        d2 = np.minimum(d2, ((fit - fit[idx]) ** 2).sum(axis=1))
    c = np.stack(centers)
    for _ in range(max_iter):
        lab = _assign(fit, c)
        counts = np.bincount(lab, minlength=len(c)).astype(np.float64)
        sums = np.stack([np.bincount(lab, weights=fit[:, j], minlength=len(c)) for j in range(fit.shape[1])], axis=1)
        new = c.copy()
        nz = counts > 0
        new[nz] = sums[nz] / counts[nz, None]
        if np.allclose(new, c, rtol=0.0, atol=1e-10):
            c = new
            break
        c = new
    labels = _assign(x, c)
    used, first_at = np.unique(labels, return_index=True)
    order = np.argsort(first_at, kind="stable")
    remap = np.zeros(len(c), dtype=np.int32)
    remap[used[order]] = np.arange(1, len(order) + 1, dtype=np.int32)
    return remap[labels]
