"""The CPU backend's forward pass (model/cpu/farm.py) equals the reference's: logits, L_cl and every
parameter's gradient, for every variant and head, with each speed-up switch turned off one at a time."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from farmcli.model.backends import forward
from farmcli.model.config import ModelConfig
from farmcli.model.cpu.options import SWITCHES, CpuOptions, current, options
from farmcli.model.farm import FARM
from farmcli.variants import ablation_variants
from tests.model.cpu.helpers import Run, assert_same_run, run
from tests.model.helpers import TINY_EMBED, VOCAB, random_batch, tiny_config

VARIANTS = [*ablation_variants(), "mmoe", "shared_bottom"]
B, L = 24, 12


def config(variant: str, **changes) -> ModelConfig:
    """A tiny config whose video width, 46 = 2 heads of 23, gets the attention's lane padding (heads of 24)."""
    cfg = tiny_config(head=variant) if variant in ("mmoe", "shared_bottom") else tiny_config(variant)
    return dataclasses.replace(cfg, embed=dataclasses.replace(TINY_EMBED, video_label=34), **changes)


def batch(seed: int = 3) -> dict[str, torch.Tensor]:
    """Rows without any history, rows without a live event, users repeating."""
    return random_batch(B, L, seed=seed, empty_rows=[0, 5], empty_live_rows=[1, 2, 9, 17])


@functools.cache
def _model_and_reference(variant: str) -> tuple[FARM, Run]:
    torch.manual_seed(0)
    model = FARM(config(variant), VOCAB)
    return model, run(model, batch(), "reference")


@pytest.mark.parametrize("switch", [None, *SWITCHES], ids=lambda s: "all-on" if s is None else f"no-{s}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cpu_backend_equals_the_reference(variant, switch):
    model, want = _model_and_reference(variant)
    with options(**({} if switch is None else {switch: False})):
        got = run(model, batch(), "cpu")
    assert_same_run(got, want)
    assert (got.cl_loss is None) == (variant in ("base", "no-cpa"))


def test_the_config_exercises_head_padding():
    from farmcli.model.cpu.attention import head_pad

    model, _ = _model_and_reference("farm")
    assert model.preference is not None
    assert head_pad(model.preference.video.attn) == 1
    with options(lanes=False):
        assert head_pad(model.preference.video.attn) == 0


@pytest.mark.parametrize("variant", ["farm", "no-cpa", "no-cpf", "no-lfa"])
def test_the_preference_gradient_into_the_embeddings_is_the_same(variant):
    torch.manual_seed(0)
    model = FARM(config(variant, preference_grad=1.0), VOCAB)
    want = run(model, batch(4), "reference")
    assert_same_run(run(model, batch(4), "cpu"), want)
    with options(live_rows_only=False):
        assert_same_run(run(model, batch(4), "cpu"), want)


@pytest.mark.parametrize(
    "rows",
    [
        {"empty_live_rows": range(B)},  # no live event at all: no row to skip to
        {"empty_rows": range(B)},  # nothing at all
        {"empty_rows": [3], "empty_live_rows": [4]},
    ],
    ids=["no-live-event", "no-history", "one-empty-row"],
)
@pytest.mark.parametrize("variant", ["farm", "base"])
def test_batches_with_few_or_no_events_give_the_reference_result(variant, rows):
    model, _ = _model_and_reference(variant)
    b = random_batch(B, L, seed=5, **rows)
    assert_same_run(run(model, b, "cpu"), run(model, b, "reference"))


@pytest.mark.parametrize("variant", ["farm", "no-cpf"])
def test_full_and_sorted_batches_give_the_reference_result(variant):
    """Every live history full (one group, nothing to trim), and a batch already in span order (no reordering)."""
    from farmcli.model.cpu.ragged import span_order, take_rows

    model, _ = _model_and_reference(variant)
    full = random_batch(8, L, seed=6)
    full["l_mask"] = torch.ones_like(full["l_mask"])
    assert_same_run(run(model, full, "cpu"), run(model, full, "reference"))
    b = batch(7)
    order = span_order(b["l_mask"])
    assert order is not None
    ordered = take_rows(b, order)
    assert span_order(ordered["l_mask"]) is None
    assert_same_run(run(model, ordered, "cpu"), run(model, ordered, "reference"))


def test_one_row_and_no_cl():
    model, _ = _model_and_reference("farm")
    one = random_batch(1, L, seed=8)
    assert_same_run(run(model, one, "cpu"), run(model, one, "reference"))
    without_cl = run(model, batch(), "cpu", with_cl=False)
    assert without_cl.cl_loss is None
    assert_same_run(without_cl, run(model, batch(), "reference", with_cl=False))


@pytest.mark.parametrize("trim_live", [True, False])
def test_dft_identity_on_the_live_side_is_the_same(trim_live):
    from farmcli.model.config import SlotConfig

    torch.manual_seed(0)
    model = FARM(config("farm", live_frequency=SlotConfig("dft_identity")), VOCAB)
    with options(trim_live=trim_live):
        assert_same_run(run(model, batch(6), "cpu"), run(model, batch(6), "reference"))


def test_another_history_length_than_the_basis_was_made_for():
    model, _ = _model_and_reference("farm")
    frequency = model.live_frequency
    assert getattr(frequency, "dft", frequency).basis.shape[0] == L
    longer = random_batch(B, 20, seed=9, empty_rows=[1], empty_live_rows=[2])
    assert_same_run(run(model, longer, "cpu"), run(model, longer, "reference"))


def test_no_gradient_mode_gives_the_reference_logits():
    model, _ = _model_and_reference("farm")
    with torch.no_grad():
        got, want = forward(model, batch(), "cpu"), model(batch())
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got.cl_loss, want.cl_loss, atol=1e-5, rtol=1e-4)


def test_options_hold_inside_their_block_only():
    assert current() == CpuOptions() and all(getattr(current(), s) for s in SWITCHES)
    assert SWITCHES == tuple(f.name for f in dataclasses.fields(CpuOptions))
    with options(lanes=False) as outer:
        assert outer is current() and not outer.lanes and outer.buckets
        with options(buckets=False):
            assert not current().lanes and not current().buckets
        assert current() == outer
    assert current() == CpuOptions()
    with pytest.raises(TypeError):
        with options(no_such_switch=False):
            pass
