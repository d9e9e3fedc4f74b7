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
