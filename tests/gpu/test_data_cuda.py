"""The sample store on CUDA: DeviceStore batches equal SampleStore.batch and are gathered without a host sync,
and a Lightning fit on CUDA gathers on the device by default (``device_store="auto"``) the same batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from farmcli.data.build import build_samples
from farmcli.data.device_store import DeviceStore
from farmcli.data.schema import SPLITS
from farmcli.data.simulator import sim_config, synthesize
from farmcli.data.store import SampleStore


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> SampleStore:
    root = tmp_path_factory.mktemp("tiny-preset")
    synthesize(sim_config("tiny"), root / "data")
    return build_samples(root / "data", root / "samples")


def assert_same_batch(want: dict, got: dict, device: str = "cuda") -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        g = got[k]
        assert g.device.type == device, k
        assert g.dtype == w.dtype and g.shape == w.shape, k
        assert torch.equal(g.cpu(), w), k


@pytest.mark.parametrize("split", SPLITS)
def test_device_store_on_cuda_equals_the_sample_store(tiny_store, split):
    dev = DeviceStore(tiny_store, "cuda")
    assert DeviceStore.fits(tiny_store, "cuda")
    n = tiny_store.n(split)
    rng = np.random.default_rng(1)
    for size in (0, 1, 5, 333, n):
        idx = rng.integers(-n, n, size=size)
        on_device = torch.from_numpy(idx).cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host sync inside the gather raises
        try:
            got = dev.batch(split, on_device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert_same_batch(tiny_store.batch(split, idx), got)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*", "ignore:.*does not have many workers.*")
def test_a_cuda_fit_gathers_on_the_device_by_default(tiny_store):
    import lightning as L

    from farmcli.data.module import FarmDataModule

    def fit(mode: str):
        seen: list[dict] = []

        class Recorder(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(1))

            def training_step(self, batch, batch_idx):
                assert batch["labels"].device.type == "cuda"
                seen.append({k: v.cpu() for k, v in batch.items()})
                return (self.w * batch["labels"].sum()).sum()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            max_epochs=2,
            limit_train_batches=3,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
        dm = FarmDataModule(tiny_store, 500, seed=4, num_workers=2, device_store=mode)
        trainer.fit(Recorder(), datamodule=dm)
        return seen, dm

    want, never = fit("never")
    got, auto = fit("auto")
    assert never._device_store is None and auto._device_store is not None
    assert auto._device_store.device.type == "cuda"
    assert len(got) == len(want) == 6
    for w, g in zip(want, got):
        assert list(g) == list(w)
        for k in w:
            assert torch.equal(g[k], w[k]), k
