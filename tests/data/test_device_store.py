"""DeviceStore (farmcli/data/device_store.py): batches gathered by torch ops on a device equal the sample store's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from farmcli.data.device_store import DeviceStore
from farmcli.data.schema import SPLITS
from farmcli.data.store import SPARSE_FILL, SampleStore


def assert_same_batch(want: dict, got: dict) -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, (k, g.dtype, w.dtype, g.shape, w.shape)
        assert torch.equal(g.cpu(), w), k


@pytest.fixture(scope="module")
def on_cpu(tiny_store) -> DeviceStore:
    return DeviceStore(tiny_store, "cpu")


def live_lengths(store: SampleStore, split: str) -> np.ndarray:
    s = store.split(split)
    return np.minimum(np.asarray(s.l_end) - np.asarray(s.l_start), store.history_len)


@pytest.mark.parametrize("split", SPLITS)
def test_random_batches_equal_the_sample_store(tiny_store, on_cpu, split):
    n = tiny_store.n(split)
    assert n > 0
    rng = np.random.default_rng(SPLITS.index(split))
    for size in (1, 2, 7, 64, 513, n):
        idx = rng.integers(-n, n, size=size)  # any order, repeats, negative indices
        assert_same_batch(tiny_store.batch(split, idx), on_cpu.batch(split, torch.from_numpy(idx)))


@pytest.mark.parametrize("split", SPLITS)
def test_empty_and_sparse_live_histories(tiny_store, on_cpu, split):
    """The sample store reads a batch three ways (every live history empty; few real positions; dense):
    each equals the device's one way."""
    lengths = live_lengths(tiny_store, split)
    empty, full = np.flatnonzero(lengths == 0), np.flatnonzero(lengths > 0)
    assert len(empty) and len(full)  # tiny has both
    L = tiny_store.history_len
    cases = {
        "all empty": empty[:50],
        "sparse": np.concatenate([empty[:40], full[:2]]),
        "dense": full[np.argsort(-lengths[full], kind="stable")][:20],
        "one empty": empty[:1],
    }
    fill = {name: lengths[idx].sum() / (len(idx) * L) for name, idx in cases.items()}
    assert fill["all empty"] == 0 and 0 < fill["sparse"] < SPARSE_FILL
    for name, idx in cases.items():
        got = on_cpu.batch(split, torch.from_numpy(idx))
        assert_same_batch(tiny_store.batch(split, idx), got)
        assert got["l_mask"].sum(1).tolist() == lengths[idx].tolist(), name


def test_empty_index_set(tiny_store, on_cpu):
    idx = np.zeros(0, dtype=np.int64)
    got = on_cpu.batch("train", torch.from_numpy(idx))
    assert_same_batch(tiny_store.batch("train", idx), got)
    assert got["v_author"].shape == (0, tiny_store.history_len)


def test_a_whole_epoch_in_the_samplers_order(tiny_store, on_cpu):
    from farmcli.data.module import BatchIndexSampler

    sampler = BatchIndexSampler(tiny_store.n("train"), 1000, shuffle=True, seed=5)
    for idx in sampler:
        assert_same_batch(tiny_store.batch("train", idx), on_cpu.batch("train", torch.from_numpy(idx)))


def test_a_store_without_live_events(tiny_store, tmp_path):
    """A domain with no history event at all (a dataset without live clicks): zeros and an all-False mask."""
    path = tmp_path / "store"
    shutil.copytree(tiny_store.path, path)
    man = json.loads((path / "manifest.json").read_text())
    for name, meta in man["arrays"].items():
        if name.startswith("live."):
            meta["shape"] = [0]
            (path / f"{name}.bin").write_bytes(b"")
        elif name.endswith((".l_start", ".l_end")):
            (path / f"{name}.bin").write_bytes(np.zeros(meta["shape"], dtype=meta["dtype"]).tobytes())
    man.pop("checksums")  # arrays edited by hand: the build's checksums no longer hold (its values still check)
    (path / "manifest.json").write_text(json.dumps(man))
    store = SampleStore.open(path)
    dev = DeviceStore(store, "cpu")
    idx = np.random.default_rng(0).integers(0, store.n("valid"), 300)
    got = dev.batch("valid", torch.from_numpy(idx))
    assert_same_batch(store.batch("valid", idx), got)
    assert not got["l_mask"].any() and not got["l_lag"].any() and got["v_mask"].any()


def test_only_the_splits_asked_for(tiny_store):
    dev = DeviceStore(tiny_store, "cpu", splits=("valid",))
    assert dev.splits == ("valid",)
    assert DeviceStore.nbytes(tiny_store, ("valid",)) < DeviceStore.nbytes(tiny_store)
    with pytest.raises(KeyError, match="not on the device"):
        dev.batch("train", torch.arange(3))
    from farmcli.errors import UserError

    with pytest.raises(UserError, match="unknown split"):
        dev.batch("nope", torch.arange(3))


def test_nbytes_is_what_the_device_holds(tiny_store, on_cpu):
    held = sum(t.numel() * t.element_size() for s in on_cpu._splits.values() for t in (s.ints, s.floats))
    held += sum(t.numel() * t.element_size() for d in on_cpu._domains.values() for t in (d.fields, d.ts))
    assert DeviceStore.nbytes(tiny_store) == held


def test_fits(tiny_store):
    assert DeviceStore.fits(tiny_store, "cpu")
    assert not DeviceStore.fits(tiny_store, "meta")  # neither the CPU nor CUDA: not used by "auto"
    if not torch.cuda.is_available():
        assert not DeviceStore.fits(tiny_store, "cuda")
    else:
        assert DeviceStore.fits(tiny_store, "cuda", share=0.5)
        assert not DeviceStore.fits(tiny_store, "cuda", share=1e-12)


def test_the_batch_reads_no_host_data(tiny_store, on_cpu, monkeypatch):
    """The gather is torch alone: numpy is never asked, and no tensor is turned into a Python value."""
    idx = torch.arange(0, 200, 3)
    want = tiny_store.batch("train", idx.numpy())

    def refuse(*args, **kwargs):
        raise AssertionError("a host conversion inside DeviceStore.batch")

    for name in ("item", "tolist", "__bool__", "numpy", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    got = on_cpu.batch("train", idx)
    monkeypatch.undo()
    assert_same_batch(want, got)
