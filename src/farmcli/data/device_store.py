"""The sample store's arrays resident on a device, and batches gathered there by index.

:class:`DeviceStore` copies what a batch is made of onto one device once, then turns a tensor of sample indices
on that device into the same batch as :meth:`SampleStore.batch <farmcli.data.store.SampleStore.batch>` with torch
ops alone: no host copy, no host sync and no Python branch on the data, so a step can be queued without waiting
(and captured by CUDA graphs or ``torch.compile``). A GPU step is bound by kernel launches, so the layout is
chosen to gather with few: per split, the integer columns as one int64 matrix [C, n] and the labels (and ``p``)
as one float32 tensor [1 or 2, n, 6]; per domain, the event fields as one matrix [F, E] in the widest stored
type, and the event times [E]. Indices must lie in ``-n .. n - 1``; out of range, the CPU raises and CUDA stops
with a device-side assert (checking on the host would be a sync).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from farmcli.data.encoding import LAG_THRESHOLDS
from farmcli.data.schema import SPLITS
from farmcli.data.store import HISTORY_FIELDS, PREFIX, SAMPLE_IDS, SampleStore

DEFAULT_SHARE = 0.5
"""The share of the device's free memory the arrays may take (``fits``) unless told otherwise."""

INT_COLUMNS = (*SAMPLE_IDS, "user_id", "activity", "ts", "v_start", "v_end", "l_start", "l_end")
"""Per-sample integer columns, the rows of a split's int64 matrix on the device."""

OUTPUT_IDS = (*SAMPLE_IDS, "user_id", "activity")
"""The integer columns a batch carries (the others only place the histories)."""


def concrete_device(device: str | torch.device) -> torch.device:
    """``cuda`` as the index it means now (``cuda:0``), so that it compares equal to its tensors' devices."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _device_dtype(dtype: np.dtype) -> np.dtype:
    """A stored integer type as torch holds it: signed (torch indexes few unsigned types), uint8 kept."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u" and dtype.itemsize > 1:
        return np.promote_types(dtype, np.int8)
    return dtype


def _event_fields(dom: str) -> tuple[str, ...]:
    """A domain's stored event fields, in the batch's order (``lag`` is computed from the event times)."""
    return tuple(f for f in HISTORY_FIELDS[dom] if f != "lag")


def _event_dtype(store: SampleStore, dom: str) -> np.dtype:
    arrays = store.manifest["arrays"]
    return np.dtype(np.result_type(*(_device_dtype(arrays[f"{dom}.{f}"]["dtype"]) for f in _event_fields(dom))))


@dataclass(frozen=True)
class _Split:
    n: int
    ints: Tensor
    """[len(INT_COLUMNS), n] int64."""
    floats: Tensor
    """[1 or 2, n, tasks] float32: labels, then p when the store has it."""


@dataclass(frozen=True)
class _Domain:
    events: int
    fields: Tensor
    """[len(_event_fields(dom)), E] in ``_event_dtype``."""
    ts: Tensor
    """[E] int64."""


