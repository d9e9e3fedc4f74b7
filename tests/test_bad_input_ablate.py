"""Bad input to `farm ablate` and `farm tune` (issue 25 rows 8, 17, 18): every check happens before any data is
built or any run trained, so each case leaves the working directory and FARM_HOME as they were. Variants given
as files train like built-in ones, under --out, and have their rows in the tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from farmcli.cli import app
from farmcli.variants import VARIANTS_DIR
from tests.test_bad_input import Case, case, check_case, files, runner

TINY = str(Path(__file__).with_name("tiny-model.yaml"))
ABLATE = ("ablate", "--data", "tiny", "--seeds", "1", "--out", "abl")
TUNE = ("tune", "--data", "tiny", "--out", "t")
MY = "model: {align: none}\n"
FARM_ABLATION = json.dumps({"format": "farm-ablation/1", "variants": ["farm"], "seeds": [0]})

CASES = [
    # row 18: the variant list is checked whole before anything is built or trained
    case(*ABLATE, "--variants", "farm,farm", words=("'farm' twice", "Nothing was trained", "give it once")),
    case(*ABLATE, "--variants", "farm,base,farm", words="'farm' twice"),
    case(
        *ABLATE,
        "--variants",
        "farm,vars/farm.yaml",
        words=("'farm' twice", "farm and vars/farm.yaml", "rename one of the files"),
        setup=files(**{"vars__farm.yaml": MY}),
    ),
    case(
        *ABLATE,
        "--variants",
        "a/my.yaml,b/my.yaml",
        words=("'my' twice", "a/my.yaml and b/my.yaml", "rename"),
        setup=files(**{"a__my.yaml": MY, "b__my.yaml": MY}),
    ),
    case(
        *ABLATE,
        "--variants",
        "vars/my.yaml,./vars/my.yaml",
        words=("'my' twice", "give it once"),
        setup=files(**{"vars__my.yaml": MY}),
    ),
    case(*ABLATE, "--variants", f"farm,{VARIANTS_DIR / 'farm.yaml'}", words=("'farm' twice", "give it once")),
    case(*ABLATE, "--variants", "farm,nope", words=("Unknown variant 'nope'", "Built-in variants")),
    case(*ABLATE, "--variants", "farm,missing.yaml", words=("missing.yaml", "no such variant file")),
    case(
        *ABLATE,
        "--variants",
        "farm,adir.yaml",
        words=("adir.yaml", "cannot read this variant file", "Is a directory"),
        setup=files(**{"adir.yaml": "d/"}),
    ),
    case(*ABLATE, "--variants", "farm,bad.yaml", words="not valid YAML", setup=files(**{"bad.yaml": "model: [\n"})),
    case(
        *ABLATE,
        "--variants",
        "farm,empty.yaml",
        words=("empty.yaml", "sets nothing"),
        setup=files(**{"empty.yaml": "description: x\n"}),
    ),
    case(
        *ABLATE,
        "--variants",
        "farm,typo.yaml",
        words="model.video_frequency.gate_dim",
        setup=files(**{"typo.yaml": "model: {video_frequency: {name: dft, params: {gate_dim: [8]}}}\n"}),
    ),
    # row 17: --out is new, empty, or an ablation farm wrote; a user's directory is left alone
    case(*ABLATE, "--out", "mine", words=("--out mine", "did not write", "left alone"), setup=files(mine__notes="x")),
    case(*ABLATE, "--out", "mine", "--tables-only", words="did not write", setup=files(mine__notes="x")),
    case(
        *ABLATE,
        "--out",
        "mine",
        words="did not write",
        setup=files(mine__runs__notes="x", **{"mine__ablation.json": '{"mine": 1}'}),
    ),
    case(
        *ABLATE,
        "--variants",
        "farm,farm",
        "--out",
        "abl",
        words="twice",
        setup=files(**{"abl__ablation.json": FARM_ABLATION}),
    ),
    # row 18, farm tune: --space, --variant, --set and --out are checked before any data is built
    case(*TUNE, "--space", "model.cl_weight=abc,0.5", words=("--space model.cl_weight=abc", "model.cl_weight")),
    case(*TUNE, "--space", "model.bogus=1,2", words=("--space model.bogus=1", "bogus")),
    case(*TUNE, "--space", "data.batch_size=512,0", words=("--space data.batch_size=0", "must be > 0")),
    case(*TUNE, "--space", "optim.lr=0.1,-1", words=("--space optim.lr=-1", "optim.lr = -1")),
    case(*TUNE, "--space", "model.head.dropout=0.1,1.5", words=("--space model.head.dropout=1.5", "dropout")),
    case(*TUNE, "--space", "optim.lr=0.1,0.2", "--variant", "nope", words="Unknown variant 'nope'"),
    case(*TUNE, "--space", "optim.lr=0.1,0.2", "--set", "model.nope=1", words="nope"),
    case(
        *TUNE[:-1],
        "mine",
        "--space",
        "optim.lr=0.1,0.2",
        words=("--out mine", "did not write", "left alone"),
        setup=files(mine__notes="x"),
    ),
    case(
        *TUNE,
        "--space",
        "optim.lr=0.1,0.2",
        words="other settings",
        setup=files(**{"t__tune.json": json.dumps({"format": "farm-tune/1", "settings": {"variant": "base"}})}),
    ),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_ablate(c: Case, tmp_path, monkeypatch):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FARM_HOME", str(home))  # a fresh one: any data built would show here
    check_case(c, cwd, extra=("--config", TINY, "--trainer.max_epochs", "1"))
    assert not home.exists() or not any(home.iterdir()), sorted(home.rglob("*"))  # no data built


def test_an_ablation_directory_is_known_by_its_marker(tmp_path):
    from farmcli.analysis.ablate import check_out, is_ablation_dir

    (tmp_path / "old").mkdir()  # an ablation.json from before the format field
    (tmp_path / "old" / "ablation.json").write_text(json.dumps({"variants": ["farm"], "seeds": [0], "data": "x"}))
    assert is_ablation_dir(tmp_path / "old")
    check_out(tmp_path / "old")
    check_out(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "ablation.json").write_text("[1, 2]")
    assert not is_ablation_dir(tmp_path / "mine")


@pytest.mark.slow
def test_variants_given_as_files_train_under_out_and_have_their_rows(tmp_path, monkeypatch):
    """Rows 8 and 17: a variant file, relative or absolute, trains into OUT/runs/STEM-sSEED (nothing beside the
    file), has its Table 1 row, and one named farm.yaml takes FARM's place in the Improve row and Table 4."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vars").mkdir()
    (tmp_path / "vars" / "my.yaml").write_text("label: Mine\n" + MY)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "farm.yaml").write_text("label: My FARM\nmodel: {cl_weight: 0.2}\n")
    args = [
        "ablate",
        "--data",
        "tiny",
        "--seeds",
        "1",
        "--variants",
        f"base,vars/my.yaml,{elsewhere / 'farm.yaml'}",
        "--out",
        "abl",
        "--config",
        TINY,
        "--trainer.max_epochs",
        "1",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "vars")) == ["my.yaml"] and os.listdir(elsewhere) == ["farm.yaml"]
    assert sorted(os.listdir(tmp_path / "abl" / "runs")) == ["base-s0", "farm-s0", "my-s0"]
    t1 = json.loads((tmp_path / "abl" / "table1.json").read_text())
    assert [row["row"] for row in t1["rows"]] == ["PLE (Base)", "My FARM", "Improve", "Mine", "Oracle (true p)"]
    assert all(row["cells"]["click/auc"]["n"] == 1 for row in t1["rows"][:4] if row["variant"])
    assert (tmp_path / "abl" / "table4.json").is_file()
    assert "| Mine |" in (tmp_path / "abl" / "table1.md").read_text()

    # the same command again (another cwd, the variant by its absolute path too) continues the same runs
    monkeypatch.chdir(elsewhere)
    args[args.index("--variants") + 1] = f"base,{tmp_path / 'vars' / 'my.yaml'},farm.yaml"
    args[args.index("--out") + 1] = str(tmp_path / "abl")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("finished earlier, skipped") == 3
