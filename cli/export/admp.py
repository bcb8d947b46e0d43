"""``pimc export admp``: adapt a model trained on a labelled source domain to an unlabelled target domain and prune
its channels there (ADMP), beside the prune-then-adapt baseline."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from ...passes.channel.admp_config import AdmpConfig
from .common import FILE, THREADS_OPTION, emit, model_options, pretraining_options, shared_options
from .options import build, config_options


@click.command("admp")
@model_options()
@click.option("-o", "--output", type=FILE, required=True, help="Pruned (narrowed) .onnx file for the target domain.")
@config_options(AdmpConfig)
@click.option("--baseline-output", type=FILE, default=None, help="Also write the prune-then-adapt baseline.")
@pretraining_options()
@THREADS_OPTION
@shared_options
def command(**kw) -> None:
    """ADMP: adapted teacher, soft/hard channel masks by ADMM on the unlabelled target, narrowed export."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import copy

    from ...compiler.modelio import write_model
    from ...models.train import export_onnx, training_data
    from ...passes.channel.admp import Domains, admp_prune, prune_then_adapt, train_domains
    from .common import pretrain_unless_trained, resolve_model

    config = build(AdmpConfig, kw)
    seed, progress = kw["seed"], not kw["no_progress"]
    resolved = resolve_model(kw)
    shape = resolved.shape
    started = time.perf_counter()
    pretrain_unless_trained(resolved, kw, kw["epochs"], kw["lr"], config.augment())
    target = training_data(config.target_data, shape, kw["batch_size"], seed)
    domains = Domains(resolved.sets.loader, target.train.x, seed)
    tests = {"source": resolved.sets.test, "target": target.test}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"source-only": Path(tmp) / "s.onnx", "adapted": kw["dense_output"] or Path(tmp) / "a.onnx",
                 "admp": kw["output"], "prune-then-adapt": kw["baseline_output"] or Path(tmp) / "b.onnx"}
        source_only = copy.deepcopy(resolved.module)
        export_onnx(source_only, files["source-only"], shape)
        model = resolved.module
        train_domains(model, domains, config.adapt_epochs, config, seed=seed, progress=progress, desc="adapt")
        export_onnx(model, files["adapted"], shape)
        write_model(admp_prune(model, domains, shape, config, seed=seed, progress=progress), Path(files["admp"]))
        write_model(prune_then_adapt(source_only, domains, shape, config, seed=seed, progress=progress),
                    Path(files["prune-then-adapt"]))
        for path in files.values():
            resolved.restore_io(path)
        models = {name: _measure(path, tests) for name, path in files.items()}
    convs = models["adapted"]["conv_channels"]
    return {"model": kw["model_name"], "source": kw["data"], "target": config.target_data,
            "input_shape": list(shape), "output": str(kw["output"]), "config": dict(config.__dict__),
            "seconds": round(time.perf_counter() - started, 1), "models": models,
            "channels_removed": round(1 - models["admp"]["conv_channels"] / max(convs, 1), 4),
            "baseline_channels_removed": round(1 - models["prune-then-adapt"]["conv_channels"] / max(convs, 1), 4)}


def _measure(path: Path, tests: dict) -> dict:
    """Accuracy on the source and target test splits, params and conv output channels of a file."""
    from ...compiler.graph import get_initializer
    from ...compiler.loader import load_model
    from ...compiler.workload import extract_workload
    from ...runtime.session import evaluate

    model = load_model(path)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return {**{f"accuracy_{name}": evaluate(path, data, repeats=1)["accuracy"] for name, data in tests.items()},
            "params": int(sum(layer.params for layer in extract_workload(model).layers)),
            "conv_channels": int(sum(get_initializer(model.graph, n.input[1]).shape[0] for n in convs))}


def _print_summary(s: dict) -> None:
    click.echo(f"{s['model']}: {s['source']} → {s['target']} (target labels never trained on)")
    for name, m in s["models"].items():
        click.echo(f"  {name:17s} target {m['accuracy_target']:.2%}  source {m['accuracy_source']:.2%}  "
                   f"{m['params']:,} params, {m['conv_channels']} conv channels")
    click.echo(f"wrote {s['output']}: {s['channels_removed']:.0%} of the conv channels removed "
               f"(baseline {s['baseline_channels_removed']:.0%})")
