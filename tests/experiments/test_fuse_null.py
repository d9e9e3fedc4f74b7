"""``cross_attention_null`` (experiments/plugins/fuse_null.py): eq. 16-17 with a learned null live event in every
row, a research plugin outside the library."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

from farmcli import registry
from farmcli.model.config import SlotConfig
from farmcli.model.farm import FARM
from farmcli.model.fuse import CrossAttentionFuse
from tests.model.cpu.helpers import assert_same_run, run
from tests.model.helpers import VOCAB, random_batch, tiny_config


@pytest.fixture
def null_fuse():
    """The plugin class, imported afresh for each test (tests/experiments/conftest.py)."""
    return importlib.import_module("experiments.plugins.fuse_null").NullEventCrossAttentionFuse


def _inputs(b=4, lv=6, ll=5, d1=8, d2=6, dc=10):
    torch.manual_seed(0)
    video, live, cand = torch.randn(b, lv, d1), torch.randn(b, ll, d2), torch.randn(b, dc)
    video_mask = torch.ones(b, lv, dtype=torch.bool)
    live_mask = torch.ones(b, ll, dtype=torch.bool)
    live_mask[0] = False  # a user without a live event
    return video, live * live_mask.unsqueeze(-1), video_mask, live_mask, cand


def test_a_user_without_live_events_reads_the_video_history(null_fuse):
    video, live, video_mask, live_mask, cand = _inputs()
    torch.manual_seed(1)
    plain = CrossAttentionFuse(8, 6, 10, dim=8, heads=2)
    null = null_fuse(8, 6, 10, dim=8, heads=2)
    assert torch.equal(plain(video, live, video_mask, live_mask, cand)[0][0], torch.zeros(8))  # eq. 16 as written
    f0 = null(video, live, video_mask, live_mask, cand)[0][0]
    assert f0.abs().sum() > 0
    other_video = video.clone()
    other_video[0] = torch.randn(6, 8)
    assert not torch.allclose(null(other_video, live, video_mask, live_mask, cand)[0][0], f0)


def test_the_null_event_is_learned(null_fuse):
    video, live, video_mask, live_mask, cand = _inputs()
    null = null_fuse(8, 6, 10, dim=8, heads=2)
    null(video, live, video_mask, live_mask, cand)[0].sum().backward()
    assert isinstance(null.null, torch.nn.Parameter)
    assert null.null.grad is not None and null.null.grad.abs().sum() > 0


def test_a_candidate_null_event_reads_the_video_history_per_candidate(null_fuse):
    """``null='candidate'``: for a user without live events, two candidates get two F^_cross."""
    video, live, video_mask, live_mask, cand = _inputs()
    null = null_fuse(8, 6, 10, dim=8, heads=2, null="candidate")
    same_user = [t[[0, 0]] for t in (video, live, video_mask, live_mask)]
    two_candidates = torch.randn(2, 10)
    f = null(*same_user, two_candidates)[0]
    assert not torch.allclose(f[0], f[1])
    learned = null_fuse(8, 6, 10, dim=8, heads=2)
    f = learned(*same_user, two_candidates)[0]
    torch.testing.assert_close(f[0], f[1])  # one fused position: the target attention's weight is 1 on it


@pytest.mark.parametrize("null", ["output", "candidate_output"])
def test_an_output_null_keeps_eq_16_17_for_the_users_with_live_events(null, null_fuse):
    """The ``*output`` modes change only the rows without a live event (row 0 of ``_inputs``)."""
    video, live, video_mask, live_mask, cand = _inputs()
    torch.manual_seed(1)
    plain = CrossAttentionFuse(8, 6, 10, dim=8, heads=2)
    out = null_fuse(8, 6, 10, dim=8, heads=2, null=null)
    out.fuse.load_state_dict(plain.state_dict())
    want, got = plain(video, live, video_mask, live_mask, cand)[0], out(video, live, video_mask, live_mask, cand)[0]
    torch.testing.assert_close(got[1:], want[1:])
    assert got[0].abs().sum() > 0  # not eq. 16's zero


def test_a_null_output_is_one_learned_f_cross(null_fuse):
    video, live, video_mask, live_mask, cand = _inputs()
    out = null_fuse(8, 6, 10, dim=8, heads=2, null="output")
    got = out(video, live, video_mask, live_mask, cand)[0]
    assert isinstance(out.null, torch.nn.Parameter)
    torch.testing.assert_close(got[0], out.null.detach())
    got[0].sum().backward()
    assert out.null.grad is not None and out.null.grad.abs().sum() > 0


def test_a_candidate_output_reads_the_video_history_per_candidate(null_fuse):
    video, live, video_mask, live_mask, cand = _inputs()
    out = null_fuse(8, 6, 10, dim=8, heads=2, null="candidate_output")
    got = out(video, live, video_mask, live_mask, cand)[0]
    other = cand.clone()
    other[0] = torch.randn(10)
    assert not torch.allclose(out(video, live, video_mask, live_mask, other)[0][0], got[0])  # per candidate
    other_video = video.clone()
    other_video[0] = torch.randn(6, 8)
    assert not torch.allclose(out(other_video, live, video_mask, live_mask, cand)[0][0], got[0])  # reads V^_video


@pytest.mark.parametrize("null", ["learned", "candidate", "output", "candidate_output"])
def test_registered_and_the_cpu_backend_gives_the_reference_result(null, null_fuse):
    assert registry.get("fuse", "cross_attention_null") is null_fuse
    torch.manual_seed(0)
    fuse = SlotConfig("cross_attention_null", {"dim": 8, "heads": 2, "null": null})
    model = FARM(dataclasses.replace(tiny_config("farm"), fuse=fuse), VOCAB)
    batch = random_batch(16, 12, seed=2, empty_rows=[0], empty_live_rows=[1, 2, 7])
    assert_same_run(run(model, batch, "cpu"), run(model, batch, "reference"))


def test_the_analysis_weights_keep_the_papers_shape(null_fuse):
    from farmcli.model.layers import attention_weights

    video, live, video_mask, live_mask, cand = _inputs()
    null = null_fuse(8, 6, 10, dim=8, heads=2)
    with attention_weights(True):
        aux = null(video, live, video_mask, live_mask, cand)[1]
    assert aux["cross_attention"].shape == (4, 2, 5, 6) and aux["null_attention"].shape == (4, 2, 6)
    torch.testing.assert_close(aux["null_attention"].sum(-1), torch.ones(4, 2))
