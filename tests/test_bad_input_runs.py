"""Bad input around run directories (issue 25): resume on other data or a broken checkpoint, monitor names,
outputs that are the user's, copied runs, runs trained on other data, killed runs, interrupts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import torch

from farmcli.cli import app
from tests.test_bad_input import Case, _snapshot, case, check_case, files, runner, tiny_dataset

CONFIG = str(Path(__file__).with_name("tiny-model.yaml"))


WHILE_TRAINING: list[dict] = []
"""run.json as the tiny run's training saw it at the end of its epoch."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One epoch on the tiny preset, monitoring val/loss (row 13: the best checkpoint is the lowest loss)."""
    from farmcli.model.module import FarmModule

    runs = tmp_path_factory.mktemp("bad-input-runs")
    real = FarmModule.on_train_epoch_end

    def look(self):
        WHILE_TRAINING.append(json.loads((runs / "r" / "run.json").read_text()))
        return real(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FarmModule, "on_train_epoch_end", look)
        r = runner.invoke(
            app,
            [
                "train",
                "--data",
                "tiny",
                "--config",
                CONFIG,
                "--trainer.max_epochs",
                "1",
                "--fit.monitor",
                "val/loss",
                "--fit.runs_dir",
                str(runs),
                "--fit.name",
                "r",
            ],
        )
    assert r.exit_code == 0, r.output
    return runs / "r"


# ------------------------------------------------------------------------------------------ setups


def run_at(name: str = "run", edit: Callable[[Path], None] | None = None):
    """A copy of the trained run at ./NAME, then ``edit(copy)``."""

    def make(cwd: Path, run: Path | None) -> None:
        assert run is not None
        shutil.copytree(run, cwd / name)
        if edit is not None:
            edit(cwd / name)

    make.needs_run = True  # type: ignore[attr-defined]
    return make


def both(*setups):
    def make(cwd: Path, run: Path | None) -> None:
        for s in setups:
            s(cwd, run)

    make.needs_run = any(getattr(s, "needs_run", False) for s in setups)  # type: ignore[attr-defined]
    return make


def shuffled_clicks(f: pl.DataFrame) -> pl.DataFrame:
    """Other data with the same ids (so the same vocabulary sizes): only the click labels move."""
    return f.with_columns(pl.col("click").shuffle(seed=7))


def truncate(name: str):
    def edit(run: Path) -> None:
        ckpt = run / "checkpoints" / name
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])

    return edit


def trained_elsewhere(data: str | None = None, history_len: int | None = None, strip_key: bool = False):
    """The run's config names other data than its checkpoint was trained on (what a broken resume left behind,
    or a checkpoint copied between runs); run.json names no store."""

    def edit(run: Path) -> None:
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text())
        if data is not None:
            cfg["data"]["source"] = str(run.parent / data)
        if history_len is not None:
            cfg["data"]["history_len"] = history_len
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        info = json.loads((run / "run.json").read_text())
        info.pop("store"), info.pop("store_key")
        (run / "run.json").write_text(json.dumps(info))
        if strip_key:  # a checkpoint of an older farm: only its vocabulary sizes can tell
            from farmcli.runs import CKPT_STORE_KEY

            for c in (run / "checkpoints").iterdir():
                contents = torch.load(c, map_location="cpu", weights_only=False)
                contents.pop(CKPT_STORE_KEY)
                torch.save(contents, c)

    return edit


