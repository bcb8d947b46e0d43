"""Sweep SPEC validation and trial planning (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimc.compiler.errors import PimcError
from pimc.sweep.runner import plan_points
from pimc.sweep.spec import grid_points, load_spec, parse_spec
from pimc.sweep.trial import split_axes

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "digits_cnn.onnx")


def spec(**over):
    data = {"model": MODEL, "targets": ["escalate", "cim"],
            "axes": {"decompose.rank": [3, 5], "hw.escalate.basis_rows": [8, 16]}}
    data.update(over)
    return parse_spec(data)


def test_grid_leaves_other_targets_hardware_out():
    points = grid_points(spec())
    assert len(points) == 4 + 2  # escalate: rank x basis_rows; cim: rank only
    assert all("hw.escalate.basis_rows" not in p["axes"] for p in points if p["target"] == "cim")


def test_random_is_a_seeded_subset_without_repeats():
    s = spec(search="random", trials=3)
    digests = {MODEL: "x"}
    a, b = plan_points(s, 1, digests), plan_points(s, 1, digests)
    assert [p["key"] for p in a] == [p["key"] for p in b]
    assert len({p["key"] for p in a}) == 3


@pytest.mark.parametrize("over, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"targets": ["nope"]}, "unknown target 'nope'"),
    ({"search": "bayes"}, "'search' must be one of"),
    ({"trials": 0}, "'trials' must be a positive integer"),
    ({"objectives": ["accuracy"]}, "needs labelled 'data'"),
    ({"objectives": ["speed"]}, "unknown objective 'speed'"),
    ({"axes": {"decompose.rnak": [1]}}, "has no option 'rnak'"),
    ({"axes": {"nopass.x": [1]}}, "unknown pass 'nopass'"),
    ({"axes": {"hw.escalate.rows": [1]}}, "unknown hardware parameter 'rows'"),
    ({"axes": {"hw.cmp-pim.rows": [1]}}, "not in 'targets'"),
    ({"axes": {"hw.escalate.basis_rows": [-1]}}, "must not be negative"),
    ({"axes": {"decompose.rank": []}}, "non-empty list"),
    ({"model": "missing.onnx"}, "no such file"),
    ({"input_shape": "1x3x8x8"}, "'input_shape' must be NAME=1xCxHxW"),
])
def test_bad_spec_is_one_line(over, message):
    with pytest.raises(PimcError, match=message) as info:
        spec(**over)
    assert "\n" not in str(info.value)


def test_input_shape_and_passes_reach_every_compile():
    from pimc.sweep.runner import settings_of
    from pimc.sweep.trial import compile_options

    s = spec(input_shape="input=1x1x8x8", passes="fold-constants,activation-sparsity")
    settings = settings_of(s, 0)
    assert settings["input_shapes"] == ("input=1x1x8x8",)
    options = compile_options(MODEL, "cim", {}, None, None, None, 0, None, settings["input_shapes"],
                              settings["passes"])
    assert options.input_shapes == ("input=1x1x8x8",) and options.passes == "fold-constants,activation-sparsity"


def test_load_spec_resolves_model_next_to_the_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(Path(MODEL).read_bytes())
    (tmp_path / "s.toml").write_text('model = "m.onnx"\ntargets = ["escalate"]\n[axes]\n"decompose.rank" = [3]\n')
    assert load_spec(tmp_path / "s.toml").models == [str((tmp_path / "m.onnx").resolve())]
    (tmp_path / "bad.toml").write_text("model = [")
    with pytest.raises(PimcError, match="not a valid TOML"):
        load_spec(tmp_path / "bad.toml")


def test_split_axes():
    sets, hw = split_axes({"decompose.rank": 3, "decompose.include": ["a", "b"], "hw.cim.rows": 32})
    assert sets == ("decompose.rank=3", "decompose.include=a,b")
    assert hw == {"rows": 32}


def test_cli_bad_spec_is_one_line(tmp_path, capsys):
    from pimc.cli.main import main

    bad = tmp_path / "s.toml"
    bad.write_text(f'model = "{MODEL}"\ntargets = ["escalate"]\n[axes]\n"decompose.rnk" = [1]\n')
    assert main(["sweep", str(bad), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pimc: error:") and "has no option 'rnk'" in err and "\n" not in err
