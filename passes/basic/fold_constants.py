"""fold-constants: Constant nodes and nodes whose inputs are all constant become initializers.

Model-zoo graphs build weights with Constant / ConstantOfShape / Identity chains; folding them turns those
weights into initializers the other passes can read. Quantize/Dequantize nodes are kept.
"""

from __future__ import annotations

import onnx

from ...compiler.folding import fold_constants
from ...compiler.passbase import Pass, PassContext, PassResult


class FoldConstants(Pass, name="fold-constants", exact=True):
    """Evaluate constant subgraphs into initializers (exact)."""

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        folded = fold_constants(model)
        return PassResult(model, folded > 0, {"folded_nodes": folded})
