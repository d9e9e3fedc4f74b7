"""FarmModule: FARM under Lightning; loss of eq. 15 (six BCEs + lambda * L_cl), Adam, per-task logging.

Evaluation steps hand (logits, labels, user_id, activity) to ``on_eval_batch``, which updates the grouped AUCs. The
test loop is farm's one scoring loop (after ``fit``, ``farm eval``; farmcli/scoring.py): see ``test_tables``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from farmcli.batch import ACTIVITY_LEVELS, TASKS
from farmcli.errors import UserError
from farmcli.metric_names import KINDS
from farmcli.metrics import GroupedAUC
from farmcli.model import backends
from farmcli.model.config import BACKENDS, Backend, ModelConfig, OptimConfig, VocabSizes
from farmcli.model.farm import FARM, FarmOutput


def _finite(x: float) -> float:
    """An undefined AUC (one class only) is logged as 0.5, chance, so early stopping never sees NaN."""
    return 0.5 if x != x else float(x)


class NonFiniteLossError(UserError, FloatingPointError):
    """Training diverged or the batch holds bad values; stopping beats writing a checkpoint full of NaN."""


class EvalBatch(TypedDict, total=False):
    logits: Tensor  # [B, 6] in TASKS order
    labels: Tensor  # [B, 6]
    user_id: Tensor  # [B] raw user ids (for UAUC / GAUC)
    activity: Tensor  # [B] 0 low, 1 mid, 2 high
    p: Tensor  # [B, 6] true probabilities, only for simulated data


_FUSED_ADAM_DEVICES = ("cpu", "cuda")


class FarmModule(L.LightningModule):
    def __init__(
        self,
        vocab: VocabSizes | Mapping[str, int],
        model: ModelConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        label_rates: Sequence[float] | None = None,
        cl_batch_size: int | None = None,
        lr_scheduler: Mapping[str, Any] | None = None,
        monitor: str = "val/auc_mean",
        optimizer: Mapping[str, Any] | None = None,
        backend: Backend = "auto",
    ):
        """``backend``: what runs the forward pass (``fit.backend``, model/backends.py); a run setting, not saved
        with the hyperparameters (an old checkpoint's ``model.backend`` is ignored: ``ModelConfig.from_dict``)."""
        super().__init__()
        if backend not in BACKENDS:
            raise UserError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (fit.backend).")
        vocab, model, optim = VocabSizes.parse(vocab), ModelConfig.parse(model), OptimConfig.parse(optim)
        # Plain dicts, so checkpoints load with torch.load(weights_only=True) and hparams.yaml stays readable.
        self.save_hyperparameters(
            {"vocab": dataclasses.asdict(vocab), "model": model.to_dict(), "optim": dataclasses.asdict(optim)}
        )
        self.model_cfg, self.optim_cfg = model, optim
        self.lr_scheduler = None if lr_scheduler is None else dict(lr_scheduler)
        """A torch scheduler as ``{class_path, init_args}`` (farmcli/components.py), or None."""
        self.monitor = monitor
        """The validation metric a scheduler that watches one (ReduceLROnPlateau) reads."""
        self.optimizer_spec = None if optimizer is None else dict(optimizer)
        """A torch optimizer as ``{class_path, init_args}`` (``--optimizer AdamW``), or None for Adam."""
        self.farm = FARM(model, vocab, label_rates=label_rates)
        self.backend: Backend = backend
        self.cl_batch_size = cl_batch_size
        """Evaluation's L_cl slices (the training batch size): InfoNCE grows with the number of negatives."""
        self._non_finite = torch.zeros((), dtype=torch.int32)
        """Non-finite training losses not yet reported (on an accelerator; see ``_step``)."""
        self.val_auc, self.test_auc, self.test_oracle = (
            GroupedAUC(num_tasks=len(TASKS), task_names=TASKS, group_names=ACTIVITY_LEVELS) for _ in range(3)
        )
        """test_oracle: the same tables for the true probabilities, where the data has them (simulated data)."""
        self.test_tables: dict | None = None
        """``{"model": {group: {task: {...}}}, "oracle": ... | None, "samples": N}`` of the last test loop."""

    def forward(self, batch: Mapping[str, Tensor], return_aux: bool = False, with_cl: bool = True) -> FarmOutput:
        """FARM's forward pass (``self.farm``), run by ``self.backend``."""
        return backends.forward(self.farm, batch, self.backend, return_aux=return_aux, with_cl=with_cl)

    def compute_loss(self, out: FarmOutput, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 15: L = sum of the six BCEs (eq. 7, on logits for numerical safety) + lambda * L_cl."""
        bce = F.binary_cross_entropy_with_logits(out.logits.float(), labels.float(), reduction="none").mean(0)
        parts = {f"bce_{task}": bce[i] for i, task in enumerate(TASKS)}
        loss = bce.sum()
        if out.cl_loss is not None:
            parts["cl"] = out.cl_loss
            loss = loss + self.model_cfg.cl_weight * out.cl_loss
        return loss, parts

    def _forward_for(self, batch: Mapping[str, Tensor], stage: str) -> FarmOutput:
        """The forward pass; in evaluation, in slices of ``cl_batch_size`` rows when the align has a loss."""
        n = batch["labels"].shape[0]
        step = self.cl_batch_size
        if stage == "train" or not step or n <= step or not getattr(self.farm.align, "uses_preference", False):
            return self(batch)
        outs = [self({k: v[i : i + step] for k, v in batch.items()}) for i in range(0, n, step)]
        sizes = torch.tensor([o.logits.shape[0] for o in outs], dtype=torch.float32, device=outs[0].logits.device)
        cl = None if outs[0].cl_loss is None else (torch.stack([o.cl_loss for o in outs]) * sizes).sum() / sizes.sum()
        return FarmOutput(torch.cat([o.logits for o in outs]), cl)

    def _step(self, batch: Mapping[str, Tensor], batch_idx: int, stage: str) -> tuple[Tensor, FarmOutput]:
        out = self._forward_for(batch, stage)
        loss, parts = self.compute_loss(out, batch["labels"])
        training = stage == "train"
        if not training or loss.device.type == "cpu":
            if not torch.isfinite(loss):
                bad = [k for k, v in parts.items() if not torch.isfinite(v)]
                where = f"The {stage} loss is {loss.item()} at step {self.global_step}, batch {batch_idx}"
                if not bad:  # every term finite, their weighted sum not: the weight overflows it
                    raise NonFiniteLossError(
                        f"{where}, though each of its terms is finite: model.cl_weight = {self.model_cfg.cl_weight} "
                        f"makes lambda * L_cl (eq. 15) overflow. Give model.cl_weight a value of the paper's order "
                        f"(0.1 .. 0.9)."
                    )
                raise NonFiniteLossError(
                    f"{where} (non-finite terms: {', '.join(bad)}). Check that labels are 0/1 and ids are within the "
                    f"vocabulary, or lower the learning rate (optim.lr = {self.optim_cfg.lr})."
                )
        else:  # asking every step would make the host wait for the device: counted there, read when logging
            self._non_finite = self._non_finite.to(loss.device) + (~torch.isfinite(loss)).to(torch.int32)
            if self._logs_this_step():
                self._check_non_finite()
        if not training or self._logs_this_step():
            size = batch["labels"].shape[0]
            self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, sync_dist=not training)
            self.log_dict({f"{stage}/{k}": v for k, v in parts.items()}, batch_size=size, sync_dist=not training)
        return loss, out

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this training step (``global_step + 1`` a multiple of ``log_every_n_steps``;
        outside a Trainer, every step): each ``self.log`` costs ~1.2 ms on a CPU, a tenth of the base model's step."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return True
        if getattr(trainer, "fast_dev_run", False):  # fast_dev_run writes every step
            return True
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        return (trainer.global_step + 1) % every == 0 or bool(trainer.should_stop)

    def _check_non_finite(self) -> None:
        """Raise if a training loss on an accelerator was non-finite since the last check (``_step``)."""
        if int(self._non_finite):
            raise NonFiniteLossError(
                f"The training loss was NaN or infinite on {int(self._non_finite)} step(s) up to step "
                f"{self.global_step}. Check that labels are 0/1 and ids are within the vocabulary, or lower the "
                f"learning rate (optim.lr = {self.optim_cfg.lr})."
            )

    def on_train_epoch_end(self) -> None:
        self._check_non_finite()

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "train")[0]

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> EvalBatch:
        return self._eval_outputs(batch, self._step(batch, batch_idx, "val")[1].logits, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> EvalBatch:
        """Scores only (no loss, no L_cl): the test loop is the scoring loop of every split farm evaluates."""
        return self._eval_outputs(batch, self(batch, with_cl=False).logits, "test")

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Logits [B, 6] in TASKS order (sigmoid gives the XTRs)."""
        return self(batch, with_cl=False).logits

    def _eval_outputs(self, batch: Mapping[str, Tensor], logits: Tensor, stage: str) -> EvalBatch:
        outputs = EvalBatch(
            logits=logits.detach(), labels=batch["labels"], user_id=batch["user_id"], activity=batch["activity"]
        )
        if "p" in batch:
            outputs["p"] = batch["p"]
        self.on_eval_batch(outputs, stage)
        return outputs

    def on_eval_batch(self, outputs: EvalBatch, stage: str) -> None:
        """Validation batches feed the grouped AUC that early stopping watches (synced across ranks)."""
        if stage == "val":
            self.val_auc.update(outputs["logits"].float(), outputs["labels"], outputs["user_id"], outputs["activity"])
        elif stage == "test":
            groups = outputs["user_id"], outputs["activity"]
            self.test_auc.update(outputs["logits"].float(), outputs["labels"], *groups)
            if "p" in outputs:
                self.test_oracle.update(outputs["p"].float(), outputs["labels"], *groups)

    def on_test_epoch_start(self) -> None:
        self.test_auc.reset()
        self.test_oracle.reset()
        self.test_tables = None

    def on_test_epoch_end(self) -> None:
        """The grouped tables of the split just scored (synced across ranks: every sample counted once)."""
        with warnings.catch_warnings():  # an empty split (no batch on this rank) is a table of NaN, not a warning
            warnings.filterwarnings("ignore", message=".*was called before the ``update``")
            model = self.test_auc.compute()
        oracle = self.test_oracle.compute() if self.test_oracle.update_count else None
        self.test_tables = {"model": model, "oracle": oracle, "samples": int(model["full"][TASKS[0]]["n_samples"])}
        split = getattr(getattr(self._trainer, "datamodule", None), "test_split", None)
        if split == "test" and self.test_auc.update_count:
            self._log_means(model["full"], "test")  # the post-fit test reaches every logger of the run

    def _log_means(self, full: Mapping[str, Mapping[str, float]], stage: str) -> None:
        """``STAGE/KIND_TASK`` and ``STAGE/KIND_mean`` of the full population (the mean AUC is the monitor)."""
        for kind in KINDS:
            values = [full[t][kind] for t in TASKS]
            for t, v in zip(TASKS, values):
                self.log(f"{stage}/{kind}_{t}", _finite(v), sync_dist=False)
            self.log(
                f"{stage}/{kind}_mean", _finite(sum(values) / len(values)), prog_bar=kind == "auc", sync_dist=False
            )

    def on_validation_epoch_start(self) -> None:
        self._check_non_finite()  # before a checkpoint of this epoch can be written
        self.val_auc.reset()

    def on_validation_epoch_end(self) -> None:
        """Log the mean over tasks of AUC / UAUC / GAUC (``val/auc_mean`` is the early-stopping monitor)."""
        if not self.val_auc.update_count:
            return
        full = self.val_auc.compute()["full"]
        self._log_means(full, "val")
        # what the synced metric saw (all ranks): a DDP run must count every validation sample once
        self.log("val/n_samples", float(full[TASKS[0]]["n_samples"]), sync_dist=False)
        self.log("val/n_users", float(full[TASKS[0]]["n_users"] + full[TASKS[0]]["n_skipped"]), sync_dist=False)

    def _fused_allowed(self) -> bool:
        """Lightning's mixed precision refuses clipping with a fused (self-unscaling) optimizer: plain Adam there."""
        trainer = self._trainer
        if trainer is None or not trainer.gradient_clip_val:
            return True
        from lightning.pytorch.plugins.precision import MixedPrecision

        return not isinstance(trainer.precision_plugin, MixedPrecision)

    def configure_optimizers(self) -> Any:
        """Adam with ``optim.*`` (or ``--optimizer NAME``, its lr defaulting to optim.lr), the id tables in a group
        of their own; Adam's fused kernel where the device has one (21 -> 5 ms a step for FARM on a 2-core CPU,
        benchmarks/profile_train.py). ``lr_scheduler`` steps once an epoch; ReduceLROnPlateau reads ``monitor``."""
        from farmcli import components

        params = list(self.parameters())
        optim = self.optim_cfg
        groups: list[dict[str, Any]] = [{"params": params}]
        if optim.id_weight_decay is not None:  # the id tables in a group of their own
            ids = {id(p) for p in self.farm.embed.ids.parameters()}
            id_tables = [p for p in params if id(p) in ids]
            groups = [  # named: LearningRateMonitor logs lr-Adam/model and lr-Adam/id_tables
                {"name": "model", "params": [p for p in params if id(p) not in ids]},
                {"name": "id_tables", "params": id_tables, "weight_decay": optim.id_weight_decay},
            ]
        optimizer: torch.optim.Optimizer
        if self.optimizer_spec is None:
            fused = self._fused_allowed() and all(
                p.device.type in _FUSED_ADAM_DEVICES and p.dtype.is_floating_point for p in params
            )
            optimizer = torch.optim.Adam(groups, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None)
        else:
            optimizer = components.instantiate("optimizer", self.optimizer_spec, params=groups, lr=optim.lr)
        if self.lr_scheduler is None:
            return optimizer
        from farmcli.metric_names import monitor_mode

        monitor = self.lr_scheduler["init_args"].get("monitor", self.monitor)
        plateau = issubclass(
            components.resolve_class("lr_scheduler", self.lr_scheduler["class_path"]),
            torch.optim.lr_scheduler.ReduceLROnPlateau,
        )
        direction = {"mode": monitor_mode(monitor)} if plateau else {}  # an AUC rises: "min" would cut the lr at once
        scheduler = components.instantiate(
            "lr_scheduler", self.lr_scheduler, optimizer=optimizer, monitor=monitor, **direction
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": monitor},
        }
