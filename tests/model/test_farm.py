import pytest
import torch

from farmcli.data.schema import TASKS
from farmcli.errors import UserError
from farmcli.model import FARM, ModelConfig, SlotConfig
from farmcli.model.backends import forward
from farmcli.model.config import N_TASKS
from farmcli.variants import ablation_variants
from tests.model.helpers import VOCAB, random_batch, tiny_config

VARIANTS = [*ablation_variants(), "mmoe", "shared_bottom"]
BACKENDS = ["reference", "cpu"]


def _config(variant: str) -> ModelConfig:
    return tiny_config(head=variant) if variant in ("mmoe", "shared_bottom") else tiny_config(variant)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def test_defaults_are_the_papers():
    cfg = ModelConfig()
    assert (cfg.embed.d1, cfg.embed.d2) == (92, 64)
    assert cfg.align.name == "infonce" and cfg.head.name == "ple"
    assert N_TASKS == len(TASKS)
    model = FARM(cfg, VOCAB)
    assert model.align.tau == 0.07
    out = model(random_batch(3, 50, seed=0, empty_rows=[1]))
    assert out.logits.shape == (3, 6) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_builds_runs_and_backpropagates(variant, backend):
    torch.manual_seed(0)
    model = FARM(_config(variant), VOCAB)
    out = forward(model, random_batch(8, 12, seed=1, empty_rows=[0], empty_live_rows=[3]), backend)
    assert out.logits.shape == (8, 6) and torch.isfinite(out.logits).all()
    assert (out.cl_loss is None) == (variant in ("base", "no-cpa"))
    loss = out.logits.sum() + (out.cl_loss if out.cl_loss is not None else 0)
    loss.backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_parameter_of_farm_gets_a_finite_gradient(backend):
    torch.manual_seed(0)
    model = FARM(tiny_config("farm"), VOCAB)
    out = forward(model, random_batch(8, 12, seed=2, empty_rows=[1]), backend)
    (out.logits.sum() + out.cl_loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("variant", ["farm", "base"])
def test_padding_never_leaks_into_the_output(variant):
    torch.manual_seed(0)
    model = FARM(tiny_config(variant), VOCAB).eval()
    batch = random_batch(6, 10, seed=3, empty_rows=[2])
    noisy = dict(batch)
    g = torch.Generator().manual_seed(9)
    for key, value in batch.items():
        if key[:2] in ("v_", "l_") and not key.endswith("mask"):
            pad = ~batch[f"{key[0]}_mask"]
            noisy[key] = torch.where(pad, torch.randint(1, 5, value.shape, generator=g), value)
    assert not torch.equal(noisy["v_author"], batch["v_author"])
    clean_out, noisy_out = model(batch, return_aux=True), model(noisy, return_aux=True)  # the reference
    torch.testing.assert_close(clean_out.logits, noisy_out.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(forward(model, noisy, "cpu").logits, clean_out.logits, rtol=0, atol=1e-5)
    if variant == "farm":
        torch.testing.assert_close(clean_out.cl_loss, noisy_out.cl_loss, rtol=0, atol=1e-6)
        torch.testing.assert_close(clean_out.aux["beta"], noisy_out.aux["beta"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_padding_histories_give_finite_outputs_and_gradients(backend):
    torch.manual_seed(0)
    model = FARM(tiny_config("farm"), VOCAB)
    batch = random_batch(4, 10, seed=4, empty_rows=range(4))
    out = forward(model, batch, backend)
    assert torch.isfinite(out.logits).all() and float(out.cl_loss) == 0.0
    (out.logits.sum() + out.cl_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    aux = model(batch, return_aux=True).aux  # the reference's
    assert torch.equal(aux["cross_attention"], torch.zeros_like(aux["cross_attention"]))


def test_a_none_slot_adds_no_parameters():
    farm = FARM(tiny_config("farm"), VOCAB)
    for variant, slot in [("no-vfa", "video_frequency"), ("no-lfa", "live_frequency"), ("no-cpa", "align")]:
        other = FARM(tiny_config(variant), VOCAB)
        assert _params(getattr(other, slot)) == 0
        assert _params(other) == _params(farm) - _params(getattr(farm, slot)), variant
    no_cpf = FARM(tiny_config("no-cpf"), VOCAB)
    assert _params(no_cpf.fuse) == 0
    head_shrink = _params(farm.head) - _params(no_cpf.head)  # the head's input loses F^_cross
    assert _params(no_cpf) == _params(farm) - _params(farm.fuse) - head_shrink
    base = FARM(tiny_config("base"), VOCAB)
    assert base.preference is None  # eq. 12 exists only for align / fuse
    assert FARM(tiny_config("no-cpa"), VOCAB).preference is not None  # fuse still needs it


def test_aux_holds_what_the_analyses_need():
    model = FARM(tiny_config("farm"), VOCAB)
    aux = model(random_batch(5, 9, seed=5), return_aux=True).aux
    assert aux["cross_attention"].shape == (5, 2, 9, 9)  # [B, heads, L_live, L_video]
    for gate in ("alpha", "beta", "gamma", "delta"):
        assert aux[gate].shape == (5,) and ((aux[gate] > 0) & (aux[gate] < 1)).all()
    assert aux["h_video"].shape == aux["h_live"].shape == (5, 8)
    assert model(random_batch(5, 9, seed=5)).aux == {}


def test_config_from_yaml_shaped_dict_and_clear_errors():
    cfg = ModelConfig.from_dict(
        {
            "embed": {"author": 32},
            "fuse": "none",
            "video_frequency": {"name": "dft", "params": {"cutoff": 5}},
            "cl_weight": 0.3,
        }
    )
    assert cfg.embed.author == 32 and cfg.fuse == SlotConfig("none") and cfg.video_frequency.params == {"cutoff": 5}
    assert cfg.with_slots(align="none").align.name == "none"
    with pytest.raises(UserError, match="model.fuze"):
        ModelConfig.from_dict({"fuze": "none"})
    with pytest.raises(UserError, match="Unknown slot"):
        cfg.with_slots(decoder="none")
    bad_param = tiny_config("farm").with_slots(fuse=SlotConfig("cross_attention", {"head": 2}))
    with pytest.raises(
        UserError, match=r"model.fuse.head: .*no parameter 'head'. Did you mean 'heads'\? It takes: dim, heads"
    ):
        FARM(bad_param, VOCAB)
    with pytest.raises(UserError, match="Unknown head component 'xgb'"):
        FARM(tiny_config("farm", head="xgb"), VOCAB)
    with pytest.raises(UserError, match="lack user"):
        FARM(tiny_config("farm"), {k: v for k, v in VOCAB.items() if k != "user"})


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_masks_work_like_bool_masks(backend):
    model = FARM(tiny_config("farm"), VOCAB).eval()
    batch = random_batch(4, 8, seed=11)
    as_uint8 = {**batch, "v_mask": batch["v_mask"].to(torch.uint8), "l_mask": batch["l_mask"].to(torch.uint8)}
    torch.testing.assert_close(forward(model, as_uint8, backend).logits, forward(model, batch, backend).logits)
