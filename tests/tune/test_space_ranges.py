"""`farm tune --space`: ranges for TPE (LO:HI, LO:HI:log, int or float), typed values, and the refusals."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.errors import UserError
from farmcli.tune.space import parse_dimension, parse_space
from farmcli.tune.study import TuneSettings, check

runner = CliRunner()
TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")


def test_ranges_are_uniform_or_log_int_or_float():
    lr, levels, weight = parse_space(["optim.lr=1e-4:1e-2:log", "model.head.levels=1:3", "model.cl_weight=0:1.0"])
    assert (lr.low, lr.high, lr.log, lr.is_int) == (1e-4, 1e-2, True, False)
    assert isinstance(lr.low, float) and lr.is_range and lr.values == ()
    assert (levels.low, levels.high, levels.log, levels.is_int) == (1, 3, False, True)
    assert isinstance(levels.low, int) and isinstance(levels.high, int)
    assert weight.is_range and not weight.is_int and isinstance(weight.high, float)  # one float bound: floats
    assert lr.to_dict() == {"key": "optim.lr", "low": 0.0001, "high": 0.01, "log": True}


def test_list_values_are_typed():
    (lr, flag, name, dims) = parse_space(
        ["optim.lr=1e-3,0.01,3", "model.align.normalize=true,false", "fit.name=a,b", "x.dims=[64,32],[8]"]
    )
    assert lr.values == (0.001, 0.01, 3) and [type(v) for v in lr.values] == [float, float, int]
    assert flag.values == (True, False) and name.values == ("a", "b") and dims.values == ([64, 32], [8])
    assert lr.to_dict() == {"key": "optim.lr", "values": [0.001, 0.01, 3]}  # a list keeps its tune.json form


@pytest.mark.parametrize(
    "bad, words",
    [
        ("model.cl_weight=0.5:0.5", ["model.cl_weight", "not below", "LO < HI"]),
        ("model.cl_weight=0.9:0.1", ["model.cl_weight", "not below", "LO < HI"]),
        ("optim.lr=0:1e-2:log", ["optim.lr", "above 0", "drop ':log'"]),
        ("optim.lr=-1:1:log", ["optim.lr", "above 0"]),
        ("optim.lr=a:b", ["optim.lr", "'a' is not a number", "LO:HI"]),
        ("optim.lr=1e-4:x:log", ["optim.lr", "'x' is not a number"]),
        ("optim.lr=nan:1", ["optim.lr", "not finite"]),
        ("optim.lr=1:2:lin", ["optim.lr", "LO:HI:log", "'lin'"]),
        ("optim.lr=1:2:3:log", ["optim.lr", "4 parts"]),
        ("optim.lr=1,1.0", ["listed twice"]),
        ("model.align.normalize=1,true", ["listed twice"]),
    ],
)
def test_a_bad_range_or_list_names_the_key_the_fault_and_the_fix(bad, words):
    with pytest.raises(UserError) as e:
        parse_space([bad])
    for w in words:
        assert w in str(e.value), str(e.value)


def test_a_quoted_value_with_a_colon_is_a_list_item():
    (d,) = parse_space(['fit.name="a:b",c'])
    assert d.values == ("a:b", "c") and not d.is_range


def test_the_grid_refuses_a_range_and_tpe_takes_it(tmp_path):
    space = parse_space(["optim.lr=1e-4:1e-2:log", "model.head.levels=1:2"])
    base = dict(variant="base", data="tiny", space=space, config_files=[TINY])
    with pytest.raises(UserError, match="--sampler tpe"):
        check(TuneSettings(**base))
    combos = check(TuneSettings(**base, sampler="tpe", trials=3), tmp_path / "t")  # each bound checked
    assert {"optim.lr": 1e-4} in combos and {"model.head.levels": 2} in combos
    assert not (tmp_path / "t").exists()


def test_a_range_bound_the_setting_refuses_stops_before_anything_runs():
    space = parse_space(["model.head.levels=0:2"])
    with pytest.raises(UserError, match="levels"):
        check(TuneSettings(variant="base", data="tiny", space=space, config_files=[TINY], sampler="tpe", trials=2))


def test_cli_range_mistakes_exit_2(tmp_path):
    out = str(tmp_path / "t")
    r = runner.invoke(app, ["tune", "--data", "tiny", "--space", "optim.lr=1e-4:1e-2:log", "--out", out])
    assert r.exit_code == 2 and "--sampler tpe" in r.output and "optim.lr" in r.output, r.output
    r = runner.invoke(
        app, ["tune", "--data", "tiny", "--sampler", "tpe", "--trials", "2", "--space", "optim.lr=1:0", "--out", out]
    )
    assert r.exit_code == 2 and "optim.lr" in r.output and "LO < HI" in r.output, r.output
    assert not (tmp_path / "t").exists()
    r = runner.invoke(app, ["tune", "--help"])
    assert r.exit_code == 0 and "LO:HI:log" in r.output


def test_a_listed_dimension_reads_back_as_typed():
    """Messages (a journal that holds values --space lacks) quote a dimension as the user would type it."""
    assert parse_dimension("model.cl_weight=0.1,[1, 2],x").text() == "0.1,[1, 2],x"
    assert parse_dimension("optim.lr=1e-4:1e-2:log").text() == "0.0001:0.01:log"
