"""`farm export`: FARM's inference graph (candidate ids and two padded histories -> six probabilities) as ONNX
or TorchScript, with what a serving stack needs to build its inputs from raw events: FILE.json (inputs, shapes,
buckets, the label-id rule) and FILE.vocab/NAME.txt (sorted raw ids: line i is index i + 2; 0 pads, 1 is OOV).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from farmcli.batch import CANDIDATE_FIELDS, ID_FIELDS, history_keys
from farmcli.data.schema import LIVE_FLAGS, TASKS, VIDEO_FLAGS
from farmcli.errors import UserError
from farmcli.io import atomic_dir, atomic_path, check_replace, output_path
from farmcli.logs import verbose

if TYPE_CHECKING:
    from farmcli.model.farm import FARM

FORMATS = ("onnx", "torchscript")
FORMAT = "farm-export/1"
INPUTS = (*CANDIDATE_FIELDS, *history_keys("v"), *history_keys("l"))
"""Input names in graph order: candidate ids [batch], then each history field [batch, L] (masks bool)."""
VOCABS = ID_FIELDS


class InferenceGraph(nn.Module):
    """Positional inputs in ``INPUTS`` order -> probabilities [batch, 6] in ``TASKS`` order (no L_cl)."""

    def __init__(self, farm: FARM):
        super().__init__()
        self.farm = farm

    def forward(self, *inputs: Tensor) -> Tensor:
        batch = dict(zip(INPUTS, inputs, strict=True))
        return torch.sigmoid(self.farm(batch, with_cl=False).logits)


class NamedInputs(nn.Module):
    """The inference graph with one named parameter per input, so that a traced module is called with FILE.json's
    names (``*inputs`` became ``input, input0, ...``); ``_check_names`` holds them to ``INPUTS``."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph

    def forward(
        self,
        user: Tensor,
        author: Tensor,
        page: Tensor,
        tag: Tensor,
        cluster: Tensor,
        v_author: Tensor,
        v_page: Tensor,
        v_tag: Tensor,
        v_play: Tensor,
        v_lag: Tensor,
        v_label: Tensor,
        v_mask: Tensor,
        l_author: Tensor,
        l_page: Tensor,
        l_tag: Tensor,
        l_cluster: Tensor,
        l_play: Tensor,
        l_lag: Tensor,
        l_label: Tensor,
        l_mask: Tensor,
    ) -> Tensor:
        given = locals()  # the parameters by name, passed on in INPUTS order
        return self.graph(*(given[name] for name in INPUTS))


def _check_names() -> None:
    """A field added to ``farmcli.batch`` but not to ``NamedInputs`` fails at export, not in serving."""
    names = tuple(inspect.signature(NamedInputs.forward).parameters)[1:]
    if names != INPUTS:
        raise RuntimeError(f"NamedInputs.forward takes {names}, the graph {INPUTS}: update farmcli/exporter.py.")


def example_inputs(vocab: dict[str, int], history_len: int, batch: int = 4, seed: int = 0) -> tuple[Tensor, ...]:
    """A batch with, row by row: no history at all, full histories, out-of-vocabulary ids, random lengths."""
    g = torch.Generator().manual_seed(seed)
    sizes = {k: vocab[k] for k in ("author", "page", "tag", "cluster", "user")}
    sizes.update(play=vocab["n_play_buckets"], lag=vocab["n_lag_buckets"], label=vocab["n_label_ids"])
    lengths = torch.randint(0, history_len + 1, (batch,), generator=g)
    lengths[0] = 0
    if batch > 1:
        lengths[1] = history_len
    mask = torch.arange(history_len)[None, :] >= (history_len - lengths)[:, None]
    out = []
    for name in INPUTS:
        field = name.split("_", 1)[-1] if name[:2] in ("v_", "l_") else name
        if field == "mask":
            out.append(mask.clone())
            continue
        shape = (batch,) if name in CANDIDATE_FIELDS else (batch, history_len)
        x = torch.randint(1, sizes[field], shape, generator=g)
        if batch > 2:
            x[2] = 1  # out-of-vocabulary everywhere in row 2
        if name not in CANDIDATE_FIELDS:
            x = x * mask
        out.append(x)
    return tuple(out)


def _spec(vocab: dict[str, int], history_len: int, fmt: str, run: Path, ckpt: Path, variant: str) -> dict:
    from farmcli.data.encoding import LAG_THRESHOLDS, PLAY_THRESHOLDS

    def shape(name: str) -> list:
        return ["batch"] if name in CANDIDATE_FIELDS else ["batch", history_len]

    return {
        "format": FORMAT,
        "graph": fmt,
        "variant": variant,
        "run": str(run),
        "checkpoint": str(ckpt),
        "inputs": [{"name": n, "shape": shape(n), "dtype": "bool" if n.endswith("mask") else "int64"} for n in INPUTS],
        "call": "by name, as module(**inputs) (TorchScript) or session.run(None, inputs) (ONNX Runtime), or "
        "positionally in the order of inputs",
        "outputs": [
            {"name": "probabilities", "shape": ["batch", len(TASKS)], "dtype": "float32", "columns": list(TASKS)}
        ],
        "history_len": history_len,
        "padding": "left: the newest event last; padded positions hold 0 in every field and False in the mask",
        "vocabularies": {n: {"file": f"{n}.txt", "size": vocab[n]} for n in VOCABS},
        "ids": "vocabulary index = line number (0-based) + 2; 0 padding, 1 out-of-vocabulary",
        "play_bucket": {
            "thresholds_ms": [int(t) for t in PLAY_THRESHOLDS],
            "rule": "1 + number of thresholds <= play_ms (farmcli.data.encoding.play_bucket)",
        },
        "lag_bucket": {
            "thresholds_ms": [int(t) for t in LAG_THRESHOLDS],
            "rule": "1 + number of thresholds <= sample ts - event ts (farmcli.data.encoding.lag_bucket)",
        },
        "label_id": {
            "video_flags": list(VIDEO_FLAGS),
            "live_flags": list(LIVE_FLAGS),
            "rule": "1 + sum of 2**i over the flags i that are set (farmcli.data.encoding.label_id)",
        },
        "sizes": vocab,
    }


