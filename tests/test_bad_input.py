"""Bad input, table-driven: every case exits with the expected code, names the problem, prints no traceback
and leaves nothing behind. One row per kind of mistake a user makes (issue 12's list and more)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.schema import TASKS

runner = CliRunner()
CONFIG = str(Path(__file__).with_name("tiny-model.yaml"))
"""The tiny model's config, ``{config}`` in a case's arguments."""


Setup = Callable[[Path, "Path | None"], None]
"""Prepares the working directory before the command: (cwd, trained tiny run or None)."""


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    words: tuple[str, ...]
    code: int = 2
    setup: Setup | None = None

    @property
    def id(self) -> str:
        return " ".join(self.args)[:80]

    @property
    def needs_run(self) -> bool:
        return any("{run}" in a for a in self.args) or getattr(self.setup, "needs_run", False)


def case(*args: str, words: str | tuple[str, ...], code: int = 2, setup: Setup | None = None) -> Case:
    return Case(tuple(args), (words,) if isinstance(words, str) else tuple(words), code, setup)


def files(**content: str) -> Setup:
    """Files to create (``a__b`` is a/b); a value ending in '/' makes a directory."""

    def make(cwd: Path, run: Path | None) -> None:
        for name, text in content.items():
            path = cwd / name.replace("__", "/")
            if text.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)

    return make


def tiny_dataset(edit_live: Callable | None = None) -> Setup:
    """The tiny preset at ./d, its live table passed through ``edit_live(polars frame)``."""

    def make(cwd: Path, run: Path | None) -> None:
        import polars as pl

        from farmcli.data.simulator import sim_config, synthesize

        synthesize(sim_config("tiny"), cwd / "d")
        if edit_live is not None:
            live_dir = cwd / "d" / "live.parquet"
            frame = pl.read_parquet(live_dir)
            for f in live_dir.iterdir():
                f.unlink()
            edit_live(frame).write_parquet(live_dir / "part-00000.parquet")

    return make


def run_copy(checkpoint: Callable[[bytes], bytes]) -> Setup:
    """A copy of the trained run at ./run whose best checkpoint is ``checkpoint(original bytes)``."""

    def make(cwd: Path, run: Path | None) -> None:
        assert run is not None
        shutil.copytree(run, cwd / "run")
        ckpt = cwd / "run" / "checkpoints" / "best.ckpt"
        ckpt.write_bytes(checkpoint(ckpt.read_bytes()))

    make.needs_run = True  # type: ignore[attr-defined]
    return make


PRINT = ("train", "--data", "tiny", "--print-config")
CASES = [
    # settings: ranges live with the config types (issue 12 rows 14-20), names the key and the rule
    case(*PRINT, "--model.cl_weight", "-1", words=("model.cl_weight = -1", "must be >= 0")),
    case(*PRINT, "--model.cl_weight=-1", words="model.cl_weight"),
    case(*PRINT, "--set", "model.cl_weight=-1", words="model.cl_weight"),
    case(*PRINT, "--data.batch_size", "0", words=("data.batch_size = 0", "must be > 0")),
    case(*PRINT, "--data.eval_batch_size", "-5", words="data.eval_batch_size"),
    case(*PRINT, "--data.history_len", "0", words="data.history_len"),
    case(*PRINT, "--data.min_count", "0", words="data.min_count"),
    case(*PRINT, "--data.num_workers", "-1", words="data.num_workers"),
    case(*PRINT, "--trainer.max_epochs", "0", words=("trainer.max_epochs", ">= 1")),
    case(*PRINT, "--trainer.max_epochs", "-3", words="trainer.max_epochs"),
    case(*PRINT, "--set", "optim.lr=-1", words=("optim.lr = -1", "must be > 0")),
    case(*PRINT, "--optim.lr", "0", words="optim.lr"),
    case(*PRINT, "--optim.weight_decay", "-0.1", words="optim.weight_decay"),
    case(*PRINT, "--seed", "-1", words=("seed", "4294967295")),
    case(*PRINT, "--seed", "4294967296", words="seed"),
    case(*PRINT, "--model.align.params.tau", "0", words=("tau", "> 0")),
    case(*PRINT, "--model.align.tau", "-0.5", words="tau"),
    case(*PRINT, "--model.embed.init_std", "0", words="model.embed.init_std"),
    case(*PRINT, "--model.embed.author", "0", words="model.embed.author"),
    case(*PRINT, "--model.target_heads", "0", words="model.target_heads"),
    case(*PRINT, "--model.preference_heads", "-2", words="model.preference_heads"),
    case(*PRINT, "--model.preference_grad", "-1", words="model.preference_grad"),
    case(*PRINT, "--fit.patience", "-1", words="fit.patience"),
    case(*PRINT, "--fit.min_delta", "-0.5", words="fit.min_delta"),
    case(*PRINT, "--data.seed", "-4", words="data.seed"),
    case(*PRINT, "--model.output_bias", "mean", words="model.output_bias"),
    case(*PRINT, "--trainer.max_epochs", "many", words=("trainer.max_epochs = 'many'", "an integer or null")),
    case(*PRINT, "--trainer.precision", "7", words=("trainer.precision = 7", "bf16-mixed")),
    # on the command line a string setting takes the text as given (a folder named 5), as in LightningCLI; in YAML 5 is a number
    case(
        *PRINT,
        "--config",
        "c.yaml",
        words=("data.cache_dir = 5", "a string"),
        setup=files(**{"c.yaml": "data: {cache_dir: 5}\n"}),
    ),
    case(*PRINT, "--model.output_bias", "mean", words=("'zero', 'prior'",)),
    case(*PRINT, "--variant", "empty.yaml", words="sets nothing", setup=files(**{"empty.yaml": "description: x\n"})),
    case(*PRINT, "--variant", "bad.yaml", words="not valid YAML", setup=files(**{"bad.yaml": "model: [\n"})),
    case(*PRINT, "--variant", "list.yaml", words="mapping", setup=files(**{"list.yaml": "- a\n"})),
    case(
        *PRINT,
        "--config",
        "c.yaml",
        words="model.align.tau = 'abc'",
        setup=files(**{"c.yaml": "model: {align: {name: infonce, params: {tau: abc}}}\n"}),
    ),
    case("train", "--data", "tiny", "--config", "gpu", words="--config cpu"),
    case("train", "--data", "tiny", words="takes precedence over the simulator preset", setup=files(tiny="d/")),
    case(*PRINT, "--model.embd.author", "3", words="embd.author"),
    case(*PRINT, "--model.fuse.name", "transformer", words=("fuse", "transformer")),
    case(*PRINT, "--model.video_frequency.cutoff", "0", words="cut-off"),
    case(*PRINT, "--model.video_frequency.cutoff", "2.5", words=("model.video_frequency.cutoff = 2.5", "an integer")),
    case(*PRINT, "--model.fuse.heads", "three", words=("model.fuse.heads = 'three'", "an integer")),
    case(*PRINT, "--model.align.tau", "abc", words=("model.align.tau = 'abc'", "a number")),
    case(*PRINT, "--model.align.dims", "[a, 8]", words="model.align.dims"),
    case(*PRINT, "--model.head.levels", "2.5", words="model.head.levels"),
    case(*PRINT, "--model.align.temperature", "0.1", words=("temperature", "tau")),
    case(
        *PRINT,
        "--variant",
        "typo.yaml",
        words=("model.video_frequency.gate_dim", "Did you mean 'gate_dims'"),
        setup=files(**{"typo.yaml": "model: {video_frequency: {name: dft, params: {gate_dim: [8]}}}\n"}),
    ),
    case(*PRINT, "--model.fuse.heads", "5", words="heads"),
    case(*PRINT, "--model.fuse.cand_dim", "8", words=("model.fuse.cand_dim", "sets this width itself")),
    case(*PRINT, "-x", words="No such option"),
    case(*PRINT, "--set", "novalue", words="KEY=VALUE"),
    case(*PRINT, "--variant", "no-such-variant", words="no-such-variant"),
    case(*PRINT, "--config", "no-such-config", words="no-such-config"),
    # eval / predict / export on paths that are not runs
    case("eval", "no/such/run", words="no such run directory"),
    case("eval", ".", words="checkpoints/best.ckpt"),
    case("predict", "no/such/run", "--out", "x.parquet", words="no such run directory"),
    case("export", "no/such/run", "--out", "m.onnx", words="no such run directory"),
    # data commands
    case("data", "validate", "no/such/dir", words="no/such/dir"),
    case("data", "synth", "--preset", "huge", "--out", "d", words="huge"),
    # more commands, more mistakes
    case("tune", "--data", "tiny", "--space", "model.cl_weight", "--out", "t", words="KEY=V1,V2"),
    case("tune", "--data", "tiny", "--space", "model.cl_weight=-1,0.5", "--out", "t", words="model.cl_weight = -1"),
    case("tune", "--data", "tiny", "--space", "model.nope=1,2", "--out", "t", words="nope"),
    case(
        "tune", "--data", "tiny", "--sampler", "random", "--space", "model.cl_weight=0.1", "--out", "t", words="random"
    ),
    case("tune", "--data", "tiny", "--seeds", "0", "--space", "model.cl_weight=0.1", "--out", "t", words="--seeds"),
    case("report", "no/such/run", words="no such run directory"),
    case("report", "{run}", "--accelerator", "tpu", "--out", "rep", words="tpu"),
    case("report", "{run}", "--batch-size", "0", "--out", "rep", words="--batch-size"),
    case("report", "{run}", "--max-users", "0", "--out", "rep", words="--max-users"),
    case("report", "{run}", "--user", "-7", "--out", "rep", words="-7"),
    case("data", "import", "kuailive-m3", "no/such/raw", "--out", "k", words="no/such/raw"),
    case("data", "import", "kuailive-m3", "raw", "--out", "k", words="raw", setup=files(raw="d/")),
    case(
        "data",
        "import",
        "kuailive-m3",
        "raw",
        "--out",
        "k",
        "--live-page",
        "maybe",
        words="maybe",
        setup=files(raw="d/"),
    ),
    case("data", "inspect", "no/such/dir", words="no/such/dir"),
    case("data", "build", "no/such/dir", words="no/such/dir"),
    case(
        "data",
        "build",
        "d",
        "--cache-dir",
        "afile",
        words="a file is in the way",
        setup=lambda cwd, run: (files(afile="x")(cwd, run), tiny_dataset()(cwd, run)),
    ),
    case(
        "eval", "{run}", "--save-predictions", "afile/p.parquet", words="a file is in the way", setup=files(afile="x")
    ),
    case("predict", "{run}", "--out", "afile/p.parquet", words="a file is in the way", setup=files(afile="x")),
    case("train", "--data", "tiny", "--print-config", "--config", "missing.yaml", words="missing.yaml"),
    case("train", "--data", "tiny", "--resume", "no/such/run", words="no/such/run"),
    case("train", "--data", "tiny", "--resume", "run", "--variant", "base", words="--resume", setup=files(run="d/")),
    case("variants", "--bogus", words="No such option"),
    case("frobnicate", words="No such command"),
    # farm ablate checks its inputs before it writes anything (rows 26, 27)
    case("ablate", "--data", "no/such/dir", "--out", "abl", words="no/such/dir"),
    case("ablate", "--data", "tiny", "--out", "afile", words="is a file", setup=files(afile="x")),
    case("ablate", "--data", "tiny", "--seeds", "0", "--out", "abl", words="--seeds"),
    case("ablate", "--data", "tiny", "--groups", "vip", "--out", "abl", words="vip"),
    case("ablate", "--data", "tiny", "--variants", "nope", "--out", "abl", words="nope"),
    # outputs: --overwrite replaces only what farm wrote (rows 1, 2, 12)
    case(
        "data",
        "synth",
        "--preset",
        "tiny",
        "--out",
        "mine",
        "--overwrite",
        words="leaves them alone",
        setup=files(mine__notes="precious"),
    ),
    case("data", "synth", "--preset", "tiny", "--out", "mine", words="--overwrite", setup=files(mine__notes="x")),
    case("data", "synth", "--preset", "tiny", "--out", ".", "--overwrite", words="directory you are in"),
    case("data", "synth", "--preset", "tiny", "--out", "afile/d", words="a file is in the way", setup=files(afile="x")),
    case(
        "data", "synth", "--preset", "tiny", "--out", "afile", "--overwrite", words="is a file", setup=files(afile="x")
    ),
    case("data", "synth", "--preset", "tiny", "--users", "0", "--out", "d", words="--users"),
    case("data", "synth", "--preset", "tiny", "--users", "10000000000", "--out", "d", words=("GB", "fewer users")),
    case("data", "synth", "--preset", "tiny", "--seed", "-1", "--out", "d", words="--seed"),
    case("data", "inspect", "tiny", "--history-len=-5", words="--history-len"),
    case("data", "build", "tiny", "--history-len", "0", words="--history-len"),
    case("data", "build", "tiny", "--min-count", "0", words="--min-count"),
    case("data", "validate", "weird/[/]", words="weird/[/]"),
    # data that is valid but odd: a warning, exit 0 (rows 6-8)
    case(
        "data",
        "validate",
        "d",
        code=0,
        words="repeat the (user_id, author_id, ts)",
        setup=tiny_dataset(lambda f: __import__("polars").concat([f, f])),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("every live row", "at or after test_end"),
        setup=tiny_dataset(lambda f: f.with_columns(f["ts"] + 10**12)),
    ),
    case(
        "data",
        "validate",
        "d",
        words="dt.epoch('ms')",
        setup=tiny_dataset(lambda f: f.with_columns(f["ts"].cast(__import__("polars").Datetime("ms")))),
    ),
    case(
        "data",
        "validate",
        "d",
        "--json",
        code=0,
        words='"warnings"',
        setup=tiny_dataset(lambda f: __import__("polars").concat([f, f])),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("live.parquet/part-00000.parquet:gift", "Int8"),
        setup=tiny_dataset(lambda f: f.with_columns(f["gift"].cast(__import__("polars").String))),
    ),
    # data that cannot train (row 9)
    case(
        "train",
        "--data",
        "d",
        "--config",
        "{config}",
        "--fit.runs_dir",
        "runs",
        words="every label",
        setup=tiny_dataset(
            lambda f: f.with_columns([__import__("polars").lit(0).cast(f.schema[t]).alias(t) for t in TASKS])
        ),
    ),
    # eval / predict / export with a run (rows 23-25)
    case("eval", "{run}", "--accelerator", "tpu", words=("tpu", "auto, cpu or gpu")),
    case("eval", "{run}", "--split", "train", words="test or valid"),
    case("eval", "{run}", "--groups", "vip", words="vip"),
    case("eval", "run", words="not a readable checkpoint", setup=run_copy(lambda b: b[: len(b) // 2])),
    case("eval", "run", words="not a readable checkpoint", setup=run_copy(lambda b: b"just text\n")),
    case("predict", "run", "--out", "p.parquet", words="not a readable checkpoint", setup=run_copy(lambda b: b[:100])),
    case("predict", "{run}", "--out", "p.parquet", "--accelerator", "tpu", words="auto, cpu or gpu"),
    case("predict", "{run}", "--out", "dir.parquet", words="is a directory", setup=files(**{"dir.parquet": "d/"})),
    case("export", "{run}", "--out", "m.onnx", "--format", "tflite", words="onnx or torchscript"),
    case(
        "export",
        "{run}",
        "--out",
        "m.pt",
        "--format",
        "torchscript",
        "--overwrite",
        words="not an export written by farm",
        setup=files(**{"m.pt": "mine"}),
    ),
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("bad-input-runs")
    config = str(Path(__file__).with_name("tiny-model.yaml"))
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            "tiny",
            "--config",
            config,
            "--trainer.max_epochs",
            "1",
            "--fit.runs_dir",
            str(runs),
            "--fit.name",
            "r",
        ],
    )
    assert r.exit_code == 0, r.output
    return runs / "r"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    check_case(c, tmp_path, request.getfixturevalue("tiny_run") if c.needs_run else None)


def check_case(c: Case, cwd: Path, run: Path | None = None, extra: tuple[str, ...] = (), **fill: Path) -> None:
    """Run ``c`` (set up in ``cwd``, the working directory) with ``extra`` arguments after its own: its exit code,
    no traceback, each of its words in the output (read as one line, whatever the terminal width), and nothing in
    ``cwd`` or ``run`` written or changed. ``{run}``, ``{config}`` and ``{KEY}`` of ``fill`` are filled in."""
    if c.setup:
        c.setup(cwd, run)
    before, mine = _snapshot(cwd), (_snapshot(run) if run is not None else None)
    values = {"{run}": str(run), "{config}": CONFIG, **{f"{{{k}}}": str(v) for k, v in fill.items()}}
    args = list(c.args)
    for key, value in values.items():
        args = [a.replace(key, value) for a in args]
    r = runner.invoke(app, [*args, *extra])
    assert r.exit_code == c.code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    text = " ".join(r.output.split())
    for w in c.words:
        assert w in text, (w, r.output)
    assert _snapshot(cwd) == before  # nothing left behind, nothing of the user's touched
    if run is not None:
        assert _snapshot(run) == mine  # nor the trained run's files


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_every_command_has_a_bad_input_case():
    """The table covers each of farm's commands: a new command (or subcommand) needs its rows here."""
    import typer

    def commands(group, prefix: tuple[str, ...] = ()):
        for name, command in group.commands.items():
            yield from commands(command, (*prefix, name)) if hasattr(command, "commands") else [(*prefix, name)]

    names = list(commands(typer.main.get_command(app)))
    missing = [" ".join(n) for n in names if not any(c.args[: len(n)] == n for c in CASES)]
    assert len(names) >= 10 and not missing, f"no bad-input case for: {', '.join(missing)}"
    assert len(CASES) >= 100


def test_validate_json_prints_only_json_on_stdout(tmp_path):
    import json

    tiny_dataset(lambda f: __import__("polars").concat([f, f]))(tmp_path, None)
    r = runner.invoke(app, ["data", "validate", str(tmp_path / "d"), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["warnings"] and "valid farm-events/1 dataset" not in r.stdout
