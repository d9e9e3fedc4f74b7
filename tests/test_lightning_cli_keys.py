"""LightningCLI's own spellings, as a Lightning user types them: seed_everything, optimizer, lr_scheduler.monitor,
ckpt_path, callbacks+=, --print_config, trainer.enable_progress_bar; where a key cannot mean the same here
(default_root_dir), the message names farm's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.config import resolve
from farmcli.errors import UserError
from farmcli.model import FarmModule
from tests.model.helpers import VOCAB, tiny_config

runner = CliRunner()
TINY = str(Path(__file__).with_name("tiny-model.yaml"))
FAST = ["--data", "tiny", "--config", TINY]


def _printed(*args: str) -> dict:
    r = runner.invoke(app, ["train", *FAST, *args, "--print_config"])
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.output)


def test_seed_everything_is_the_seed_on_the_command_line_and_in_a_config_file(tmp_path):
    assert _printed("--seed_everything", "3")["seed"] == 3
    f = tmp_path / "c.yaml"
    f.write_text("seed_everything: 7\n")
    assert resolve([f]).seed == 7
    assert resolve([f], overrides=["--seed", "2"]).seed == 2  # the command line wins over the file


def test_seed_everything_true_draws_a_seed_that_config_yaml_keeps():
    seeds = {resolve(overrides=["seed_everything=true"]).seed for _ in range(3)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)
    with pytest.raises(UserError, match="seed_everything = false"):
        resolve(overrides=["seed_everything=false"])


def test_callbacks_append_to_the_ones_of_a_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trainer:\n  callbacks: [LearningRateMonitor]\n")
    cfg = resolve([f], overrides=["--trainer.callbacks+=ModelSummary", "--trainer.callbacks+=Timer"])
    names = [c["class_path"].rpartition(".")[2] for c in cfg.trainer["callbacks"]]
    assert names == ["LearningRateMonitor", "ModelSummary", "Timer"]
    assert [c["class_path"] for c in resolve([f], overrides=["--trainer.callbacks", "Timer"]).trainer["callbacks"]] == [
        "lightning.pytorch.callbacks.Timer"
    ]  # without + the list is replaced


def test_an_optimizer_by_name_keeps_farms_parameter_groups_and_lr():
    cfg = resolve([TINY], overrides=["--optimizer", "AdamW", "--optimizer.weight_decay", "0.05"])
    assert cfg.optimizer == {"class_path": "torch.optim.AdamW", "init_args": {"weight_decay": 0.05}}
    module = FarmModule(VOCAB, tiny_config("farm"), optimizer=cfg.optimizer)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"model", "id_tables"} and groups["model"]["lr"] == 1e-3  # optim.lr
    assert groups["model"]["weight_decay"] == 0.05 and groups["id_tables"]["weight_decay"] == 1e-5
    default = FarmModule(VOCAB, tiny_config("farm")).configure_optimizers()
    assert type(default) is torch.optim.Adam


def test_reduce_lr_on_plateau_watches_its_monitor_in_its_direction():
    for monitor, mode in (("val/auc_mean", "max"), ("val/loss", "min")):
        spec = resolve(
            overrides=["--lr_scheduler", "ReduceLROnPlateau", f"--lr_scheduler.monitor={monitor}"]
        ).lr_scheduler
        module = FarmModule(VOCAB, tiny_config("farm"), lr_scheduler=spec)
        conf = module.configure_optimizers()
        assert conf["lr_scheduler"]["monitor"] == monitor
        assert conf["lr_scheduler"]["scheduler"].mode == mode


@pytest.mark.parametrize(
    "args, words",
    [
        (["--trainer.default_root_dir", "x"], ["trainer.default_root_dir", "fit.runs_dir"]),
        (["--optimizer", "Bogus"], ["optimizer = 'Bogus'", "AdamW"]),
        (["--optimizer", "AdamW", "--optimizer.betaz", "1"], ["betaz", "Did you mean 'betas'"]),
        (["--lr_scheduler", "ReduceLROnPlateau", "--lr_scheduler.monitor", "val/bogus"], ["lr_scheduler.monitor"]),
        (["--ckpt_path", "nowhere.ckpt"], ["ckpt_path", "no such file"]),
    ],
)
def test_what_cannot_run_is_named_before_any_work(args, words, tmp_path):
    r = runner.invoke(app, ["train", *FAST, *args, "--fit.runs_dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and all(w in r.output for w in words), r.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_ckpt_path_resumes_the_run_and_enable_progress_bar_false_hides_the_bar(tmp_path):
    base = [*FAST, "--fit.runs_dir", str(tmp_path), "--fit.name", "r", "--trainer.enable_progress_bar", "false"]
    r = runner.invoke(app, ["train", *base, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"])
    assert r.exit_code == 0, r.output
    assert "Epoch 1/" not in r.output and "Epoch 0/" not in r.output
    run = tmp_path / "r"
    last = run / "checkpoints" / "last.ckpt"
    r = runner.invoke(app, ["train", "--ckpt_path", str(last), "--trainer.max_epochs", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "run.json").read_text())["epochs"] == 2
    assert "ckpt_path" not in yaml.safe_load((run / "config.yaml").read_text())
    best = run / "checkpoints" / "best.ckpt"
    r = runner.invoke(app, ["train", "--ckpt_path", str(best)])
    assert r.exit_code == 2 and "last.ckpt" in r.output, r.output
