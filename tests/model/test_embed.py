"""The reference embedding layer (eq. 8): per-field lookups side by side, zero at padding whatever ids it holds.
Its CPU form is tested in tests/model/cpu/test_embed.py."""

import pytest
import torch

from farmcli.batch import CANDIDATE_FIELDS, HISTORY_FIELDS
from farmcli.model.config import EmbedConfig, VocabSizes
from farmcli.model.embed import EmbeddingLayer
from tests.model.helpers import VOCAB, random_batch


def _layer() -> EmbeddingLayer:
    torch.manual_seed(0)
    return EmbeddingLayer(EmbedConfig(), VocabSizes.parse(VOCAB))


def test_shapes_and_tables():
    layer, cfg = _layer(), EmbedConfig()
    batch = random_batch(5, 7, seed=2)
    v_video, v_live, x_cand = layer(batch)
    assert v_video.shape == (5, 7, cfg.d1) and v_live.shape == (5, 7, cfg.d2) and x_cand.shape == (5, cfg.cand_dim)
    # id tables are shared by the candidate and both histories; behaviour tables are per domain
    assert layer.tables("v")[0] is layer.tables("l")[0] is layer.ids["author"]
    assert layer.tables("v")[-1] is layer.video["label"] and layer.tables("l")[-1] is layer.live["label"]
    for prefix in "vl":
        assert len(layer.tables(prefix)) == len(HISTORY_FIELDS[prefix])
        want = torch.cat([t(batch[f"{prefix}_{f}"]) for t, f in zip(layer.tables(prefix), HISTORY_FIELDS[prefix])], -1)
        torch.testing.assert_close(layer.history(batch, prefix), want * batch[f"{prefix}_mask"].unsqueeze(-1))
    torch.testing.assert_close(x_cand, torch.cat([layer.ids[f](batch[f]) for f in CANDIDATE_FIELDS], -1))
    for table in layer.ids.values():
        assert table.padding_idx == 0 and not table.weight[0].any()  # id 0 is padding, zero from the start
    assert all(t.padding_idx is None for t in layer.video.values())  # bucket 0 of play / lag is a real value


@pytest.mark.parametrize("prefix", ["v", "l"])
def test_padded_positions_are_zero_whatever_ids_they_hold_and_take_no_gradient(prefix):
    batch = random_batch(48, 10, seed=7, empty_rows=[3])
    mask = batch[f"{prefix}_mask"]
    noisy = dict(batch)
    generator = torch.Generator().manual_seed(1)
    for f in HISTORY_FIELDS[prefix]:  # padding holding ids of real rows, bucket 0 included
        key = f"{prefix}_{f}"
        noisy[key] = torch.where(mask, batch[key], torch.randint(0, 3, batch[key].shape, generator=generator))
    assert not torch.equal(noisy[f"{prefix}_author"], batch[f"{prefix}_author"])
    layer = _layer()
    grads = []
    for b in (batch, noisy):
        out = layer.history(b, prefix)
        assert not out[~mask].any() and out[mask].abs().sum(-1).gt(0).all()
        layer.zero_grad(set_to_none=True)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    torch.testing.assert_close(layer.history(noisy, prefix), layer.history(batch, prefix), rtol=0, atol=0)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():  # the ids at padding get nothing
        torch.testing.assert_close(grads[1][name], grad, msg=name)
