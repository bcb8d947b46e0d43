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


def _zoo(name: str):
    def build(folder: Path) -> Path:
        return ZOO / f"light_{name}.onnx"

    return build


_FP16 = 1e-2
# Bugs in the loader/IO engineer's area (IR 3 models, fp16 quantize), xfailed here, see the report.
_IR3 = "IR 3 model: fold-batchnorm adds an initializer that is not a graph input (loader/IO: IR3 models)"
_FP16_QUANT = "quantize inserts QuantizeLinear on a float16 activation, invalid before opset 19 (fp16 quantize)"
_SPECIAL: dict[str, dict] = {
    "fp16": {"rel_tol": _FP16, "xfail": {"cim": _FP16_QUANT}},
    "ir3_inputs": {"xfail": {"*": _IR3}},
    "symbolic_hw": {"input_shapes": ("x=1x3x12x12",)},
    "torch_dynamic_hw": {"input_shapes": ("x=1x3x16x16",)},
}

# The nine zoo graphs as shipped (IR 3, opset 9, weights from ConstantOfShape); the large ones are slow.
_ZOO_FAST = ("squeezenet", "inception_v1", "shufflenet", "resnet50")
_ZOO_SLOW = ("bvlc_alexnet", "densenet121", "inception_v2", "vgg19", "zfnet512")


def _cases() -> list[Case]:
    cases = [Case(name, build, **_SPECIAL.get(name, {})) for name, build in BUILDERS.items()]
    cases += [Case(name, build, **_SPECIAL.get(name, {})) for name, (build, _) in TORCH_BUILDERS.items()
              if not TORCH_BUILDERS[name][1]]
    cases += [Case(name, build, slow=True, **_SPECIAL.get(name, {}))
              for name, (build, slow) in TORCH_BUILDERS.items() if slow]
    cases += [Case(f"zoo_{name}", _zoo(name)) for name in _ZOO_FAST]
    cases += [Case(f"zoo_{name}", _zoo(name), slow=True) for name in _ZOO_SLOW]
    return cases


CASES = _cases()
