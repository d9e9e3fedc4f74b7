"""farm predict and farm export: scores equal farm eval's, graphs equal PyTorch's, outputs never clobber."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.schema import TASKS
from farmcli.exporter import INPUTS, InferenceGraph, _to_onnx, _to_torchscript, example_inputs
from farmcli.model.farm import FARM
from farmcli.variants import ablation_variants
from tests.model.helpers import VOCAB, tiny_config

runner = CliRunner()
FAST = ["--data", "tiny", "--config", str(Path(__file__).with_name("tiny-model.yaml"))]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("serve-runs")
    r = runner.invoke(
        app, ["train", *FAST, "--fit.runs_dir", str(runs), "--fit.name", "r", "--trainer.max_epochs", "1"]
    )
    assert r.exit_code == 0, r.output
    return runs / "r"


def test_predict_equals_eval_save_predictions(run, tmp_path):
    ev, pr = tmp_path / "eval.parquet", tmp_path / "predict.parquet"
    assert runner.invoke(app, ["eval", str(run), "--save-predictions", str(ev)]).exit_code == 0
    r = runner.invoke(app, ["predict", str(run), "--out", str(pr), "--batch-size", "333"])
    assert r.exit_code == 0, r.output
    a, b = pl.read_parquet(pr), pl.read_parquet(ev)
    assert a.columns == ["user_id", "author_id", "ts", "split", *(f"p_{t}" for t in TASKS)]
    assert a.height == b.height > 0 and (a["split"] == "test").all()
    assert (a["user_id"] == b["user_id"]).all() and (a["ts"] == b["ts"]).all()
    for t in TASKS:
        np.testing.assert_allclose(a[f"p_{t}"].to_numpy(), b[f"p_{t}"].to_numpy(), rtol=0, atol=1e-6)


def test_predict_scores_other_data_with_the_runs_vocabularies(run, tmp_path):
    other = tmp_path / "other"
    assert runner.invoke(app, ["data", "synth", "--preset", "tiny", "--seed", "7", "--out", str(other)]).exit_code == 0
    out = tmp_path / "all.parquet"
    r = runner.invoke(app, ["predict", str(run), "--data", str(other), "--split", "all", "--out", str(out)])
    assert r.exit_code == 0, r.output
    scores = pl.read_parquet(out)
    assert set(scores["split"].unique()) == {"train", "valid", "test"}
    probs = scores.select(f"p_{t}" for t in TASKS).to_numpy()
    assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()

    from farmcli.config import resolve
    from farmcli.evaluation import run_store
    from farmcli.prediction import scoring_store

    cfg = resolve([run / "config.yaml"])
    store, trained = scoring_store(run, cfg, str(other)), run_store(run, cfg)
    assert store.path != trained.path and store.vocab_sizes == trained.vocab_sizes
    for name in ("author", "user"):
        np.testing.assert_array_equal(np.asarray(store.vocab(name)), np.asarray(trained.vocab(name)))
    assert store.n("test") == scores.filter(pl.col("split") == "test").height


def test_predict_refuses_to_replace_a_file_it_did_not_write(run, tmp_path):
    mine = tmp_path / "p.parquet"
    assert runner.invoke(app, ["predict", str(run), "--out", str(mine)]).exit_code == 0
    again = runner.invoke(app, ["predict", str(run), "--out", str(mine)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, ["predict", str(run), "--out", str(mine), "--overwrite"]).exit_code == 0
    foreign = tmp_path / "foreign.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(foreign)
    r = runner.invoke(app, ["predict", str(run), "--out", str(foreign), "--overwrite"])
    assert r.exit_code == 2 and "not a predictions file" in r.output
    assert pl.read_parquet(foreign).columns == ["a"]


@pytest.mark.parametrize(
    "args,words",
    [
        (["--split", "later"], "choose one of"),
        (["--out", "scores.csv"], ".parquet"),
        (["--batch-size", "0"], "--batch-size"),
        (["--data", "no/such/dir"], "neither a dataset directory nor"),
    ],
)
def test_predict_bad_input_exits_2(run, tmp_path, args, words):
    base = ["predict", str(run), "--out", str(tmp_path / "x.parquet")]
    r = runner.invoke(app, [*base, *args])
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ablation_variants())
def test_onnx_and_torchscript_match_pytorch(variant, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    graph = InferenceGraph(FARM(tiny_config(variant), VOCAB)).eval()
    x = example_inputs(VOCAB, 12, batch=5)  # rows: no history, full histories, out-of-vocabulary, random
    with torch.no_grad():
        expected = graph(*x).numpy()
        other_batch = example_inputs(VOCAB, 12, batch=9, seed=1)
        expected_other = graph(*other_batch).numpy()
    _to_onnx(graph, x, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    for inputs, want in ((x, expected), (other_batch, expected_other)):  # the batch size is dynamic
        got = session.run(None, {n: t.numpy() for n, t in zip(INPUTS, inputs)})[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    onnx_other = session.run(None, {n: t.numpy() for n, t in zip(INPUTS, other_batch)})[0]
    _to_torchscript(graph, x, tmp_path / "m.pt")
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(*other_batch).numpy(), expected_other, rtol=0, atol=1e-5)
        by_name = scripted(**dict(zip(INPUTS, other_batch))).numpy()  # FILE.json's names, as serving code calls it
    np.testing.assert_allclose(by_name, expected_other, rtol=0, atol=1e-5)
    np.testing.assert_allclose(by_name, onnx_other, rtol=0, atol=1e-5)


def test_torchscript_takes_the_documented_input_names_as_keywords(tmp_path):
    """The saved module's parameters are FILE.json's input names (not input, input0, ...), in graph order; a
    keyword call in any order equals the positional call and PyTorch, and a missing input is named."""
    torch.manual_seed(0)
    graph = InferenceGraph(FARM(tiny_config("farm"), VOCAB)).eval()
    _to_torchscript(graph, example_inputs(VOCAB, 12, batch=4), tmp_path / "m.pt")
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    assert [a.name for a in scripted.forward.schema.arguments][1:] == list(INPUTS)
    x = example_inputs(VOCAB, 12, batch=6, seed=3)
    named = dict(reversed(list(zip(INPUTS, x))))  # keywords in another order than the graph's
    with torch.no_grad():
        want = graph(*x).numpy()
        np.testing.assert_allclose(scripted(**named).numpy(), want, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(scripted(**named).numpy(), scripted(*x).numpy())
        del named["l_cluster"]
        with pytest.raises(RuntimeError, match="l_cluster"):
            scripted(**named)


def test_export_cli_writes_graph_spec_and_vocabularies(run, tmp_path):
    out = tmp_path / "farm.pt"
    r = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.output
    spec = json.loads(Path(f"{out}.json").read_text())
    assert [i["name"] for i in spec["inputs"]] == list(INPUTS)
    scripted = torch.jit.load(str(out))  # the written module takes the spec's names as keywords
    assert [a.name for a in scripted.forward.schema.arguments][1:] == [i["name"] for i in spec["inputs"]]
    assert spec["outputs"][0]["columns"] == list(TASKS)
    authors = Path(f"{out}.vocab/author.txt").read_text().split()
    assert len(authors) + 2 == spec["sizes"]["author"]
    again = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (
        runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(out), "--overwrite"]).exit_code
        == 0
    )
    foreign = tmp_path / "model.pt"
    foreign.write_text("mine")
    r = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(foreign), "--overwrite"])
    assert r.exit_code == 2 and foreign.read_text() == "mine"


def test_export_onnx_without_the_extra_says_how_to_install(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    r = runner.invoke(app, ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "farmcli[export]" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_export_bad_format_exits_2(run, tmp_path):
    r = runner.invoke(app, ["export", str(run), "--format", "tflite", "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "onnx or torchscript" in r.output
