import pytest
import torch

from farmcli.model import FARM
from farmcli.model.config import EmbedConfig, VocabSizes
from farmcli.model.embed import EmbeddingLayer
from tests.model.helpers import VOCAB, random_batch, tiny_config


def _table_grads(row_gather: bool, batch) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    layer = EmbeddingLayer(EmbedConfig(), VocabSizes.parse(VOCAB))
    layer.row_gather = row_gather
    v_video, v_live, x_cand = layer(batch)
    weights = [
        torch.randn_like(t, generator=torch.Generator().manual_seed(i)) for i, t in enumerate((v_video, v_live, x_cand))
    ]
    sum((t * w).sum() for t, w in zip((v_video, v_live, x_cand), weights)).backward()
    return {name: p.grad.clone() for name, p in layer.named_parameters()}


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
        model.embed.row_gather = row_gather
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            out = model(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["labels"]) + out.cl_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - losses[1]) < 1e-5


@pytest.mark.parametrize("product_tables", [True, False])
@pytest.mark.parametrize("sparse_fill", [0.0, 1.01])  # every history by its padded lookups / real positions only
def test_padded_positions_are_zero_whatever_ids_they_hold_with_the_gradients_of_masking(
    sparse_fill, product_tables, monkeypatch
):
    from farmcli.model import embed
    from farmcli.model.embed import LIVE_FIELDS, VIDEO_FIELDS

    monkeypatch.setattr(embed, "SPARSE_FILL", sparse_fill)

    batch = random_batch(48, 10, seed=7, empty_rows=[3])
    generator = torch.Generator().manual_seed(1)
    for key, value in list(batch.items()):  # padding holding ids of real rows, bucket 0 included
        if key[:2] in ("v_", "l_") and not key.endswith("mask"):
            batch[key] = torch.where(
                batch[key[:2] + "mask"], value, torch.randint(0, 3, value.shape, generator=generator)
            )
    torch.manual_seed(0)
    layer = EmbeddingLayer(EmbedConfig(), VocabSizes.parse(VOCAB))
    layer.product_tables = product_tables
    got = layer(batch)[:2]
    want = [
        torch.cat([layer._table(domain, f)(batch[f"{p}_{f}"]) for f in fields], -1) * batch[f"{p}_mask"].unsqueeze(-1)
        for p, domain, fields in (("v", layer.video, VIDEO_FIELDS), ("l", layer.live, LIVE_FIELDS))
    ]
    for g, w, p in zip(got, want, "vl", strict=True):
        assert not g[~batch[f"{p}_mask"]].any()
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    weights = [torch.randn_like(t, generator=torch.Generator().manual_seed(i)) for i, t in enumerate(got)]
    grads = []
    for outputs in (got, want):
        layer.zero_grad()
        sum((t * w).sum() for t, w in zip(outputs, weights, strict=True)).backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "video.play.weight" in grads[0]
    for name, grad in grads[1].items():
        # a product table sums a row's gradient in another order: float rounding
        torch.testing.assert_close(grads[0][name], grad, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_field_runs_merge_adjacent_small_vocabularies():
    from farmcli.model.embed import field_runs

    assert field_runs([31802, 5, 42, 33, 25, 34], 8192) == ((0,), (1, 2, 3), (4, 5))  # video on `default`
    assert field_runs([31802, 5, 42, 65, 33, 25, 34], 8192) == ((0,), (1, 2), (3, 4), (5, 6))  # live
    assert field_runs([5, 42, 33], 0) == ((0,), (1,), (2,))  # switched off


def test_a_product_table_lookup_is_the_fields_lookups_and_the_padding_row_takes_no_gradient():
    from farmcli.model.embed import gather, masked_lookup, product_ids, product_table

    torch.manual_seed(0)
    tables = [torch.nn.Embedding(4, 3, padding_idx=0), torch.nn.Embedding(5, 2), torch.nn.Embedding(3, 4)]
    ids = [
        torch.tensor([[0, 1, 3], [2, 0, 1]]),
        torch.tensor([[4, 0, 2], [1, 3, 0]]),
        torch.tensor([[2, 1, 0], [0, 2, 1]]),
    ]
    mask = torch.tensor([[True, True, False], [True, True, True]])
    got = torch.nn.functional.embedding(product_ids(tables, ids, mask), product_table(tables))
    want = gather([masked_lookup(t, i, mask) for t, i in zip(tables, ids)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    (got * torch.arange(1.0, 10.0)).sum().backward()
    assert not tables[0].weight.grad[0].any()  # real positions with the padding id still leave its row alone
    with pytest.raises(IndexError, match="out of range"):  # an id past its own table fails, as it would alone
        torch.nn.functional.embedding(product_ids(tables, [ids[0], ids[1] + 1, ids[2]], mask), product_table(tables))
