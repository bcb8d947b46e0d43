"""Every exporter option's CLI default is its library dataclass default (one source of truth)."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

import click
import pytest

from pimc.cli.export import comparator as comparator_cli
from pimc.cli.export import decompose as decompose_cli
from pimc.cli.export import feature_reg as feature_reg_cli
from pimc.cli.export import pattern as pattern_cli
from pimc.cli.export import prune as prune_cli
from pimc.cli.export import quantize as quantize_cli
from pimc.cli.export.quantize import ExportConfig
from pimc.compiler.errors import PimcError
from pimc.compiler.passbase import get_pass
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


def _shared(config, command, renames: dict[str, str] | None = None) -> list[tuple[str, object, object]]:
    """(field, library default, CLI default) for every dataclass field the CLI exposes."""
    cli = _cli_defaults(command)
    renames = renames or {}
    pairs = []
    for field in fields(config):
        name = renames.get(field.name, field.name)
        if name in cli and field.default is not MISSING:
            pairs.append((field.name, field.default, cli[name]))
    return pairs


# every `pimc export` command, and the library dataclasses its options map to (field → option renames)
MAPPINGS = {
    "decompose": (decompose_cli.command, [(PenniConfig, {}, 12)]),
    "pattern": (pattern_cli.command, [(PatternConfig, {}, 4), (AdmmSchedule, {"lr": "prune_lr"}, 5)]),
    "quantize": (quantize_cli.command, [(ExportConfig, {}, 13), (QatConfig, {}, 9)]),
    "comparator": (comparator_cli.command, [(LBCConfig, {}, 3), (LBCTraining, {"train": "train_what"}, 4)]),
    "prune": (prune_cli.command, [(PruneConfig, {}, 3), (PruneSchedule, {"lr": "prune_lr"}, 8)]),
    # levels: a tuple in the library, its comma-joined text in the CLI (test_feature_reg_cli checks it)
    "feature-reg": (feature_reg_cli.command, [(FeatureRegConfig, {"epochs": "reg_epochs", "lr": "reg_lr",
                                                                  "levels": "-", "placement": "gate_placement"}, 8)]),
}
CASES = [(name, config, renames, minimum) for name, (_, configs) in MAPPINGS.items()
         for config, renames, minimum in configs]


@pytest.mark.parametrize(("name", "config", "renames", "minimum"), CASES,
                         ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_cli_defaults_are_the_library_defaults(name, config, renames, minimum) -> None:
    pairs = _shared(config, MAPPINGS[name][0], renames)
    assert len(pairs) >= minimum
    for field, library, cli in pairs:
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
        library = {f.name for config, _, _ in configs if config is not ExportConfig for f in fields(config)}
        assert library <= set(option_names(method)), method
    assert {"mode", "seed", "progress"} <= set(option_names("pattern"))


def test_quantize_export_config_reads_qat_config() -> None:
    shared = {f.name for f in fields(QatConfig)}
    for field in fields(ExportConfig):
        if field.name in shared:
            assert field.default == getattr(QatConfig, field.name), field.name


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


# config fields whose CLI option has another name (an inverted flag, or a name the CLI already used)
CLI_NAMES = {"progress": "no_progress", "placement": "gate_placement", "train": "train_what"}


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

    from pimc.app.compress import _configs
    from pimc.cli.main import _export_commands

    options = {p.name for p in _export_commands()[method].params}
    missing = [f.name for config in _configs(method) for f in fields(config)
               if CLI_NAMES.get(f.name, f.name) not in options]
    assert not missing