def export_run(target: str | Path, out: str | Path, fmt: str = "onnx", overwrite: bool = False) -> dict:
    """Write the inference graph to ``out`` with OUT.json and OUT.vocab/ beside it; returns the JSON spec."""
    from farmcli.config import resolve
    from farmcli.evaluation import load_module, locate, run_store

    if fmt not in FORMATS:
        raise UserError(f"--format '{fmt}': choose onnx or torchscript.")
    out = output_path(out, "--out", "farm.onnx") or Path()
    if out.is_dir() or not out.name:
        raise UserError(f"--out {out} is a directory; give the graph's file name, e.g. --out {out / 'farm.onnx'}.")
    spec_path, vocab_dir = out.with_suffix(out.suffix + ".json"), out.with_suffix(out.suffix + ".vocab")
    existing = [p for p in (out, spec_path, vocab_dir) if p.exists()]
    if existing:  # an earlier export is recognised by its JSON's format
        ours = functools.partial(_ours, spec_path, vocab_dir)
        why = f" (no {spec_path.name} of format {FORMAT})"
        check_replace(str(existing[0]), overwrite, ours, "an export", "an earlier export", "--out", why)
    if fmt == "onnx":
        _require_onnx()
    run, ckpt = locate(target)
    cfg = resolve([run / "config.yaml"])
    store = run_store(run, cfg)
    module = load_module(ckpt, store)  # vocabularies written below must be the ones the weights were trained on
    graph = InferenceGraph(module.farm).eval()
    vocab = dict(module.hparams["vocab"])
    inputs = example_inputs(vocab, store.history_len)
    check_space(out, graph)
    spec = _spec(vocab, store.history_len, fmt, run, ckpt, cfg.variant)
    # the three outputs are written to temporaries and put in place together at the end (the graph first, the JSON
    # that marks the export as farm's last): a failure or an interrupt before then changes nothing at --out
    with atomic_path(spec_path) as spec_tmp, atomic_dir(vocab_dir, overwrite=True, what="the export") as vocab_tmp:
        with atomic_path(out) as tmp:
            if fmt == "onnx":
                _to_onnx(graph, inputs, tmp)
            else:
                _to_torchscript(graph, inputs, tmp)
            (vocab_tmp / ".farm-export").write_text(FORMAT + "\n")
            for name in VOCABS:
                (vocab_tmp / f"{name}.txt").write_text("".join(f"{int(x)}\n" for x in np.asarray(store.vocab(name))))
            spec_tmp.write_text(json.dumps(spec, indent=2) + "\n")
    return spec


SPACE_FACTOR = 2
"""A saved graph takes about its parameters' bytes: twice that must be free before writing."""


def check_space(out: Path, graph: nn.Module) -> None:
    """Refuse an export that cannot fit on the disk of ``out``: a native writer meeting a full disk may abort."""
    need = SPACE_FACTOR * sum(p.numel() * p.element_size() for p in graph.parameters())
    parent = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if need > free:
        raise UserError(
            f"--out {out}: the export needs about {need / 1e6:,.1f} MB (twice the model's parameters), but the "
            f"disk holding {parent} has {free / 1e6:,.1f} MB free; nothing was written. Free space on that disk, "
            f"or give an --out on another disk."
        )


def _ours(spec_path: Path, vocab_dir: Path) -> bool:
    """An export farm wrote: its JSON of farm's format, its vocabulary folder marked."""
    try:
        ours = json.loads(spec_path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
    return ours and (not vocab_dir.exists() or (vocab_dir / ".farm-export").is_file())


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError(
            "ONNX export needs the onnx packages (onnx, onnxscript, onnxruntime): pip install 'farmcli[export]', "
            "or pip install -e '.[export]' in a checkout."
        ) from None


def _to_onnx(graph: nn.Module, inputs: tuple[Tensor, ...], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in INPUTS)
    with _quiet():
        program = torch.onnx.export(
            graph,
            inputs,
            dynamo=True,
            input_names=list(INPUTS),
            output_names=["probabilities"],
            dynamic_shapes=(shapes,),
            verbose=False,
        )
        assert program is not None  # dynamo=True always returns a program
        program.save(str(path))


def _to_torchscript(graph: nn.Module, inputs: tuple[Tensor, ...], path: Path) -> None:
    """Traced through ``NamedInputs``; written by Python, since torch's file writer aborts on a full disk."""
    _check_names()
    with _quiet(), torch.no_grad():
        # widths are constants; the batch stays dynamic
        traced = torch.jit.trace(NamedInputs(graph), inputs, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines and tracer warnings are noise here (the parity test is the check)."""
    if verbose():
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
