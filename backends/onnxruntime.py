"""The onnxruntime target: prepares the graph for onnxruntime on CPU; no simulated cost.

Pipeline: fold-constants → eliminate-identity → fold-batchnorm → channel-prune → shrink → recompose →
cleanup.

* Fewer channels is what onnxruntime's CPU kernels speed up (they run convolutions in blocks of 8 or 16
  channels and skip no zero). With labelled ``--data``, ``channel-prune`` removes whole channel groups
  (kept counts multiples of 8), refits their readers and chooses each group's width under the accuracy
  budget, its saving the layer time measured on this machine; the narrowed model is kept only if measured
  faster than its input, whole, at batch 1 and 64 (by 10 %). Without labels it changes nothing, and the rest
  of the pipeline is exact. Should the searched model miss the budget on the held-out test samples, the compile
  writes this pipeline's exact result instead and says so (``app/compile.py``).

* Speed on onnxruntime comes from pruning, shrinking and re-fusing, not from the decomposed form: a
  depthwise conv with channel multiplier d followed by a 1×1 conv runs slower than the dense conv it
  replaces, so ``recompose`` folds basis/coefficient pairs back into dense convs of the shrunk shape
  where that is faster.
* Pattern-pruned models: onnxruntime does not skip zero weights, so kernel patterns bring no speed by
  themselves; filters and input channels that connectivity pruning emptied are removed by ``shrink``
  (exactly: a removed filter's constant output is folded into the next layer's bias where that is exact).
* Quantized (QDQ) models run as they are; onnxruntime executes the QuantizeLinear/DequantizeLinear pairs.
* int8 stacked with the compression: ``--pipeline examples/onnxruntime_int8.toml`` (or ``--passes
  fold-constants,eliminate-identity,fold-batchnorm,shrink,recompose,quantize,cleanup``) ends the pipeline
  in ``quantize`` (layout ``int8``, calibrated on ``--data``), so a PENNI or pattern-pruned model gets the
  shrunk, re-fused dense convs *and* onnxruntime's integer kernels (QLinearConv, QLinearAdd, QGemm). The
  default pipeline does not quantize: int8 changes every layer and is opt-in.

Accuracy and latency are measured with ``pimc run`` / ``pimc bench``.
"""

from __future__ import annotations

from typing import Any

from ..compiler.target import NORMALIZE, Target


class OnnxruntimeTarget(Target, name="onnxruntime"):
    """onnxruntime on CPU: fold, prune channels (with labelled data), shrink and re-fuse; accuracy/latency via
    pimc run and bench."""

    def default_pipeline(self) -> list[tuple[str, dict[str, Any]]]:
        return [*NORMALIZE, ("channel-prune", {}), ("shrink", {}), ("recompose", {}), ("cleanup", {})]
