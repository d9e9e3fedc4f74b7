"""Live rows run on their own length, the video self-attention only on rows with a live event (model/ragged.py):
same outputs and gradients as computing every row at full length."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from farmcli.model.farm import FARM
from farmcli.model.fuse import CrossAttentionFuse
from farmcli.model.ragged import LengthGroups, Trimmed
from tests.model.helpers import VOCAB, random_batch, tiny_config


def _run(
    model: FARM,
    batch: dict[str, torch.Tensor],
    buckets: tuple[int, ...] | None,
    live_rows_only: bool = False,
    sort_rows: bool = True,
):
    model.length_buckets = buckets
    model.live_rows_only = live_rows_only
    model.sort_rows = sort_rows
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = out.logits.sum() + (out.cl_loss if out.cl_loss is not None else 0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), None if out.cl_loss is None else out.cl_loss.detach(), grads


@pytest.mark.parametrize("variant", ["farm", "no-cpa", "no-cpf", "no-lfa", "base"])
@pytest.mark.parametrize("buckets", [(2, 4), (1,), ()])
@pytest.mark.parametrize("sort_rows", [True, False])
def test_length_groups_give_the_full_length_result(variant, buckets, sort_rows):
    torch.manual_seed(0)
    model = FARM(tiny_config(variant), VOCAB)
    batch = random_batch(64, 12, seed=3, empty_rows=[0, 5], empty_live_rows=[1, 2, 9])
    full, grouped = _run(model, batch, None), _run(model, batch, buckets, sort_rows=sort_rows)
    torch.testing.assert_close(grouped[0], full[0], rtol=1e-5, atol=1e-6)
    if full[1] is not None:
        torch.testing.assert_close(grouped[1], full[1], rtol=1e-5, atol=1e-6)
    assert grouped[2].keys() == full[2].keys()
    for name, grad in full[2].items():
        if name.endswith("attn.k.bias"):  # softmax ignores a bias added to every key: its gradient is rounding noise
            continue
        torch.testing.assert_close(grouped[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _assert_same(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    if want[1] is not None:
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    assert got[2].keys() == want[2].keys()
    for name, grad in want[2].items():
        if name.endswith("attn.k.bias"):  # rounding noise, as above
            continue
        torch.testing.assert_close(got[2][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("variant", ["farm", "no-cpa", "no-cpf", "no-lfa"])
@pytest.mark.parametrize("preference_grad", [0.0, 1.0])
@pytest.mark.parametrize("sort_rows", [True, False])
def test_video_preference_on_live_rows_only_gives_the_full_result(variant, preference_grad, sort_rows):
    torch.manual_seed(0)
    model = FARM(dataclasses.replace(tiny_config(variant), preference_grad=preference_grad), VOCAB)
    assert model.live_rows_only  # both consumers of V^_video declare it
    batch = random_batch(64, 12, seed=4, empty_rows=[0, 5], empty_live_rows=[1, 2, 9, 30, 31])
    _assert_same(_run(model, batch, (2, 4), True, sort_rows), _run(model, batch, None))
    no_live = random_batch(16, 12, seed=5, empty_live_rows=range(16))  # no row to compute at all
    _assert_same(_run(model, no_live, (2, 4), True, sort_rows), _run(model, no_live, None))


def test_a_live_frequency_module_without_trailing_positions_gets_the_whole_history(monkeypatch):
    torch.manual_seed(0)
    model = FARM(tiny_config("farm"), VOCAB)
    seen: list[int] = []

    def whole_only(v, mask):  # no ``length``: a module that does not take trailing positions
        seen.append(v.shape[1])
        return type(model.live_frequency).forward(model.live_frequency, v, mask)

    monkeypatch.setattr(model, "live_trailing", False)
    monkeypatch.setattr(model.live_frequency, "forward", whole_only)
    batch = random_batch(32, 12, seed=6, empty_live_rows=[1, 2])
    grouped = _run(model, batch, (2, 4))
    assert seen == [12]
    _assert_same(grouped, _run(model, batch, None))


def test_a_component_without_the_flag_gets_every_video_row(monkeypatch):
    monkeypatch.setattr(CrossAttentionFuse, "live_rows_only", False)
    assert not FARM(tiny_config("farm"), VOCAB).live_rows_only
    assert FARM(tiny_config("no-cpf"), VOCAB).live_rows_only  # no fuse: the align alone decides


def test_span_order_sorts_rows_by_span_and_groups_are_then_slices():
    from farmcli.model.ragged import span, span_order, take_rows

    mask = torch.tensor([[0, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    order = span_order(mask)
    assert order is not None and order.tolist() == [1, 3, 0, 2]
    batch = take_rows({"l_mask": mask, "ids": torch.arange(4), "scalar": torch.tensor(7)}, order)
    assert batch["ids"].tolist() == [1, 3, 0, 2] and batch["scalar"].item() == 7
    assert span(batch["l_mask"]).tolist() == [0, 1, 2, 3]
    assert span_order(batch["l_mask"]) is None  # already in order
    groups = LengthGroups.of(batch["l_mask"], bounds=(1,))
    assert groups.in_order and groups.sizes == (2, 2) and groups.keep == (1, 3)
    assert not LengthGroups.of(mask, bounds=(1,)).in_order


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
    rows_out = groups.apply(lambda x, m: x.sum(1), sequences=(values, mask), output="rows")
    torch.testing.assert_close(rows_out, values.sum(1))
    # an output of apply read again: its trimmed pieces are reused, with the same result as splitting it anew
    assert groups._trimmed(out, torch.argsort(groups.perm)) is groups._pieces[0][1]
    again = groups.apply(lambda x, m: x.sum(1), sequences=(out, mask), output="rows")
    torch.testing.assert_close(again, values.sum(1))
    # a history held trimmed (the embedding's live output) gives the same as the whole one, and pads back to it
    index = groups.trailing_index()
    trimmed = Trimmed.of_rows(groups, values.reshape(-1, 1)[index])
    torch.testing.assert_close(trimmed.padded(), values)
    torch.testing.assert_close(
        groups.apply(lambda x, m: x.sum(1), sequences=(trimmed, mask), output="rows"), values.sum(1)
    )
    doubled = groups.apply(lambda x, m: 2 * x, sequences=(trimmed, mask), output="trimmed")
    assert isinstance(doubled, Trimmed)
    torch.testing.assert_close(doubled.padded(), 2 * values)


def test_rows_from_drops_the_leading_rows_of_a_sorted_batch():
    mask = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    groups = LengthGroups.of(mask, bounds=(1, 2))
    assert groups.in_order and groups.sizes == (3, 1, 1) and groups.keep == (1, 2, 3)
    values = torch.arange(15.0).view(5, 3, 1) * mask.unsqueeze(-1)
    trimmed = Trimmed.of_rows(groups, values.reshape(-1, 1)[groups.trailing_index()])
    for start in range(5):
        tail = trimmed.rows_from(start)
        assert sum(tail.groups.sizes) == 5 - start and [p.shape[0] for p in tail.pieces] == list(tail.groups.sizes)
        torch.testing.assert_close(tail.padded(), values[start:])
    assert trimmed.rows_from(3).groups.keep == (2, 3)  # the first group is gone


def test_permute_rows_gradient_is_the_inverse_gather():
    from farmcli.model.ragged import permute_rows

    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(perm)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.equal(permute_rows(x, perm, inverse), x[perm])
    assert torch.autograd.gradcheck(lambda t: permute_rows(t, perm, inverse), (x,))
