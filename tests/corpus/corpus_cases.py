"""The corpus: every case (hand-made graphs, torch exports, the onnx zoo's light graphs) with how to
compile it and what to expect. ``CASES`` is what the corpus test parametrizes over."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx
from corpus_graphs import BUILDERS, Builder
from corpus_torch import TORCH_BUILDERS

ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SIMULATORS = ("escalate", "cim", "cmp-pim")
TARGETS = (*SIMULATORS, "onnxruntime")


@dataclass(frozen=True)
class Case:
    name: str
    build: Builder
    rel_tol: float = 1e-4
    input_shapes: tuple[str, ...] = ()
    slow: bool = False
    xfail: dict[str, str] = field(default_factory=dict)  # target ("*" = all) → reason
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target → --set options


def _zoo(name: str, ir4: bool = False) -> Builder:
    """A zoo graph as shipped, or (``ir4``) with the initializers dropped from the graph inputs, IR 4."""

    def build(folder: Path) -> Path:
        shipped = ZOO / f"light_{name}.onnx"
        if not ir4:
            return shipped
        model = onnx.load(str(shipped))
        inits = {i.name for i in model.graph.initializer}
        real = [i for i in model.graph.input if i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(real)
        model.ir_version = 4
        path = folder / f"{name}_ir4.onnx"
        onnx.save(model, str(path))
        return path

    return build


_FP16 = 1e-2
_SPECIAL: dict[str, dict] = {
    "fp16": {"rel_tol": _FP16},
    "symbolic_hw": {"input_shapes": ("x=1x3x12x12",)},
    "torch_dynamic_hw": {"input_shapes": ("x=1x3x16x16",)},
}

# The nine zoo graphs as shipped (IR 3, opset 9, 224x224, weights from ConstantOfShape). All are slow:
# a full run takes seconds to minutes each (comparator-conv fits every 224x224 conv; vgg19/alexnet/zfnet fold 100M-weight classifiers).
_ZOO = ("squeezenet", "inception_v1", "shufflenet", "resnet50", "bvlc_alexnet", "densenet121", "inception_v2",
        "vgg19", "zfnet512")
_ZOO_IR4 = ("squeezenet", "inception_v1", "shufflenet", "resnet50")
# comparator-conv refits layer by layer on the partly substituted model (two whole-model runs per conv):
# at 224x224 its default 64 calibration samples take 10+ minutes per graph, 2 samples a minute or two.
_ZOO_SETS = {"cmp-pim": ("comparator-conv.samples=2",)}


def _cases() -> list[Case]:
    cases = [Case(name, build, **_SPECIAL.get(name, {})) for name, build in BUILDERS.items()]
    cases += [Case(name, build, **_SPECIAL.get(name, {})) for name, (build, _) in TORCH_BUILDERS.items()
              if not TORCH_BUILDERS[name][1]]
    cases += [Case(name, build, slow=True, **_SPECIAL.get(name, {}))
              for name, (build, slow) in TORCH_BUILDERS.items() if slow]
    cases += [Case(f"zoo_{name}", _zoo(name), slow=True, sets=_ZOO_SETS) for name in _ZOO]
    cases += [Case(f"zoo_{name}_ir4", _zoo(name, ir4=True), slow=True, sets=_ZOO_SETS) for name in _ZOO_IR4]
    return cases


CASES = _cases()
