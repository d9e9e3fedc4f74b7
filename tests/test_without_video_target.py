"""benchmarks/without_video_target.py measures what the fuse adds without eq. 11's video attention (README,
docs/QUALITY.md): the attention must stay off through training, and nothing else may change."""

import importlib.util
from pathlib import Path

import lightning as L
import torch

from farmcli.config import resolve
from farmcli.model import farm
from farmcli.sources import sample_store
from farmcli.tune.trial import run_trial

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "without_video_target.py"


def load_script(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("without_video_target", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_video_target_stays_off_through_training(monkeypatch):
    script = load_script(monkeypatch)
    monkeypatch.setattr(farm.FARM, "__init__", farm.FARM.__init__)  # undone after the test
    script.patch()

    class Keep(L.Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            self.model = pl_module.farm

    keep = Keep()
    cfg = resolve(variant="farm", overrides=["data.source=tiny", "trainer.max_epochs=1", "seed=0"])
    store = sample_store(cfg.data)
    result = run_trial(cfg, store, extra_callbacks=[keep])
    assert torch.isfinite(torch.tensor(result.score))

    model = keep.model
    weight = model.video_target.out.weight
    assert not weight.requires_grad and torch.count_nonzero(weight) == 0
    assert torch.count_nonzero(model.live_target.out.weight) > 0  # the live side trains as before
    dims = model.cfg.embed
    seq, mask = torch.randn(4, 5, dims.d1), torch.ones(4, 5, dtype=torch.bool)
    assert torch.count_nonzero(model.video_target(torch.randn(4, dims.cand_dim), seq, mask)[0]) == 0
