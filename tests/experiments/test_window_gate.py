"""``dft_window`` (experiments/plugins/window_gate.py): the library's ``dft`` with eq. 10's mean taken over the
whole window (padding as zeros), a subclass registered under its own name; and what configs and checkpoints that
still hold the library's former ``gate_mean`` setting get."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from farmcli import registry
from farmcli.cli import app
from farmcli.config import resolve
from farmcli.errors import UserError
from farmcli.model.config import ModelConfig, SlotConfig
from farmcli.model.farm import FARM
from farmcli.model.frequency import DFTFrequency, frequency_split
from tests.model.cpu.helpers import assert_same_run, run
from tests.model.helpers import VOCAB, random_batch, tiny_config

runner = CliRunner()


@pytest.fixture
def window_gate():
    """The plugin class, imported afresh for each test (tests/experiments/conftest.py)."""
    return importlib.import_module("experiments.plugins.window_gate").WindowGateDFTFrequency


def _mask(lengths, length):
    return torch.arange(length)[None, :] >= (length - torch.tensor(lengths))[:, None]


@pytest.mark.parametrize("per_channel", [False, True])
def test_eq_9_with_gates_from_the_window_mean(window_gate, per_channel):
    torch.manual_seed(0)
    module = window_gate(dim=6, length=10, cutoff=3, per_channel=per_channel, gate_dims=(8,))
    assert isinstance(module, DFTFrequency)
    mask = _mask([3, 10, 0, 1], 10)
    v = torch.randn(4, 10, 6) * mask.unsqueeze(-1)
    f, (g_low, g_high) = module(v, mask)
    mean = v.sum(1) / 10  # padding counted as zeros
    want_low, want_high = torch.sigmoid(module.gate(mean)).chunk(2, dim=-1)
    low, high = frequency_split(v, 3)
    want = (want_low.unsqueeze(1) * low + want_high.unsqueeze(1) * high) * mask.unsqueeze(-1)
    torch.testing.assert_close(f, want)
    if not per_channel:
        want_low, want_high = want_low.squeeze(-1), want_high.squeeze(-1)
    torch.testing.assert_close(g_low, want_low)
    torch.testing.assert_close(g_high, want_high)


def test_the_window_mean_sees_how_full_the_history_is(window_gate):
    """The same event alone and ten times gives other gates; ``dft``'s mean of events cannot tell them apart.
    A full window: both means agree, so the two modules with one state dict give one F."""
    torch.manual_seed(0)
    mask = _mask([2, 10], 10)
    v = torch.randn(6).expand(2, 10, 6) * mask.unsqueeze(-1)
    by_events = DFTFrequency(dim=6, length=10)
    by_window = window_gate(dim=6, length=10)
    by_window.load_state_dict(by_events.state_dict())
    g_events, g_window = by_events(v, mask)[1][1], by_window(v, mask)[1][1]
    torch.testing.assert_close(g_events[0], g_events[1])
    assert not torch.allclose(g_window[0], g_window[1])
    torch.testing.assert_close(by_window(v[1:], mask[1:])[0], by_events(v[1:], mask[1:])[0])


def test_it_takes_dft_s_parameters_but_the_gate_mean(window_gate):
    assert registry.get("live_frequency", "dft_window") is window_gate
    with pytest.raises(TypeError):
        window_gate(dim=6, length=10, gate_mean="events")


@pytest.mark.parametrize("trim_live", [True, False])
def test_the_cpu_backend_gives_the_reference_result(window_gate, trim_live):
    """The plugin overrides forward, so the CPU backend runs that forward on the padded history (not dft's form on
    the live history cut to its length groups): the reference's result, dividing by the whole window."""
    from farmcli.model.cpu.frequency import runs_on_trailing
    from farmcli.model.cpu.options import options

    torch.manual_seed(0)
    window = SlotConfig("dft_window", {"gate_dims": [8]})
    model = FARM(dataclasses.replace(tiny_config("farm"), video_frequency=window, live_frequency=window), VOCAB)
    assert isinstance(model.live_frequency, window_gate) and not runs_on_trailing(model.live_frequency)
    batch = random_batch(6, 12, seed=2, empty_rows=[0], empty_live_rows=[1, 2])
    with options(trim_live=trim_live):
        assert_same_run(run(model, batch, "cpu"), run(model, batch, "reference"))


WINDOW_PATH = "experiments.plugins.window_gate.WindowGateDFTFrequency"
OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "run-4104478"


def test_an_old_run_s_gate_mean_events_is_dropped():
    """Run directories and checkpoints of before issue 35 hold ``gate_mean: events`` (the only thing dft does now)
    in both frequency slots: their config and hyperparameters load without it."""
    cfg = resolve([OLD_RUN / "config.yaml"])
    hparams = yaml.safe_load((OLD_RUN / "logs" / "hparams.yaml").read_text())["model"]
    assert hparams["live_frequency"]["params"]["gate_mean"] == "events"
    for model in (cfg.model, ModelConfig.from_dict(hparams)):
        for slot in ("video_frequency", "live_frequency"):
            assert "gate_mean" not in getattr(model, slot).params, slot
        assert model.live_frequency.params["identity"] == 1.0
    FARM(ModelConfig.from_dict(hparams), VOCAB)


@pytest.mark.parametrize("slot,name", [("video_frequency", "dft"), ("live_frequency", "dft_identity")])
def test_gate_mean_window_in_a_config_file_says_where_it_went(tmp_path, slot, name):
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({"model": {slot: {"name": name, "params": {"gate_mean": "window"}}}}))
    r = runner.invoke(app, ["train", "--data", "tiny", "--config", str(config), "--print-config"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    message = " ".join(r.output.split())  # as one line, however the message is wrapped
    assert f"model.{slot}.gate_mean = 'window'" in message and "dft_window" in message
    assert "experiments/plugins/window_gate.py" in message and f"--model.{slot} {WINDOW_PATH}" in message
    # what it says to do: the plugin's class path in place of the slot's component (its params start afresh)
    r = runner.invoke(
        app, ["train", "--data", "tiny", "--config", str(config), f"--model.{slot}", WINDOW_PATH, "--print-config"]
    )
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.output)["model"][slot]["name"] == WINDOW_PATH


def test_another_gate_mean_is_refused():
    with pytest.raises(UserError, match="gate_mean"):
        ModelConfig.from_dict({"live_frequency": {"name": "dft", "params": {"gate_mean": "all"}}})
