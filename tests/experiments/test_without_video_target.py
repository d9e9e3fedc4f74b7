"""experiments/without_video_target.py measures what the fuse adds without eq. 11's video attention (README,
docs/notebook/QUALITY.md): through the script's own training call the attention must stay off (zeroed and frozen) for the
whole run, the rest must train as before, and no class may be patched to get there."""

from __future__ import annotations

import json

import lightning as L
import torch

from farmcli.model.farm import FARM
from farmcli.model.module import FarmModule


def test_video_target_stays_off_through_training_and_nothing_is_patched(tmp_path):
    from experiments import without_video_target as script

    classes = {cls: dict(vars(cls)) for cls in (FARM, FarmModule)}

    class Keep(L.Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            self.model = pl_module.farm

    keep = Keep()
    out = tmp_path / "q.jsonl"
    argv = ["--data", "tiny", "--seeds", "0", "--epochs", "1", "--threads", "1", "--out", str(out), "farm"]
    script.main(argv, extra_callbacks=[keep])

    row = json.loads(out.read_text())
    assert row["experiment"] == "farm" and row["val_auc_mean"] == row["val_auc_mean"]  # written, not NaN
    model = keep.model
    weight = model.video_target.out.weight
    assert not weight.requires_grad and torch.count_nonzero(weight) == 0  # eq. 11's video side: zeroed, frozen
    assert torch.count_nonzero(model.live_target.out.weight) > 0  # the live side trains as before
    assert model.live_target.out.weight.requires_grad
    dims = model.cfg.embed
    seq, mask = torch.randn(4, 5, dims.d1), torch.ones(4, 5, dtype=torch.bool)
    assert torch.count_nonzero(model.video_target(torch.randn(4, dims.cand_dim), seq, mask)[0]) == 0  # F^_video = 0
    assert {cls: dict(vars(cls)) for cls in (FARM, FarmModule)} == classes  # no method replaced


def test_the_switch_runs_before_the_optimiser_is_made():
    """Lightning calls a callback's ``setup`` before ``configure_optimizers``: the frozen weight gets no step."""
    from experiments.without_video_target import video_target_off

    calls: list[str] = []
    callback = video_target_off()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.farm = torch.nn.Module()
            self.farm.video_target = torch.nn.Module()
            self.farm.video_target.out = torch.nn.Linear(3, 3, bias=False)
            self.other = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            calls.append("step")
            return (self.other(batch[0]) + self.farm.video_target.out(batch[0]).sum()).sum()

        def configure_optimizers(self):
            calls.append(f"optimizer, frozen={not self.farm.video_target.out.weight.requires_grad}")
            return torch.optim.Adam([p for p in self.parameters()], lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), batch_size=4)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    module = Module()
    trainer.fit(module, data)
    assert calls[0] == "optimizer, frozen=True" and calls.count("step") == 2
    assert torch.count_nonzero(module.farm.video_target.out.weight) == 0
