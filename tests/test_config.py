import pytest
import yaml
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.config import pairs_of, resolve
from farmcli.errors import UserError
from farmcli.variants import all_variants, builtin_names

runner = CliRunner()


def test_defaults_are_farm_with_its_recipe_and_the_paper_variant_is_one_word_away():
    cfg = resolve()
    assert cfg.variant == "farm" and cfg.data.history_len == 50
    assert (cfg.model.embed.d1, cfg.model.embed.d2) == (92, 64)
    slots = ("video_frequency", "live_frequency", "align", "fuse", "head")
    assert [getattr(cfg.model, s).name for s in slots] == ["dft", "dft_identity", "infonce", "cross_attention", "ple"]
    assert (cfg.model.preference_grad, cfg.optim.id_weight_decay) == (0.1, 1e-5)  # DESIGN.md "Where we depart"
    paper = resolve(variant="paper")
    assert [getattr(paper.model, s).name for s in slots] == ["dft", "dft", "infonce", "cross_attention", "ple"]
    assert (paper.model.preference_grad, paper.optim.id_weight_decay) == (1.0, 0.0)


def test_layer_order_defaults_config_variant_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"model": {"align": "none", "cl_weight": 0.3}, "optim": {"lr": 0.01}}))
    assert resolve([f]).model.align.name == "none"
    cfg = resolve([f], variant="farm", overrides=["--optim.lr", "0.002", "model.fuse.heads=2"])
    assert cfg.model.align.name == "infonce"  # the variant beats the config file
    assert cfg.model.cl_weight == 0.3  # untouched by the variant
    assert cfg.optim.lr == 0.002  # the override beats the config file
    assert cfg.model.fuse.params["heads"] == 2  # a slot key is a component parameter
    assert cfg.model.fuse.params["dim"] == 64  # the component's other defaults are spelled out
    assert cfg.variant == "farm"


def test_changing_a_slot_component_drops_the_old_params(tmp_path):
    cfg = resolve(overrides=["model.video_frequency.cutoff=5"])
    assert cfg.model.video_frequency.params["cutoff"] == 5
    cfg = resolve(overrides={"model": {"video_frequency": {"name": "dft", "params": {"cutoff": 5}}}}, variant="no-vfa")
    assert cfg.model.video_frequency.name == "dft"  # overrides come last
    assert resolve(variant="no-vfa").model.video_frequency.params == {}
    assert resolve(overrides=["--model.align.name", "none"]).model.align.params == {}


@pytest.mark.parametrize(
    "bad", [["--model.embd.author", "3"], ["--trainer.max_epochs", "many"], ["--data.batch_size", "[1, 2]"]]
)
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError, match="Bad setting"):
        resolve(overrides=bad)


def test_override_parsing():
    assert pairs_of(["--a.b", "3", "--c.d=[1, 2]", "e.f=none", "--g.h", "-1"]) == [
        ("a.b", "3"),
        ("c.d", "[1, 2]"),
        ("e.f", "none"),
        ("g.h", "-1"),
    ]
    with pytest.raises(UserError, match="needs a value"):
        pairs_of(["--dangling.key"])
    cfg = resolve(overrides=["--data.batch_size", "512", "--model.fuse=none", "model.head.levels=2"])
    assert (cfg.data.batch_size, cfg.model.fuse.name, cfg.model.head.params["levels"]) == (512, "none", 2)


def test_every_variant_resolves_and_builds_a_model():
    from farmcli.model import FARM

    names = builtin_names()
    assert {"farm", "base", "no-vfa", "no-lfa", "no-cpa", "no-cpf", "mmoe"} <= set(names)
    vocab = {"author": 20, "page": 4, "tag": 6, "cluster": 5, "user": 9}
    for v in all_variants():
        assert v.description
        cfg = resolve(variant=v.name)
        FARM(cfg.model, vocab)
    assert resolve(variant="mmoe").model.head.name == "mmoe"
    assert resolve(variant="base").model.align.name == "none"


def test_the_ablation_set_is_read_from_the_variant_files(tmp_path):
    from farmcli.variants import ablation_variants, load_variant

    # Table 1's rows, in the order of the ablation_order keys of variants/*.yaml
    assert ablation_variants() == ["base", "farm", "no-vfa", "no-lfa", "no-cpa", "no-cpf"]
    assert load_variant("mmoe").ablation_order is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("ablation_order: first\nmodel: {align: none}\n")
    with pytest.raises(UserError, match="ablation_order = 'first': expected an integer"):
        load_variant(str(bad))


def test_variant_from_a_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("description: mine\nmodel:\n  head: shared_bottom\n")
    cfg = resolve(variant=str(f))
    assert cfg.variant == "mine" and cfg.model.head.name == "shared_bottom"


def test_cli_print_config_round_trips(tmp_path):
    r = runner.invoke(
        app, ["train", "--variant", "no-cpf", "--data", "tiny", "--model.cl_weight", "0.7", "--print-config"]
    )
    assert r.exit_code == 0, r.output
    f = tmp_path / "config.yaml"
    f.write_text(r.stdout)
    again = resolve([f])
    assert again.to_dict() == resolve(variant="no-cpf", overrides=["data.source=tiny", "model.cl_weight=0.7"]).to_dict()


def test_cli_variants_lists_all():
    r = runner.invoke(app, ["variants"])
    assert r.exit_code == 0
    for name in builtin_names():
        assert name in r.output


@pytest.mark.parametrize(
    "args,words",
    [
        (["train", "--variant", "nope", "--print-config"], "Unknown variant"),
        (["train", "--model.embd.author", "3", "--print-config"], "Bad setting"),
        (["train", "--bogus", "--print-config"], "No such option"),
        (["train", "--config", "missing.yaml", "--print-config"], "no such"),
    ],
)
def test_cli_bad_flags_exit_2(args, words):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output


def test_a_key_that_is_the_start_of_another_is_a_typo_not_an_abbreviation():
    """argparse would read --trainer.max_epoch as --trainer.max_epochs; a run config names it instead."""
    with pytest.raises(UserError, match=r"no setting trainer\.max_epoch\. Did you mean 'trainer\.max_epochs'"):
        resolve(overrides=["--trainer.max_epoch", "3"])
