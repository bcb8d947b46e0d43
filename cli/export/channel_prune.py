"""``pimc export channel-prune``: prune whole channel groups of a zoo model, your own ONNX or a factory's model in
rounds of group lasso, pruning with refitted readers and fine-tuning, and export the narrowed ONNX."""

from __future__ import annotations

import time

import click

from ...passes.channel.config import ChannelPruneConfig
from .common import FILE, THREADS_OPTION, emit, model_options, pretraining_options, shared_options
from .options import build, config_options


@click.command("channel-prune")
@model_options()
@click.option("-o", "--output", type=FILE, required=True, help="Narrowed .onnx file.")
@config_options(ChannelPruneConfig)
@pretraining_options()
@THREADS_OPTION
@shared_options
def command(**kw) -> None:
    """Training-aware filter pruning: group lasso, channel groups removed with refitted readers, fine-tuning."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    from ...compiler.loader import load_model
    from ...compiler.workload import extract_workload
    from ...models.train import export_onnx
    from ...passes.channel.exporter import compress_trained
    from ...runtime.session import evaluate
    from .common import pretrain_unless_trained, resolve_model

    config = build(ChannelPruneConfig, kw)
    resolved = resolve_model(kw)
    sets, shape = resolved.sets, resolved.shape
    started = time.perf_counter()
    pretrain_unless_trained(resolved, kw, kw["epochs"], kw["lr"])
    pretrained = time.perf_counter()
    summary: dict = {"model": kw["model_name"], "input_shape": list(shape), "output": str(kw["output"]),
                     "config": dict(config.__dict__), "pretrain_seconds": round(pretrained - started, 1)}
    if kw["dense_output"]:
        export_onnx(resolved.module, kw["dense_output"], shape)
        resolved.restore_io(kw["dense_output"])
        summary["dense_output"] = str(kw["dense_output"])
        summary["dense"] = _measure(kw["dense_output"], sets.test, evaluate, load_model, extract_workload)
    compress_trained(resolved.module, sets.loader, shape, kw["output"], config, seed=kw["seed"],
                     progress=not kw["no_progress"])
    summary["prune_seconds"] = round(time.perf_counter() - pretrained, 1)
    resolved.finish(kw["output"])
    summary["pruned"] = _measure(kw["output"], sets.test, evaluate, load_model, extract_workload)
    return summary


def _measure(path, test, evaluate, load_model, extract_workload) -> dict:
    """Test metric, params and MACs of an exported file."""
    workload = extract_workload(load_model(path))
    result = evaluate(path, test, repeats=1) if test is not None and test.y is not None else {}
    return {"accuracy": result.get("accuracy"), "metric": getattr(getattr(test, "metric", None), "name", None),
            "params": int(sum(layer.params for layer in workload.layers)), "macs": int(workload.macs)}


def _print_summary(s: dict) -> None:
    pruned = s["pruned"]
    if "dense" in s:
        dense = s["dense"]
        click.echo(f"wrote {s['dense_output']}: accuracy {dense['accuracy']:.2%}, {dense['params']:,} params, "
                   f"{dense['macs']:,} MACs")
    accuracy = f"accuracy {pruned['accuracy']:.2%}, " if pruned["accuracy"] is not None else ""
    click.echo(f"wrote {s['output']}: {accuracy}{pruned['params']:,} params, {pruned['macs']:,} MACs "
               f"(pruning {s['prune_seconds']} s)")
