import importlib.metadata
import sys
import textwrap

import pytest

from farmcli import registry
from farmcli.errors import UserError


@pytest.fixture
def clean_registry(monkeypatch):
    """Undo registrations and the loaded flag, so fake plugins do not outlive their test."""
    registry.load_plugins()
    saved = {slot: dict(names) for slot, names in registry._components.items()}
    yield
    for slot, names in saved.items():
        registry._components[slot].clear()
        registry._components[slot].update(names)
    registry._loaded = True
    sys.modules.pop("farmcli_fake_plugin", None)


def test_builtins_are_listed():
    assert registry.list("video_frequency") == ["dft", "dft_identity", "none"]
    assert registry.list("live_frequency") == ["dft", "dft_identity", "none"]
    assert registry.list("align") == ["infonce", "none"]
    assert registry.list("fuse") == ["cross_attention", "none"]  # cross_attention_null: experiments/plugins
    assert set(registry.list("head")) >= {"ple", "mmoe", "shared_bottom"}
    assert set(registry.list()) == set(registry.SLOTS)
    assert registry.list_components is registry.list


def test_unknown_name_names_the_known_ones():
    with pytest.raises(UserError, match=r"Unknown fuse component 'attn'.*cross_attention, none"):
        registry.get("fuse", "attn")


def test_unknown_slot_names_the_known_ones():
    with pytest.raises(UserError, match="Known slots: video_frequency, live_frequency, align, fuse, head"):
        registry.get("decoder", "x")
    with pytest.raises(UserError):
        registry.register("decoder", "x")


def test_a_second_component_under_a_taken_name_is_refused(clean_registry):
    with pytest.raises(ValueError, match="already registered"):

        @registry.register("fuse", "cross_attention")
        class Other:
            pass


def test_entry_point_from_an_installed_distribution(tmp_path, monkeypatch, clean_registry):
    """A real (tiny) installed package: a dist-info with an entry point in group farmcli.plugins."""
    (tmp_path / "farmcli_fake_plugin.py").write_text(
        textwrap.dedent("""
        from farmcli.registry import register

        @register("fuse", "fake_fuse")
        class FakeFuse:
            pass
    """)
    )
    info = tmp_path / "farmcli_fake_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: farmcli-fake-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[farmcli.plugins]\nfake = farmcli_fake_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._loaded = False

    component = registry.get("fuse", "fake_fuse")
    assert component.__name__ == "FakeFuse"
    assert "fake_fuse" in registry.list("fuse")


def test_callable_entry_point_is_called_once(monkeypatch, clean_registry):
    calls = []

    def setup():
        calls.append(1)
        registry.register("head", "fake_head")(type("FakeHead", (), {}))

    class FakeEntryPoint:
        name, value = "fake", "fake:setup"

        def load(self):
            return setup

    def entry_points(group=None, **kw):
        return [FakeEntryPoint()] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry._loaded = False
    assert registry.get("head", "fake_head").__name__ == "FakeHead"
    registry.list("head")
    assert calls == [1]


def test_a_broken_plugin_warns_and_leaves_the_builtins(monkeypatch, clean_registry):
    class Broken:
        name, value = "broken", "nowhere:x"

        def load(self):
            raise ImportError("no module named nowhere")

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None, **kw: [Broken()])
    registry._loaded = False
    with pytest.warns(UserWarning, match="broken"):
        assert registry.get("head", "ple").__name__ == "PLE"


def test_one_slot_list_and_every_builtin_meets_its_contract():
    from farmcli import slots
    from farmcli.model.config import SLOT_FIELDS, ModelConfig, SlotConfig
    from farmcli.model.farm import build
    from tests.model.helpers import TINY_PARAMS

    assert (
        registry.SLOTS
        == SLOT_FIELDS
        == slots.SLOT_NAMES
        == tuple(f for f in ModelConfig().to_dict() if f in slots.SLOTS)
    )
    widths = {"dim": 8, "length": 10, "video_dim": 8, "live_dim": 8, "cand_dim": 8, "in_dim": 8, "n_tasks": 6}
    for slot, spec in slots.SLOTS.items():
        for name in registry.list(slot):
            params = {k: v for k, v in TINY_PARAMS.get(name, {}).items() if k not in widths}
            component = build(slot, SlotConfig(name, params), **{k: widths[k] for k in spec.injected})
            assert isinstance(component, spec.protocol), (slot, name)


def test_a_component_missing_a_contract_attribute_is_refused(clean_registry):
    from torch import nn

    from farmcli.model.config import SlotConfig
    from farmcli.model.farm import build

    @registry.register("fuse", "no_width")
    class NoWidth(nn.Module):  # forgets out_dim (and uses_preference)
        def __init__(self, video_dim: int, live_dim: int, cand_dim: int):
            super().__init__()

        def forward(self, video, live, video_mask, live_mask, x_cand):
            return None, {}

    with pytest.raises(UserError, match=r"fuse 'no_width' \(.*NoWidth\) lacks uses_preference, out_dim.*slots\.Fuse"):
        build("fuse", SlotConfig("no_width"), video_dim=4, live_dim=4, cand_dim=4)


def test_a_frequency_plugin_is_built_with_the_width_and_the_history_length(clean_registry):
    import torch
    from torch import nn

    from farmcli.model.farm import FARM
    from tests.model.helpers import VOCAB, random_batch, tiny_config

    built: list[tuple[int, int, float]] = []

    @registry.register("live_frequency", "scaled")
    class Scaled(nn.Module):
        def __init__(self, dim: int, length: int, scale: float = 1.0):
            super().__init__()
            built.append((dim, length, scale))
            self.scale = nn.Parameter(torch.tensor(scale))

        def forward(self, v, mask):
            return v * self.scale, None

    cfg = tiny_config("farm").with_slots(live_frequency={"name": "scaled", "params": {"scale": 2.0}})
    model = FARM(cfg, VOCAB)
    assert built == [(cfg.embed.d2, VOCAB["history_len"], 2.0)]
    out = model(random_batch(6, 9, seed=1, empty_live_rows=[2]))  # any backend calls it as (V, mask)
    out.logits.sum().backward()
    assert model.live_frequency.scale.grad is not None
