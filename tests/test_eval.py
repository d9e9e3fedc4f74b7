"""`farm eval` on a tiny 1-epoch run: the progress of each scoring pass, named; UAUC / GAUC cells from fewer than
MIN_USERS users marked, with n_users and n_skipped in the JSON and CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
from rich.console import Console
from typer.testing import CliRunner

from farmcli import render
from farmcli.cli import app
from farmcli.data.schema import TASKS
from farmcli.evaluation import FEW_USERS_MARK, MIN_USERS

runner = CliRunner()
FAST = ["--data", "tiny", "--config", str(Path(__file__).with_name("tiny-model.yaml"))]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("eval-runs")
    r = runner.invoke(
        app, ["train", *FAST, "--trainer.max_epochs", "1", "--fit.runs_dir", str(runs), "--fit.name", "r"]
    )
    assert r.exit_code == 0, r.output
    return runs / "r"


@pytest.fixture(scope="module")
def store(run):
    from farmcli.config import resolve
    from farmcli.evaluation import run_store

    return run_store(run, resolve([run / "config.yaml"]))


def _text(renderable, width: int = 300) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


# ------------------------------------------------------------------------------------------- progress


def test_eval_reports_progress_per_sample_under_the_pass_name(run, store):
    from farmcli.evaluation import evaluate_run

    calls: list[tuple[str, int, int | None]] = []
    evaluate_run(run, split="valid", progress=lambda what, done, total: calls.append((what, done, total)))
    n = store.n("valid")
    assert calls and {what for what, _, _ in calls} == {"scoring valid split"}
    assert all(total == n for _, _, total in calls)
    done = [d for _, d, _ in calls]
    assert done[0] == 0 and done[-1] == n and done == sorted(done)  # from 0 to every sample, never back


def test_eval_command_shows_the_bar_without_a_terminal(run):
    r = runner.invoke(app, ["eval", str(run), "--split", "valid"])
    assert r.exit_code == 0, r.output
    assert "scoring valid split" in r.output and "Traceback" not in r.output


def test_score_split_names_each_pass_on_the_trainer_bar(run, store):
    """The fit's Trainer scores valid and then test; with PassProgressBar each bar says which, not "Testing"."""
    from farmcli.config import resolve
    from farmcli.data.module import data_module
    from farmcli.evaluation import load_module
    from farmcli.logs import quiet_lightning
    from farmcli.scoring import PassProgressBar, score_split

    seen: list[str] = []

    class Spy(L.Callback):
        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0:
                seen.append(trainer.progress_bar_callback.test_description)

    quiet_lightning()
    cfg = resolve([run / "config.yaml"])
    module = load_module(run / "checkpoints" / "best.ckpt", store)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, callbacks=[PassProgressBar(), Spy()]
    )
    for split in ("valid", "test"):
        tables = score_split(trainer, module, data_module(cfg, store, test_split=split))
        assert tables["precision"] == "32-true" and tables["samples"] == store.n(split)
    assert seen == ["scoring valid split", "scoring test split"]


# ------------------------------------------------------------------------------------------- few users


def _cell(auc: float, n_users: int) -> dict:
    return {"auc": auc, "uauc": auc - 5, "gauc": auc - 3, "n_users": n_users, "n_skipped": 7, "n_samples": 400}


def _tables(n_users: int) -> dict:
    model = {g: {t: _cell(70.0, 500) for t in TASKS} for g in ("full", "low")}
    model["low"]["like"] = _cell(60.0, n_users)
    return {"model": model, "oracle": None}


def test_a_uauc_or_gauc_from_few_users_is_marked_and_explained():
    text = _text(render.eval_table(_tables(n_users=1), title="t"))
    low = next(line for line in text.splitlines() if line.strip().startswith("low")).split()
    like = 1 + 3 * TASKS.index("like")  # group, then AUC / UAUC / GAUC per task
    assert low[like : like + 3] == ["60.00", f"55.00{FEW_USERS_MARK}", f"57.00{FEW_USERS_MARK}"]  # AUC unmarked
    assert text.count(FEW_USERS_MARK) == 3  # the two cells and the footnote
    assert f"{FEW_USERS_MARK} from fewer than {MIN_USERS} users" in text


def test_cells_from_enough_users_are_not_marked():
    text = _text(render.eval_table(_tables(n_users=MIN_USERS), title="t"))
    assert FEW_USERS_MARK not in text


def test_narrow_tables_carry_the_mark_and_one_footnote():
    text = _text(render.eval_table(_tables(n_users=MIN_USERS - 1), title="t", width=100), width=100)
    assert f"55.00{FEW_USERS_MARK}" in text and f"57.00{FEW_USERS_MARK}" in text
    assert text.count(f"from fewer than {MIN_USERS} users") == 1


def test_undefined_cells_are_dashes_not_marks():
    tables = _tables(n_users=0)
    tables["model"]["low"]["like"].update(uauc=None, gauc=None)
    assert FEW_USERS_MARK not in _text(render.eval_table(tables, title="t"))


def test_eval_files_carry_n_users_and_n_skipped_per_group_and_task(run):
    r = runner.invoke(app, ["eval", str(run), "--groups", "low,mid,high"])
    assert r.exit_code == 0, r.output
    table = json.loads((run / "eval-test.json").read_text())
    assert table["min_users"] == MIN_USERS and table["precision"] == "32-true"
    with open(run / "eval-test.csv") as f:
        rows = {(r["source"], r["group"], r["task"]): r for r in csv.DictReader(f)}
    few = []
    for source in ("model", "oracle"):
        for group, per_task in table[source].items():
            for task, cell in per_task.items():
                for key in ("n_users", "n_skipped", "n_samples"):
                    assert isinstance(cell[key], int) and int(rows[source, group, task][key]) == cell[key]
                few += [(source, group, task)] if cell["n_users"] < MIN_USERS and cell["uauc"] is not None else []
    assert few  # tiny's small groups and rare tasks have such cells: the printed table marks them
    assert FEW_USERS_MARK in r.output and f"from fewer than {MIN_USERS} users" in r.output