def interrupted_before_first_checkpoint(cwd: Path, run: Path | None) -> None:
    """runs/x: what Ctrl-C during the first epoch leaves (config.yaml, run.json, logs; no checkpoint)."""
    import yaml

    assert run is not None
    x = cwd / "runs" / "x"
    (x / "logs").mkdir(parents=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["fit"].update(runs_dir="runs", name="x")
    (x / "config.yaml").write_text(yaml.safe_dump(cfg))
    (x / "run.json").write_text(json.dumps({"status": "interrupted", "variant": "farm"}))


interrupted_before_first_checkpoint.needs_run = True  # type: ignore[attr-defined]


def running_as(pid: int):
    def edit(run: Path) -> None:
        info = json.loads((run / "run.json").read_text())
        info.update(status="running", pid=pid, host=socket.gethostname())
        (run / "run.json").write_text(json.dumps(info))

    return edit


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


EARLIER_REPORT = files(
    **{
        "rep__report.json": json.dumps({"format": "farm-report/1", "run": "r", "files": {"md": "report.md"}}),
        "rep__report.md": "# Report: r\n",
    }
)

TRAIN = ("train", "--data", "tiny", "--config", "{config}", "--fit.runs_dir", "runs")
CASES = [
    # row 3: --resume on other data is refused before the run is touched (config.yaml is not rewritten)
    case(
        "train",
        "--resume",
        "run",
        "--data",
        "d",
        words=("--resume run", "other data (d,", "trained on (tiny)", "left as it was", "--fit.name NEW"),
        setup=both(run_at(), tiny_dataset(shuffled_clicks)),
    ),
    case(
        "train",
        "--resume",
        "run",
        "--data.history_len",
        "20",
        words=("tiny with data.history_len 20", "tiny with data.history_len 50"),
        setup=run_at(),
    ),
    case(
        "train",
        "--resume",
        "run",
        "--model.embed.author",
        "16",
        words=("model.embed.author 8 -> 16", "keeps its seed, model", "drop those settings", "left as it was"),
        setup=run_at(),
    ),
    # row 4: a monitor the model does not log, named before any data is built
    case(*TRAIN, "--fit.monitor", "val/bogus", words=("fit.monitor = 'val/bogus'", "val/auc_mean")),
    case(*TRAIN, "--fit.monitor", "val/auc_men", words="Did you mean 'val/auc_mean'"),
    case(*TRAIN, "--fit.monitor", "auc_mean", words="Did you mean 'val/auc_mean'"),
    case(*TRAIN, "--fit.monitor", "val/cl", "--model.align.name", "none", words=("val/cl", "align is none")),
    case("train", "--resume", "run", "--fit.monitor", "val/nope", words="fit.monitor = 'val/nope'", setup=run_at()),
    # row 7: a truncated last.ckpt, as eval says it
    case(
        "train",
        "--resume",
        "run",
        words=("last.ckpt", "not a readable checkpoint"),
        setup=run_at(edit=truncate("last.ckpt")),
    ),
    case("train", "--resume", "run", words="not a readable checkpoint", setup=run_at(edit=truncate("best.ckpt"))),
    # row 10: --save-predictions replaces only farm's predictions, and only with --overwrite (a name that is not
    # .parquet is refused first, as farm predict refuses it: issue 36 row 14)
    case(
        "eval",
        "{run}",
        "--save-predictions",
        "precious.parquet",
        words="--overwrite",
        setup=files(**{"precious.parquet": "x"}),
    ),
    case(
        "eval",
        "{run}",
        "--save-predictions",
        "precious.parquet",
        "--overwrite",
        words="not a predictions file written by farm",
        setup=files(**{"precious.parquet": "x"}),
    ),
    case(
        "eval",
        "{run}",
        "--save-predictions",
        "precious.txt",
        "--overwrite",
        words=("--save-predictions precious.txt", "give a .parquet file name"),
        setup=files(**{"precious.txt": "x"}),
    ),
    case("eval", "{run}", "--save-predictions", "p.parquet", words="--overwrite", setup=files(**{"p.parquet": "x"})),
    # row 11: farm report leaves the user's files in --out alone; an earlier report needs --overwrite
    case(
        "report",
        "{run}",
        "--out",
        "rep",
        words=("rep", "report.md", "leaves such files alone"),
        setup=files(**{"rep__report.md": ""}),
    ),
    case(
        "report", "{run}", "--out", "rep", "--overwrite", words="report.md", setup=files(**{"rep__report.md": "mine"})
    ),
    case(
        "report",
        "{run}",
        "--out",
        "rep",
        words="training-curves.png",
        setup=files(**{"rep__training-curves.png": "my plot"}),
    ),
    case("report", "{run}", "--out", "rep", words=("earlier report", "--overwrite"), setup=EARLIER_REPORT),
    case("report", "{run}", "--out", "afile", words="is a file", setup=files(afile="x")),
    # row 14: a checkpoint trained on other data than its run's is refused by eval, export, predict and report
    case(
        "eval",
        "run",
        words=("trained on other data", "AUC near 50"),
        setup=both(run_at(edit=trained_elsewhere("d")), tiny_dataset(shuffled_clicks)),
    ),
    case(
        "export",
        "run",
        "--out",
        "m.pt",
        "--format",
        "torchscript",
        words="trained on other data",
        setup=both(run_at(edit=trained_elsewhere("d")), tiny_dataset(shuffled_clicks)),
    ),
    case(
        "predict",
        "run",
        "--out",
        "p.parquet",
        words="trained on other data",
        setup=both(run_at(edit=trained_elsewhere("d")), tiny_dataset(shuffled_clicks)),
    ),
    case(
        "eval",
        "run",
        words=("trained on other data", "history_len 50 vs 20"),
        setup=run_at(edit=trained_elsewhere(history_len=20, strip_key=True)),
    ),
    # SIGINT before the first checkpoint: each message says what to do, neither sends you to the other
    case(
        "train",
        "--resume",
        "runs/x",
        words=("nothing to continue", "farm train --config runs/x/config.yaml --fit.name x-2"),
        setup=interrupted_before_first_checkpoint,
    ),
    case(
        "train",
        "--config",
        "runs/x/config.yaml",
        words=("holds no checkpoint", "nothing to resume", "another --fit.name"),
        setup=interrupted_before_first_checkpoint,
    ),
    # --out "" is an error naming the option (it used to mean ".")
    case("eval", "{run}", "--save-predictions", "", words="--save-predictions is empty"),
    case("predict", "{run}", "--out", "", words="--out is empty"),
    case("export", "{run}", "--out", "", words="--out is empty"),
    case("report", "{run}", "--out", "", words="--out is empty"),
    case("export", "{run}", "--out", ".", words="is a directory"),
    # checks before the evaluation: groups, the predictions path
    case(
        "eval",
        "{run}",
        "--save-predictions",
        "dir",
        words=("--save-predictions dir", "is a directory"),
        setup=files(dir="d/"),
    ),
    case("eval", "{run}", "--groups", "foo", "--save-predictions", "p.parquet", words="foo"),
    # a run that is still training is not resumed beside itself
    case("train", "--resume", "run", words="is still training", setup=run_at(edit=running_as(os.getppid()))),
    # `farm export --help` keeps the [export] extra
    case("export", "--help", code=0, words="farmcli[export]"),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_runs(c: Case, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    check_case(c, tmp_path, request.getfixturevalue("tiny_run") if c.needs_run else None)


# ------------------------------------------------------------------------------------------ row 13


def test_a_loss_monitor_keeps_the_lowest_loss(tiny_run):
    from farmcli.metric_names import monitor_mode

    assert [monitor_mode(m) for m in ("val/loss", "val/bce_click", "val/cl")] == ["min"] * 3
    assert [monitor_mode(m) for m in ("val/auc_mean", "val/uauc_click", "val/gauc_gift")] == ["max"] * 3
    states = torch.load(tiny_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    assert "ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'" in " ".join(states)
    assert "EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}" in states
    assert json.loads((tiny_run / "run.json").read_text())["monitor"] == "val/loss"


# ------------------------------------------------------------------------------------------ row 12


def test_resuming_a_copy_writes_only_inside_the_copy(tiny_run, tmp_path):
    original = _snapshot(tiny_run)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    r = runner.invoke(app, ["train", "--resume", str(copy), "--trainer.max_epochs", "2"])
    assert r.exit_code == 0, r.output
    assert _snapshot(tiny_run) == original  # the original run is untouched
    info = json.loads((copy / "run.json").read_text())
    assert info["best_checkpoint"] == "checkpoints/best.ckpt" and info["status"] == "finished"
    assert "pid" not in info and "host" not in info
    for split in ("valid", "test"):
        assert json.loads((copy / f"eval-{split}.json").read_text())["checkpoint"] in (
            "checkpoints/best.ckpt",
            "checkpoints/last.ckpt",
        )
    state = next(
        v
        for k, v in torch.load(copy / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"].items()
        if k.startswith("ModelCheckpoint")
    )
    assert Path(state["best_model_path"]).parent == (copy / "checkpoints").resolve()


def test_an_old_copied_run_with_absolute_paths_reads_its_own_checkpoint(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    info = json.loads((copy / "run.json").read_text())
    info["best_checkpoint"] = str(tiny_run.resolve() / "checkpoints" / "best.ckpt")  # as runs recorded it before
    (copy / "run.json").write_text(json.dumps(info))
    original = _snapshot(tiny_run)
    r = runner.invoke(app, ["eval", str(copy)])
    assert r.exit_code == 0, r.output
    assert _snapshot(tiny_run) == original
    assert json.loads((copy / "eval-test.json").read_text())["checkpoint"] == "checkpoints/best.ckpt"


def test_checkpoint_state_of_a_moved_run_is_read_as_this_runs():
    from farmcli.runs import relocated

    state = {
        "dirpath": "/old/run/checkpoints",
        "best_model_path": "/old/run/checkpoints/best.ckpt",
        "last_model_path": "/old/run/checkpoints/last.ckpt",
        "kth_best_model_path": "/old/run/checkpoints/best.ckpt",
        "best_k_models": {"/old/run/checkpoints/best.ckpt": 0.5},
        "best_model_score": 0.5,
    }
    moved = relocated(state, "/new/copy/checkpoints")
    assert moved["best_model_path"] == "/new/copy/checkpoints/best.ckpt"
    assert moved["last_model_path"] == "/new/copy/checkpoints/last.ckpt"
    assert moved["best_k_models"] == {"/new/copy/checkpoints/best.ckpt": 0.5}
    assert moved["best_model_score"] == 0.5 and state["dirpath"] == "/old/run/checkpoints"
    assert relocated(state, "/old/run/checkpoints") is state


# ------------------------------------------------------------------------------------------ killed runs


def test_a_killed_run_reads_as_killed_and_can_be_resumed(tiny_run, tmp_path):
    from farmcli.runs import check_resume, resume_config, status_note

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    running_as(dead_pid())(run)
    assert "was killed before it finished" in (status_note(run) or "")
    r = runner.invoke(app, ["eval", str(run)])
    assert r.exit_code == 0, r.output
    assert "was killed before it finished" in " ".join(r.output.split())
    check_resume(run, resume_config(run), data_key=False)  # no refusal: nothing runs it any more
    running_as(os.getpid())(run)
    assert "is still training" in (status_note(run) or "")


def test_report_says_a_run_was_killed(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    from farmcli.analysis.report.runs import load_run, run_lines

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    running_as(dead_pid())(run)
    lines = "\n".join(run_lines([load_run(run)]))
    assert "was killed before it finished" in lines


def test_run_json_names_the_training_process_while_it_runs(tiny_run):
    assert WHILE_TRAINING and WHILE_TRAINING[0]["status"] == "running"
    assert WHILE_TRAINING[0]["pid"] == os.getpid() and WHILE_TRAINING[0]["host"] == socket.gethostname()
    done = json.loads((tiny_run / "run.json").read_text())
    assert done["status"] == "finished" and "pid" not in done and "host" not in done


# ------------------------------------------------------------------------------------------ small things


def test_eval_checks_groups_and_predictions_path_before_scoring(tiny_run, tmp_path, monkeypatch):
    import farmcli.evaluation

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the inputs were checked")

    monkeypatch.setattr(farmcli.evaluation, "score", no_scoring)
    monkeypatch.setattr(farmcli.evaluation, "run_store", no_scoring)
    (tmp_path / "dir").mkdir()
    for args in (["--groups", "foo"], ["--save-predictions", str(tmp_path / "dir")]):
        r = runner.invoke(app, ["eval", str(tiny_run), *args])
        assert r.exit_code == 2, r.output


def test_no_test_rows_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_dataset()(tmp_path, None)
    valid_end = json.loads((tmp_path / "d" / "manifest.json").read_text())["valid_end"]
    live = tmp_path / "d" / "live.parquet"
    frame = pl.read_parquet(live)
    for f in live.iterdir():
        f.unlink()
    frame.filter(pl.col("ts") < valid_end).write_parquet(live / "part-00000.parquet")
    r = runner.invoke(
        app,
        ["train", "--data", "d", "--config", CONFIG, "--trainer.max_epochs", "1", "--fit.runs_dir", "runs"],
    )
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "no test samples" in out and "holds no live impressions" in out and "Traceback" not in out


def test_predict_on_sigterm_exits_130_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    from farmcli.scoring import ParquetPredictions

    real = ParquetPredictions.write_on_batch_end

    def killed_midway(self, trainer, module, prediction, indices, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 1:  # what the CLI's SIGTERM handler does (farmcli/cli/app.py)
            raise SystemExit(128 + signal.SIGTERM)
        real(self, trainer, module, prediction, indices, batch, batch_idx, dataloader_idx)

    monkeypatch.setattr(ParquetPredictions, "write_on_batch_end", killed_midway)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["predict", str(tiny_run), "--out", "p.parquet", "--batch-size", "64"])
    assert r.exit_code == 130, r.output
    assert "interrupted" in r.output
    assert list(tmp_path.iterdir()) == []


def test_report_compare_on_other_data_warns(caplog):
    from types import SimpleNamespace

    from farmcli.analysis.report import warn_other_data

    def loaded(name, key, source):
        return SimpleNamespace(
            run=Path(name),
            store=SimpleNamespace(manifest={"key": key}),
            cfg=SimpleNamespace(data=SimpleNamespace(source=source)),
        )

    with caplog.at_level("WARNING", logger="farmcli"):
        warn_other_data(loaded("a", "k1", "tiny"), loaded("b", "k1", "tiny"))
        assert not caplog.records
        warn_other_data(loaded("a", "k1", "tiny"), loaded("b", "k2", "small"))
    assert "trained on other data" in caplog.text and "not comparable" in caplog.text
