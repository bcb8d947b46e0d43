"""Every exporter option's CLI default is its library dataclass default (one source of truth)."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

import click
import pytest

from pimc.cli.export import admp as admp_cli
from pimc.cli.export import channel_prune as channel_prune_cli
from pimc.cli.export import comparator as comparator_cli
from pimc.cli.export import decompose as decompose_cli
from pimc.cli.export import feature_reg as feature_reg_cli
from pimc.cli.export import pattern as pattern_cli
from pimc.cli.export import prune as prune_cli
from pimc.cli.export import quantize as quantize_cli
from pimc.compiler.errors import PimcError
from pimc.compiler.passbase import get_pass
from pimc.compiler.settings import cli_dest
from pimc.passes.channel.admp_config import AdmpConfig
from pimc.passes.channel.config import ChannelPruneConfig
from pimc.passes.comparator.config import LBCConfig, LBCTraining
from pimc.passes.decompose.config import PenniConfig
from pimc.passes.feature_reg.config import FeatureRegConfig
from pimc.passes.pattern.config import AdmmSchedule, PatternConfig
from pimc.passes.prune.config import PruneConfig, PruneSchedule
from pimc.passes.quantize.config import QatConfig


def _cli_defaults(command) -> dict[str, object]:
    """Option defaults, leaving out multi-value options and ``None`` ("derived", documented in the help)."""
    return {p.name: p.default for p in command.params
            if not getattr(p, "multiple", False) and not p.required and p.default is not None}


def _shared(config, command) -> list[tuple[str, object, object]]:
    """(field, library default, CLI default) for every dataclass field the CLI exposes."""
    cli = _cli_defaults(command)
    pairs = []
    for field in fields(config):
        name = cli_dest(field)
        if name in cli and field.default is not MISSING:
            pairs.append((field.name, field.default, cli[name]))
    return pairs


# every `pimc export` command, and the library dataclasses its options come from (with how many at least)
MAPPINGS = {
    "decompose": (decompose_cli.command, [(PenniConfig, 12)]),
    "pattern": (pattern_cli.command, [(PatternConfig, 4), (AdmmSchedule, 6)]),
    "quantize": (quantize_cli.command, [(QatConfig, 9)]),
    "comparator": (comparator_cli.command, [(LBCConfig, 5), (LBCTraining, 4)]),
    "prune": (prune_cli.command, [(PruneConfig, 4), (PruneSchedule, 16)]),
    "feature-reg": (feature_reg_cli.command, [(FeatureRegConfig, 13)]),
    "channel-prune": (channel_prune_cli.command, [(ChannelPruneConfig, 9)]),
    "admp": (admp_cli.command, [(AdmpConfig, 11)]),
}
CASES = [(name, config, minimum) for name, (_, configs) in MAPPINGS.items() for config, minimum in configs]


def _parsed_defaults(command) -> dict[str, object]:
    """What the command receives when given only its required options (callbacks applied)."""
    return command.make_context(command.name, ["--model", "m", "-o", "x.onnx"]).params


@pytest.mark.parametrize(("name", "config", "minimum"), CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_cli_defaults_are_the_library_defaults(name, config, minimum) -> None:
    command = MAPPINGS[name][0]
    parsed = _parsed_defaults(command)
    pairs = [(f.name, f.default, parsed[cli_dest(f)]) for f in fields(config) if cli_dest(f) in parsed]
    assert len(pairs) >= minimum
    for field, library, cli in pairs:
        if field == "comparator":  # decided by the model: cmpnet's binary, LBCConfig's otherwise
            assert cli is None
            continue
        cli = True if field == "progress" else tuple(cli) if isinstance(cli, list) else cli
        assert cli == library, f"{config.__name__}.{field}: CLI {cli!r} != library {library!r}"


def test_every_exporter_command_has_a_default_mapping() -> None:
    """A new `pimc export` command must say which library dataclasses its option defaults come from."""
    from pimc.cli.main import _export_commands

    assert set(_export_commands()) == set(MAPPINGS)


def test_library_compress_takes_the_same_dataclasses_as_the_cli() -> None:
    """``pimc.compress(method=M, **options)`` accepts exactly the fields the CLI defaults come from."""
    from pimc.app.compress import METHODS, option_names

    assert set(METHODS) == set(MAPPINGS)
    for method, (_, configs) in MAPPINGS.items():
        library = {f.name for config, _ in configs for f in fields(config)}
        assert library <= set(option_names(method)), method
    assert {"mode", "seed", "progress"} <= set(option_names("pattern"))


def test_penni_library_defaults_are_the_tuned_residual_terms() -> None:
    assert PenniConfig().residual_l1 == 1e-2 and PenniConfig().residual_threshold == 1.1


def test_graph_passes_share_the_dataclass_defaults() -> None:
    pattern = get_pass("pattern-prune")()
    opts = pattern.opts
    assert (opts["patterns"], opts["nonzeros"], opts["library"]) == (
        PatternConfig.patterns, PatternConfig.nonzeros, PatternConfig.library)
    # connectivity unset = searched per layer under the budget; the value it stands for when forced is the library's
    assert opts["connectivity"] is None and pattern.config().connectivity == PatternConfig.connectivity
    comparator = get_pass("comparator-conv")().opts
    for field in fields(LBCConfig):
        assert comparator[field.name] == field.default, field.name


def test_torch_library_defaults_follow_lbc_config() -> None:
    from pimc.passes.comparator.exporter import LBConv2d, replace_convs
    from pimc.passes.decompose.exporter import penni_compress
    from pimc.passes.pattern.admm import oneshot_prune

    for function in (LBConv2d.__init__, replace_convs):
        params = inspect.signature(function).parameters
        assert params["density"].default == LBCConfig.density
        assert params["comparator"].default == LBCConfig.comparator
        assert params["separable"].default == (LBCConfig.variant == "separable")
    layer = LBConv2d(300, 4, 3)
    assert layer.anchors == LBCConfig.max_anchors  # 300·9 capped, as the graph pass does
    oneshot = inspect.signature(oneshot_prune).parameters
    assert oneshot["finetune_epochs"].default == AdmmSchedule.retrain_epochs
    assert oneshot["lr"].default == AdmmSchedule.lr
    assert "config" in inspect.signature(penni_compress).parameters


def test_pimc_export_and_compress_list_the_same_methods_from_one_registry():
    from pimc.app.compress import compress
    from pimc.cli.main import cli
    from pimc.passes import METHODS

    export = cli.commands["export"]
    ctx = click.Context(export)
    assert export.list_commands(ctx) == sorted(METHODS)
    with pytest.raises(PimcError) as error:
        compress(None, None, method="nope", output="x.onnx")
    assert f"use {', '.join(METHODS)}" in str(error.value)


@pytest.mark.parametrize("method", ["decompose", "pattern", "prune", "quantize", "comparator", "feature-reg"])
def test_every_config_field_has_a_cli_option(method: str):
    from dataclasses import fields

    from pimc.cli.main import _export_commands
    from pimc.compiler.method import get_method

    options = {p.name for p in _export_commands()[method].params}
    missing = [f.name for config in get_method(method).configs for f in fields(config) if cli_dest(f) not in options]
    assert not missing


@pytest.mark.parametrize("method", ["decompose", "pattern", "prune", "quantize", "comparator", "feature-reg"])
def test_every_generated_option_has_its_field_help(method: str):
    from pimc.cli.main import _export_commands
    from pimc.compiler.method import get_method

    helps = {p.name: p.help for p in _export_commands()[method].params if isinstance(p, click.Option)}
    for config in get_method(method).configs:
        for f in fields(config):
            if "help" in f.metadata:
                assert helps[cli_dest(f)] == f.metadata["help"], f.name
