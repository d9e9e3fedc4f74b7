"""Live rows run on their own length (model/ragged.py): same outputs and gradients as at full length."""

from __future__ import annotations

import pytest
import torch

from farmcli.model.farm import FARM
from farmcli.model.ragged import LengthGroups
from tests.model.helpers import VOCAB, random_batch, tiny_config


def _run(model: FARM, batch: dict[str, torch.Tensor], buckets: tuple[int, ...] | None):
    model.length_buckets = buckets
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = out.logits.sum() + (out.cl_loss if out.cl_loss is not None else 0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), None if out.cl_loss is None else out.cl_loss.detach(), grads


@pytest.mark.parametrize("variant", ["farm", "no-cpa", "no-cpf", "no-lfa"])
@pytest.mark.parametrize("buckets", [(2, 4), (1,), ()])
def test_length_groups_give_the_full_length_result(variant, buckets):
    torch.manual_seed(0)
    model = FARM(tiny_config(variant), VOCAB)
    batch = random_batch(64, 12, seed=3, empty_rows=[0, 5], empty_live_rows=[1, 2, 9])
    full, grouped = _run(model, batch, None), _run(model, batch, buckets)
    torch.testing.assert_close(grouped[0], full[0], rtol=1e-5, atol=1e-6)
    if full[1] is not None:
        torch.testing.assert_close(grouped[1], full[1], rtol=1e-5, atol=1e-6)
    assert grouped[2].keys() == full[2].keys()
    for name, grad in full[2].items():
        if name.endswith("attn.k.bias"):  # softmax ignores a bias added to every key: its gradient is rounding noise
            continue
        torch.testing.assert_close(grouped[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_groups_keep_every_real_event_whatever_the_mask():
    mask = torch.tensor(
        [
            [0, 0, 0, 0, 0, 1],  # left-padded, length 1
            [0, 0, 0, 0, 0, 0],  # empty
            [0, 1, 0, 0, 1, 0],  # holes: the span is 5, not the length 2
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    groups = LengthGroups.of(mask, bounds=(2, 4))
    assert sum(groups.sizes) == 4 and sorted(groups.perm.tolist()) == [0, 1, 2, 3]
    start = 0
    for size, keep in zip(groups.sizes, groups.keep, strict=True):
        rows = groups.perm[start : start + size]
        start += size
        assert mask[rows, : mask.shape[1] - keep].sum() == 0  # nothing real is cut off
    values = torch.arange(24.0).view(4, 6, 1) * mask.unsqueeze(-1)
    out = groups.apply(lambda x, m: x * m.unsqueeze(-1), sequences=(values, mask))
    torch.testing.assert_close(out, values)
    rows_out = groups.apply(lambda x, m: x.sum(1), sequences=(values, mask), sequence_output=False)
    torch.testing.assert_close(rows_out, values.sum(1))


def test_permute_rows_gradient_is_the_inverse_gather():
    from farmcli.model.ragged import permute_rows

    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(perm)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.equal(permute_rows(x, perm, inverse), x[perm])
    assert torch.autograd.gradcheck(lambda t: permute_rows(t, perm, inverse), (x,))
