"""Pipelines and the pass manager.

A pipeline is an ordered list of configured passes. It comes from a target's default, or from
``--passes a,b,c``, a TOML file (``passes = [...]`` and ``[options.<pass>]`` tables), and
``--set pass.option=value`` overrides. The manager runs each pass, names new nodes, re-infers shapes,
runs ``onnx.checker.check_model(full_check=True)``, records statistics, and with ``verify`` compares the
model before and after every pass on onnxruntime; an exact pass beyond its tolerance is an error naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tomllib

from .errors import PassError, PimcError
from .loader import infer_shapes, name_nodes
from .modelio import MAX_TEXT_FILE_BYTES, read_input_file, serialize_model, structure_fingerprint
from .passbase import Pass, PassContext, get_pass
from .stats import ModelStats, model_stats
from .storage import stamp_reference
from .verify import compare_outputs, run_model

PassSpec = tuple[str, dict[str, Any]]


def parse_pass_list(text: str) -> list[PassSpec]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise PimcError("--passes: give at least one pass name")
    return [(n, {}) for n in names]


def read_pipeline_file(path: str | Path) -> tuple[list[PassSpec] | None, dict[str, dict[str, Any]]]:
    """A TOML pipeline: optional ``passes = [...]`` and ``[options.<pass>]`` tables."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise PimcError(f"{p}: no such pipeline file")
    try:
        data = tomllib.loads(read_input_file(p, MAX_TEXT_FILE_BYTES, "pipeline file").decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PimcError(f"{p}: not a valid TOML pipeline ({str(exc).splitlines()[0]})") from None
    unknown = set(data) - {"passes", "options"}
    if unknown:
        raise PimcError(f"{p}: unknown key '{sorted(unknown)[0]}' (expected 'passes' and 'options')")
    passes = data.get("passes")
    if passes is not None and (not isinstance(passes, list) or not all(isinstance(x, str) for x in passes)):
        raise PimcError(f"{p}: 'passes' must be a list of pass names")
    options = data.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise PimcError(f"{p}: 'options' must hold one table per pass")
    return ([(n, {}) for n in passes] if passes is not None else None), options


def parse_set(items: list[str]) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        pass_name, dot, option = key.strip().partition(".")
        if not sep or not dot or not pass_name or not option:
            raise PimcError(f"--set {item!r}: expected PASS.OPTION=VALUE")
        result.setdefault(pass_name, {})[option] = value.strip()
    return result


def build_pipeline(
    default: list[PassSpec],
    passes: str | None = None,
    pipeline_file: str | None = None,
    sets: list[str] | None = None,
) -> list[Pass]:
    specs = [(n, dict(o)) for n, o in default]
    overrides: dict[str, dict[str, Any]] = {}
    if pipeline_file:
        file_specs, file_options = read_pipeline_file(pipeline_file)
        if file_specs is not None:
            specs = file_specs
        overrides.update({k: dict(v) for k, v in file_options.items()})
    if passes:
        specs = parse_pass_list(passes)
    for name, opts in parse_set(sets or []).items():
        overrides.setdefault(name, {}).update(opts)
    names = [n for n, _ in specs]
    for name in overrides:
        get_pass(name)
        if name not in names:
            raise PimcError(f"options given for pass '{name}', which is not in the pipeline ({', '.join(names)})")
    return [get_pass(n)(**{**opts, **overrides.get(n, {})}) for n, opts in specs]


@dataclass
class PassRecord:
    name: str
    options: dict[str, Any]
    changed: bool
    seconds: float
    before: ModelStats
    after: ModelStats
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "options": self.options, "changed": self.changed,
            "seconds": round(self.seconds, 6),
            "nodes_before": self.before.nodes, "nodes_after": self.after.nodes,
            "params_before": self.before.params, "params_after": self.after.params,
            "nonzero_params_before": self.before.nonzero_params, "nonzero_params_after": self.after.nonzero_params,
            "macs_before": self.before.macs, "macs_after": self.after.macs,
            "effective_macs_before": self.before.effective_macs, "effective_macs_after": self.after.effective_macs,
            "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err, "stats": self.stats,
        }


