"""Live rows run on their own length, eq. 12-17 only on rows with a live event (model/cpu/ragged.py,
farm.py): the same outputs and gradients as the reference, which computes every row at full length. A
component the backend does not know (a plugin) gets what the reference gives it: the padded history, every row.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from farmcli.model.cpu import attention
from farmcli.model.cpu import farm as cpu_farm
from farmcli.model.cpu.options import options
from farmcli.model.cpu.ragged import LengthGroups, Trimmed, permute_rows, span, span_order, take_rows
from farmcli.model.farm import FARM
from tests.model.cpu.helpers import Run, assert_same_run, run
from tests.model.helpers import VOCAB, random_batch, tiny_config

B, L = 48, 12


def _batch() -> dict[str, torch.Tensor]:
    return random_batch(B, L, seed=3, empty_rows=[0, 5], empty_live_rows=[1, 2, 9])


@functools.cache
def _model_and_reference(variant: str) -> tuple[FARM, Run]:
    torch.manual_seed(0)
    model = FARM(tiny_config(variant), VOCAB)
    return model, run(model, _batch(), "reference")


@pytest.mark.parametrize("variant", ["farm", "no-cpa", "no-cpf", "no-lfa", "base"])
@pytest.mark.parametrize("buckets", [(2, 4), (1,), ()])
@pytest.mark.parametrize("sort_rows", [True, False])
def test_length_groups_give_the_full_length_result(variant, buckets, sort_rows, monkeypatch):
    monkeypatch.setattr(cpu_farm, "BUCKETS", buckets)
    model, want = _model_and_reference(variant)
    with options(sort_rows=sort_rows):
        assert_same_run(run(model, _batch(), "cpu"), want)


class _Rows:
    """Records the rows of the video history that the backend's self-attention reads (eq. 12)."""

    def __init__(self, monkeypatch):
        self.seen: list[int] = []
        self_attention = attention.self_attention

        def recording(m, x, mask):
            if m is self.video:
                self.seen.append(x.shape[0])
            return self_attention(m, x, mask)

        self.video: nn.Module | None = None
        monkeypatch.setattr(attention, "self_attention", recording)


@pytest.mark.parametrize("variant", ["farm", "no-cpa", "no-cpf", "no-lfa"])
@pytest.mark.parametrize("preference_grad", [0.0, 1.0])
@pytest.mark.parametrize("sort_rows", [True, False])
def test_eq_12_to_17_on_live_rows_only_give_the_full_result(variant, preference_grad, sort_rows, monkeypatch):
    torch.manual_seed(0)
    model = FARM(dataclasses.replace(tiny_config(variant), preference_grad=preference_grad), VOCAB)
    rows = _Rows(monkeypatch)
    rows.video = model.preference.video
    no_live = [1, 2, 9, 30, 31]
    batch = random_batch(B, L, seed=4, empty_rows=[0, 5], empty_live_rows=no_live)
    with options(sort_rows=sort_rows):
        assert_same_run(run(model, batch, "cpu"), run(model, batch, "reference"))
        # sorted by span, the rows without a live event come first and are skipped; unsorted, none is
        assert rows.seen == [B - len(no_live) - 2 if sort_rows else B]
        rows.seen.clear()
        no_live_at_all = random_batch(16, L, seed=5, empty_live_rows=range(16))  # no row to compute at all
        assert_same_run(run(model, no_live_at_all, "cpu"), run(model, no_live_at_all, "reference"))
        assert rows.seen == [16]  # then every row


class PaddedOnlyFrequency(nn.Module):
    """A plugin frequency module (not one ``cpu.frequency.runs_on_trailing``): the built-in one, recording its
    inputs."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, v, mask):
        self.shapes.append(tuple(v.shape))
        return self.inner(v, mask)


@pytest.mark.parametrize("slot", ["live_frequency", "video_frequency"])
def test_a_plugin_frequency_module_gets_the_padded_history(slot, monkeypatch):
    torch.manual_seed(0)
    model = FARM(tiny_config("farm"), VOCAB)
    plugin = PaddedOnlyFrequency(getattr(model, slot))
    setattr(model, slot, plugin)
    trailing: list[int] = []
    frequency = cpu_farm.frequency

    def recording(m, v, mask, length=None):
        if m is model.live_frequency:
            trailing.append(v.shape[1])
        return frequency(m, v, mask, length)

    monkeypatch.setattr(cpu_farm, "frequency", recording)
    batch = random_batch(32, L, seed=6, empty_live_rows=[1, 2])
    want = run(model, batch, "reference")
    plugin.shapes.clear()
    assert_same_run(run(model, batch, "cpu"), want)
    dim = model.embed.history(batch, slot[0]).shape[-1]
    assert plugin.shapes == [(32, L, dim)]  # once, the whole batch at full length
    if slot == "video_frequency":  # the built-in live module still runs on each group's trailing positions
        assert trailing and max(trailing) <= L and min(trailing) < L
    else:
        assert not trailing


class _Recording(nn.Module):
    """A plugin align or fuse (not in cpu/farm.LIVE_ROWS_ONLY): the built-in one, recording the rows it gets."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.uses_preference = inner.uses_preference
        self.out_dim = getattr(inner, "out_dim", None)
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def forward(self, video, live, *rest):
        self.shapes.append((tuple(video.shape), tuple(live.shape)))
        return self.inner(video, live, *rest)


@pytest.mark.parametrize("slot", ["align", "fuse"])
@pytest.mark.parametrize("sort_rows", [True, False])
def test_a_plugin_align_or_fuse_makes_the_backend_compute_every_row(slot, sort_rows, monkeypatch):
    torch.manual_seed(0)
    model = FARM(tiny_config("farm"), VOCAB)
    plugin = _Recording(getattr(model, slot))
    setattr(model, slot, plugin)
    rows = _Rows(monkeypatch)
    rows.video = model.preference.video
    batch = random_batch(32, L, seed=7, empty_rows=[3], empty_live_rows=[1, 2, 8])
    want = run(model, batch, "reference")
    plugin.shapes.clear()
    with options(sort_rows=sort_rows):
        assert_same_run(run(model, batch, "cpu"), want)
    assert rows.seen == [32]
    d1, d2 = model.cfg.embed.d1, model.cfg.embed.d2
    assert plugin.shapes == [((32, L, d1), (32, L, d2))]  # every row, padded to L


def test_span_order_sorts_rows_by_span_and_groups_are_then_slices():
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


def test_one_full_group_runs_the_batch_as_it_is():
    mask = torch.ones(3, 5, dtype=torch.bool)
    groups = LengthGroups.of(mask, bounds=(2,))
    assert groups.in_order and groups.sizes == (3,) and groups.keep == (5,)
    values = torch.randn(3, 5, 2)
    assert groups.apply(lambda x, m: x, sequences=(values, mask)) is values  # nothing trimmed, moved or padded


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
    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(perm)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.equal(permute_rows(x, perm, inverse), x[perm])
    assert torch.autograd.gradcheck(lambda t: permute_rows(t, perm, inverse), (x,))