class DeviceStore:
    """The arrays a batch needs, on ``device``; :meth:`batch` gathers there (see the module docstring)."""

    def __init__(self, store: SampleStore, device: str | torch.device = "cpu", splits: Iterable[str] = SPLITS):
        self.store = store
        self.device = concrete_device(device)
        self.history_len = store.history_len
        self._splits: dict[str, _Split] = {s: self._load_split(s) for s in dict.fromkeys(splits)}
        self._domains: dict[str, _Domain] = {dom: self._load_domain(dom) for dom in HISTORY_FIELDS}
        self._lag_thresholds = torch.as_tensor(LAG_THRESHOLDS, dtype=torch.int64).to(self.device)
        self._offsets = torch.arange(self.history_len, dtype=torch.int64, device=self.device) - self.history_len

    # -- sizing
    @staticmethod
    def nbytes(store: SampleStore, splits: Iterable[str] = SPLITS) -> int:
        """Bytes the arrays take on the device for ``splits`` (from the manifest; nothing is read)."""
        arrays = store.manifest["arrays"]
        total = 0
        for s in dict.fromkeys(splits):
            n, tasks = store.n(s), int(np.prod(arrays[f"{s}.labels"]["shape"][1:]))
            total += n * (8 * len(INT_COLUMNS) + 4 * tasks * (2 if f"{s}.p" in arrays else 1))
        for dom in HISTORY_FIELDS:
            events = int(arrays[f"{dom}.ts"]["shape"][0])
            total += events * (8 + len(_event_fields(dom)) * _event_dtype(store, dom).itemsize)
        return total

    @classmethod
    def fits(
        cls,
        store: SampleStore,
        device: str | torch.device,
        splits: Iterable[str] = SPLITS,
        share: float = DEFAULT_SHARE,
    ) -> bool:
        """Whether the arrays of ``splits`` take at most ``share`` of ``device``'s free memory.

        CUDA: the free memory torch.cuda.mem_get_info reports now. The CPU: always (the arrays are read into
        host memory, which is what the memory-mapped store's page cache holds anyway). Other devices: no.
        """
        device = torch.device(device)
        if device.type == "cpu":
            return True
        if device.type != "cuda" or not torch.cuda.is_available():
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return cls.nbytes(store, splits) <= share * free

    # -- loading
    def _put(self, a: np.ndarray) -> Tensor:
        if not (a.flags.writeable and a.flags.c_contiguous):  # a memory map: read it into memory once
            a = np.array(a, order="C")
        return torch.from_numpy(a).to(self.device)

    def _load_split(self, split: str) -> _Split:
        s = self.store.split(split)  # checks the name
        ints = np.empty((len(INT_COLUMNS), s.n), dtype=np.int64)
        for i, c in enumerate(INT_COLUMNS):
            ints[i] = getattr(s, c)
        floats = np.empty((1 if s.p is None else 2, *s.labels.shape), dtype=np.float32)
        floats[0] = s.labels
        if s.p is not None:
            floats[1] = s.p
        return _Split(s.n, self._put(ints), self._put(floats))

    def _load_domain(self, dom: str) -> _Domain:
        fields = _event_fields(dom)
        ts = self.store.array(f"{dom}.ts")
        matrix = np.empty((len(fields), len(ts)), dtype=_event_dtype(self.store, dom))
        for i, f in enumerate(fields):
            matrix[i] = self.store.array(f"{dom}.{f}")
        return _Domain(len(ts), self._put(matrix), self._put(np.asarray(ts, dtype=np.int64)))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    # -- gathering
    def batch(self, split: str, idx: Tensor) -> dict[str, Tensor]:
        """The model batch of samples ``idx`` of ``split``, as :meth:`SampleStore.batch` makes it, on the device.

        ``idx``: int64 sample indices (negative ones count from the end), preferably already on the device.
        """
        if split not in self._splits:
            self.store._check_split(split)
            raise KeyError(f"split '{split}' is not on the device (loaded: {', '.join(self._splits)})")
        s = self._splits[split]
        idx = torch.as_tensor(idx, dtype=torch.int64, device=self.device).reshape(-1)
        idx = torch.where(idx < 0, idx + s.n, idx)
        ints = s.ints.index_select(1, idx)  # [C, B]
        col = dict(zip(INT_COLUMNS, ints.unbind(0)))
        out: dict[str, Tensor] = {c: col[c] for c in OUTPUT_IDS}
        floats = s.floats.index_select(1, idx)  # [1 or 2, B, tasks]
        out["labels"] = floats[0]
        if floats.shape[0] == 2:  # the store's fact (simulated data carries p), not the batch's
            out["p"] = floats[1]
        for dom in HISTORY_FIELDS:
            out.update(self._history(dom, col[f"{PREFIX[dom]}_start"], col[f"{PREFIX[dom]}_end"], col["ts"]))
        return out

    def _history(self, dom: str, start: Tensor, end: Tensor, ts: Tensor) -> dict[str, Tensor]:
        """One domain's fields [B, L] (int64, 0 at padding) and mask [B, L] (bool)."""
        p, d = PREFIX[dom], self._domains[dom]
        pos = end.unsqueeze(1) + self._offsets  # [B, L]: end - L .. end - 1
        valid = pos >= start.unsqueeze(1)
        b, length = pos.shape
        fields = _event_fields(dom)
        if d.events == 0:  # a fact of the store, not of the batch: no history event at all in this domain
            zeros = torch.zeros((len(fields) + 1, b, length), dtype=torch.int64, device=self.device)
            gathered, lag = zeros[:-1], zeros[-1]
        else:
            at = torch.where(valid, pos, 0).reshape(-1)
            gathered = d.fields.index_select(1, at).view(len(fields), b, length).to(torch.int64)
            gathered.mul_(valid)
            lags = ts.unsqueeze(1) - d.ts.index_select(0, at).view(b, length)
            lag = (torch.searchsorted(self._lag_thresholds, lags.clamp_(min=0), right=True) + 1).mul_(valid)
        out: dict[str, Tensor] = {}
        by_name = dict(zip(fields, gathered.unbind(0)))
        for f in HISTORY_FIELDS[dom]:
            out[f"{p}_{f}"] = lag if f == "lag" else by_name[f]
        out[f"{p}_mask"] = valid
        return out

    def __repr__(self) -> str:
        return f"DeviceStore({self.store.path}, {self.device}, splits={','.join(self._splits)})"