def check_model_full(model: onnx.ModelProto, pass_name: str, data: bytes | None = None) -> None:
    """``onnx.checker.check_model(full_check=True)``; pass ``data`` (the serialized model) to reuse it."""
    data = data if data is not None else serialize_model(model)
    if data is None:
        return  # full_check needs an in-memory proto below 2 GB; write_model saves such models externally
    try:
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise PassError(pass_name, f"produced an invalid model: {str(exc).strip().splitlines()[0]}") from exc


class PassManager:
    def __init__(
        self,
        passes: list[Pass],
        ctx: PassContext,
        verify: bool = False,
        verify_feeds: list[dict[str, np.ndarray]] | None = None,
    ):
        self.passes = passes
        self.ctx = ctx
        self.verify = verify
        self.verify_feeds = verify_feeds
        self.records: list[PassRecord] = []
        self.final_stats: ModelStats | None = None
        self.final_bytes: bytes | None = None
        self._final_fingerprint: str | None = None

    def run(self, model: onnx.ModelProto, stats: ModelStats | None = None) -> onnx.ModelProto:
        """Run every pass; ``stats`` are the input model's statistics if already known.
        ``self.final_stats`` holds the output model's statistics afterwards, ``self.final_bytes`` its
        serialization when a pass changed it (passes that report no change must not modify the model)."""
        stats = stats if stats is not None else model_stats(model)
        stamp_reference(model)  # storage ratios stay against the model as brought, whatever the passes cut
        reference = run_model(model, self.verify_feeds) if self.verify and self.verify_feeds else None
        self.final_bytes = None
        for p in self.passes:
            model, stats, reference = self._run_one(p, model, stats, reference)
        self.final_stats = stats
        return model

    def output_bytes(self, model: onnx.ModelProto) -> bytes | None:
        """The serialization made after the last changed pass, if ``model`` still matches it."""
        if self.final_bytes is None or structure_fingerprint(model) != self._final_fingerprint:
            return None
        return self.final_bytes

    def _run_one(self, p: Pass, model, stats_before, reference):
        start = time.perf_counter()
        self.ctx.pass_name = p.name
        self.ctx.report_progress("running")
        try:
            result = p.run(model, self.ctx)
        except PimcError:
            raise
        except Exception as exc:
            raise PassError(p.name, f"{type(exc).__name__}: {exc}") from exc
        model = result.model
        data = None
        if result.changed and result.annotations_only:
            self.final_bytes = None
        elif result.changed:
            name_nodes(model)
            model = infer_shapes(model, f"after pass '{p.name}'")
            data = serialize_model(model)
            check_model_full(model, p.name, data)
            self.final_bytes = data
            self._final_fingerprint = structure_fingerprint(model) if data is not None else None
        seconds = time.perf_counter() - start
        stats_after = model_stats(model) if result.changed and not result.annotations_only else stats_before
        record = PassRecord(p.name, dict(p.opts), result.changed, seconds, stats_before, stats_after,
                            stats=result.stats)
        if reference is not None:
            outputs = run_model(data or model, self.verify_feeds) if result.changed else reference
            cmp = compare_outputs(reference, outputs)
            record.max_abs_err, record.max_rel_err = cmp.max_abs_err, cmp.max_rel_err
            if cmp.failure():
                raise PassError(p.name, f"--verify: {cmp.failure()}")
            if p.is_exact() and not cmp.within(p.tolerance):
                raise PassError(
                    p.name,
                    f"declared exact but changed the outputs (max relative error {cmp.max_rel_err:.3g} "
                    f"> tolerance {cmp.tolerance(p.tolerance):g})",
                )
            reference = outputs
        self.records.append(record)
        return model, stats_after, reference
