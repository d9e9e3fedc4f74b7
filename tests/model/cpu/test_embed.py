"""The CPU backend's embedding layer (model/cpu/embed.py) looks up what ``EmbeddingLayer`` does: the same V
and x_cand, the same table gradients, with each switch (row_gather, product_tables) on and off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from farmcli.model import FARM
from farmcli.model.backends import forward
from farmcli.model.config import EmbedConfig, VocabSizes
from farmcli.model.cpu import embed as cpu
from farmcli.model.cpu.options import options
from farmcli.model.cpu.ragged import LengthGroups
from farmcli.model.embed import EmbeddingLayer
from tests.model.helpers import VOCAB, random_batch, tiny_config


def _layer() -> EmbeddingLayer:
    torch.manual_seed(0)
    return EmbeddingLayer(EmbedConfig(), VocabSizes.parse(VOCAB))


def _noisy_batch() -> dict[str, torch.Tensor]:
    """Padding holding ids of real rows (bucket 0 included), a row without any history."""
    batch = random_batch(48, 10, seed=7, empty_rows=[3])
    generator = torch.Generator().manual_seed(1)
    for key, value in list(batch.items()):
        if key[:2] in ("v_", "l_") and not key.endswith("mask"):
            batch[key] = torch.where(
                batch[key[:2] + "mask"], value, torch.randint(0, 3, value.shape, generator=generator)
            )
    return batch


def _grads(layer, outputs) -> dict[str, torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    weights = [torch.randn_like(t, generator=torch.Generator().manual_seed(i)) for i, t in enumerate(outputs)]
    sum((t * w).sum() for t, w in zip(outputs, weights, strict=True)).backward()
    return {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("row_gather", [True, False])
@pytest.mark.parametrize("product_tables", [True, False])
@pytest.mark.parametrize("sparse_fill", [0.0, 1.01])  # every history by its padded lookups / real positions only
def test_history_and_candidate_equal_the_reference_with_its_gradients(
    sparse_fill, product_tables, row_gather, monkeypatch
):
    monkeypatch.setattr(cpu, "SPARSE_FILL", sparse_fill)
    batch, layer = _noisy_batch(), _layer()
    with options(product_tables=product_tables, row_gather=row_gather):
        got = [cpu.history(layer, batch, "v"), cpu.history(layer, batch, "l"), cpu.candidate(layer, batch)]
        got_grads = _grads(layer, got)
    want = [layer.history(batch, "v"), layer.history(batch, "l"), layer.candidate(batch)]
    want_grads = _grads(layer, want)
    for g, w, p in zip(got, want, "vl", strict=False):
        assert not g[~batch[f"{p}_mask"]].any()  # padding is zero whatever ids it holds
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=0)
    assert got_grads.keys() == want_grads.keys() and "video.play.weight" in got_grads
    for name, grad in want_grads.items():
        # a product table sums a row's gradient in another order: float rounding
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("product_tables", [True, False])
def test_the_trimmed_live_history_is_the_reference_at_the_groups_positions(product_tables):
    batch, layer = _noisy_batch(), _layer()
    groups = LengthGroups.of(batch["l_mask"].bool(), bounds=(2, 4))
    with options(product_tables=product_tables):
        trimmed = cpu.trimmed_history(layer, batch, "l", groups)
        assert [tuple(p.shape[:2]) for p in trimmed.pieces] == list(zip(groups.sizes, groups.keep, strict=True))
        got_grads = _grads(layer, [trimmed.padded()])
    want = layer.history(batch, "l")
    torch.testing.assert_close(trimmed.padded(), want, rtol=0, atol=0)
    want_grads = _grads(layer, [want])
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def _table_grads(row_gather: bool, batch) -> dict[str, torch.Tensor]:
    layer = _layer()
    with options(row_gather=row_gather, product_tables=False):
        outputs = [cpu.history(layer, batch, "v"), cpu.history(layer, batch, "l"), cpu.candidate(layer, batch)]
    return _grads(layer, outputs)


def test_the_index_add_backward_gives_torchs_embedding_gradients():
    batch = random_batch(64, 10)
    dense, index_add = _table_grads(False, batch), _table_grads(True, batch)
    assert dense.keys() == index_add.keys() and len(dense) == 11
    for name in dense:
        torch.testing.assert_close(index_add[name], dense[name], rtol=1e-6, atol=1e-6, msg=name)
    assert index_add["ids.author.weight"].abs().sum() > 0  # the tables did get a gradient
    assert not index_add["ids.author.weight"][0].any()  # the padding row never does


def test_the_model_trains_the_same_with_either_embedding_backward():
    batch = random_batch(32, 8)
    losses = []
    for row_gather in (False, True):
        torch.manual_seed(0)
        model = FARM(tiny_config(), VOCAB)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            with options(row_gather=row_gather):
                out = forward(model, batch, "cpu")
            loss = F.binary_cross_entropy_with_logits(out.logits, batch["labels"]) + out.cl_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 1e-5


def test_field_runs_merge_adjacent_small_vocabularies():
    assert cpu.field_runs([31802, 5, 42, 33, 25, 34], 8192) == ((0,), (1, 2, 3), (4, 5))  # video on `default`
    assert cpu.field_runs([31802, 5, 42, 65, 33, 25, 34], 8192) == ((0,), (1, 2), (3, 4), (5, 6))  # live
    assert cpu.field_runs([5, 42, 33], 0) == ((0,), (1,), (2,))  # switched off


def test_a_product_table_lookup_is_the_fields_lookups_and_the_padding_row_takes_no_gradient():
    torch.manual_seed(0)
    tables = [torch.nn.Embedding(4, 3, padding_idx=0), torch.nn.Embedding(5, 2), torch.nn.Embedding(3, 4)]
    ids = [
        torch.tensor([[0, 1, 3], [2, 0, 1]]),
        torch.tensor([[4, 0, 2], [1, 3, 0]]),
        torch.tensor([[2, 1, 0], [0, 2, 1]]),
    ]
    mask = torch.tensor([[True, True, False], [True, True, True]])
    got = F.embedding(cpu.product_ids(tables, ids, mask), cpu.product_table(tables))
    want = cpu.gather([cpu.masked_lookup(t, i, mask) for t, i in zip(tables, ids)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    (got * torch.arange(1.0, 10.0)).sum().backward()
    assert not tables[0].weight.grad[0].any()  # real positions with the padding id still leave its row alone
    with pytest.raises(IndexError, match="out of range"):  # an id past its own table fails, as it would alone
        F.embedding(cpu.product_ids(tables, [ids[0], ids[1] + 1, ids[2]], mask), cpu.product_table(tables))


@pytest.mark.parametrize("padding_idx", [0, None])
def test_a_masked_lookup_is_the_lookup_times_the_mask(padding_idx):
    """Masked positions look up a zero row (the padding row, or one appended for a table without one)."""
    torch.manual_seed(1)
    table = torch.nn.Embedding(5, 3, padding_idx=padding_idx)
    ids = torch.tensor([[0, 1, 4, 2], [3, 3, 0, 1]])
    mask = torch.tensor([[False, True, True, False], [True, False, True, True]])
    weight, masked_ids, padding = cpu.masked_lookup(table, ids, mask)
    got = F.embedding(masked_ids, weight, padding)
    want = table(ids) * mask.unsqueeze(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    grad_weights = torch.randn(2, 4, 3)
    (want_grad,) = torch.autograd.grad((want * grad_weights).sum(), table.weight)
    (got_grad,) = torch.autograd.grad((got * grad_weights).sum(), table.weight)
    torch.testing.assert_close(got_grad, want_grad)
