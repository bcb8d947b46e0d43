"""Torch side of comparator convolutions: ``LBConv2d``, conv replacement in any model, training, export.

``LBConv2d(cin, cout, k)`` computes ``P * cmp(A * x) + c`` (see ``comparator_conv``): A is a fixed sparse
ternary anchor tensor held as a buffer (never trained; same generator as the graph pass), cmp is ReLU
or the binary comparison bit [a > 0], and P is a learnable 1×1 conv. ``separable=True`` makes the anchor
conv depthwise (q kernels per input channel, CMPNET). The binary comparator is trained with a
straight-through estimator: forward [a > 0], backward the gradient of clamp(a/(2s) + ½, 0, 1) with the
window s = ``ste_scale`` (1 by default; on digits a window of √(non-zeros per anchor) trained 0.7 points
worse in one seed-0 comparison); in eval mode
it is exactly ``(a > 0).float()``, which the ONNX exporter writes as Greater → Cast.

``export_lbc_onnx`` exports with the standard exporter and then writes the annotation contract: each
anchor Conv is found by its (exact, ternary) weight, the comparison node after it and the 1×1 Conv after
that; they get ``role`` = anchor / comparator / lbc_pointwise, ``layer``, the anchor density and seed,
and on the 1×1 node the original conv's shape (``original_cin``, ``original_cout``, ``kernel``), which the
cmp-pim target needs for its cnn baseline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ...compiler import annotations as ann
from ...compiler.errors import PimcError
from ...compiler.graph import consumers, initializer_map
from ...compiler.modelio import write_model
from .comparator_conv import ternary_anchors
from .config import LBCConfig, LBCTraining, auto_anchors
from .rewrite import annotate_pointwise


def compare(a: torch.Tensor, comparator: str, training: bool, scale: float = 1.0) -> torch.Tensor:
    """ReLU, or the {0,1} comparison bit with a straight-through gradient (window ±scale) while training."""
    if comparator == "relu":
        return F.relu(a)
    hard = (a > 0).to(a.dtype)
    if not training:
        return hard
    soft = torch.clamp(a / (2.0 * scale) + 0.5, 0.0, 1.0)
    return soft + (hard - soft).detach()


class LBConv2d(nn.Module):
    """Local binary convolution: fixed ternary anchors → comparator → learnable 1×1 conv."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
        dilation: int = 1, anchors: int = LBCConfig.anchors, density: float = LBCConfig.density,
        separable: bool = LBCConfig.variant == "separable", comparator: str = LBCConfig.comparator,
        paired: bool | None = None, seed: int = 0, max_anchors: int = LBCConfig.max_anchors,
    ):
        super().__init__()
        if comparator not in ("relu", "binary"):
            raise PimcError(f"LBConv2d: comparator must be relu or binary, got {comparator!r}")
        if not 0 < density <= 1:
            raise PimcError(f"LBConv2d: density must be in (0, 1], got {density}")
        self.cin, self.cout, self.kernel_size = cin, cout, kernel_size
        self.stride, self.dilation = stride, dilation
        self.padding = kernel_size // 2 * dilation if padding is None else padding
        self.separable, self.comparator, self.density, self.seed = separable, comparator, density, seed
        paired = comparator == "relu" if paired is None else paired
        kernel = (kernel_size, kernel_size)
        per_group = anchors or auto_anchors("separable" if separable else "lbc", cin, kernel, max_anchors)
        rng = np.random.default_rng((seed, 0x1BC))
        groups = cin if separable else 1
        blocks = [ternary_anchors(per_group, 1 if separable else cin, (kernel_size, kernel_size), density,
                                  paired, rng) for _ in range(groups)]
        self.register_buffer("anchor", torch.from_numpy(np.concatenate(blocks, axis=0)))
        self.ste_scale = 1.0
        self.pointwise = nn.Conv2d(self.anchor.shape[0], cout, 1, bias=True)

    @property
    def anchors(self) -> int:
        return int(self.anchor.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anchor conv, comparison, 1×1 conv."""
        a = F.conv2d(x, self.anchor, None, self.stride, self.padding, self.dilation,
                     self.cin if self.separable else 1)
        return self.pointwise(compare(a, self.comparator, self.training, self.ste_scale))

    def extra_repr(self) -> str:
        return (f"{self.cin}, {self.cout}, k={self.kernel_size}, stride={self.stride}, anchors={self.anchors}, "
                f"separable={self.separable}, comparator={self.comparator}, density={self.density}")


def lbc_modules(model: nn.Module) -> Iterator[tuple[str, LBConv2d]]:
    for name, module in model.named_modules():
        if isinstance(module, LBConv2d):
            yield name, module


def replace_convs(
    model: nn.Module, anchors: int = LBCConfig.anchors, density: float = LBCConfig.density,
    separable: bool = LBCConfig.variant == "separable", comparator: str = LBCConfig.comparator,
    seed: int = 0, min_kernel: int = LBCConfig.min_kernel, skip: tuple[str, ...] = (),
    max_anchors: int = LBCConfig.max_anchors,
) -> list[str]:
    """Replace every ungrouped k×k ``nn.Conv2d`` (k ≥ min_kernel) of ``model`` by an ``LBConv2d`` in place."""
    replaced = []
    for index, (name, parent, child_name, conv) in enumerate(list(_convs(model))):
        if name in skip or conv.groups != 1 or min(conv.kernel_size) < min_kernel:
            continue
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1]:
            continue
        if isinstance(conv.padding, str) or conv.padding[0] != conv.padding[1]:
            continue
        lbc = LBConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                       conv.padding[0], conv.dilation[0], anchors, density, separable, comparator,
                       seed=seed * 1000 + index, max_anchors=max_anchors)
        setattr(parent, child_name, lbc)
        replaced.append(name)
    return replaced


def _convs(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Conv2d]]:
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if type(child) is nn.Conv2d:
                yield (f"{parent_name}.{child_name}" if parent_name else child_name), parent, child_name, child


def freeze_all_but_pointwise(model: nn.Module) -> None:
    """Train only the 1×1 weights of the LBC layers (the post-replacement fine-tuning mode)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for _, module in lbc_modules(model):
        for p in module.pointwise.parameters():
            p.requires_grad_(True)


def export_lbc_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """Export to ONNX and annotate every LBC block; returns {layer: anchors} of the annotated blocks."""
    from ...models.train import export_onnx

    out = Path(path)
    export_onnx(model, out, input_shape)
    proto = onnx.load(str(out))
    annotated = annotate_lbc_blocks(proto, model)
    write_model(proto, out)
    return annotated


def annotate_lbc_blocks(proto: onnx.ModelProto, model: nn.Module) -> dict[str, int]:
    """Find each LBConv2d's anchor/comparator/1×1 nodes in ``proto`` and write the annotation contract."""
    graph = proto.graph
    inits = initializer_map(graph)
    readers = consumers(graph)
    convs = [n for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits]
    annotated: dict[str, int] = {}
    for name, module in lbc_modules(model):
        anchor_value = module.anchor.detach().cpu().numpy()
        anchor = next((n for n in convs if _same(numpy_helper.to_array(inits[n.input[1]]), anchor_value)), None)
        if anchor is None:
            raise PimcError(f"export: the anchor conv of LBC layer '{name}' is not in the exported graph")
        comparator, pointwise = _comparator_and_pointwise(anchor, readers, name)
        layer = name or anchor.name
        density = float(np.count_nonzero(anchor_value) / anchor_value.size)
        for key, value in (("role", "anchor"), ("layer", layer), ("anchor_density", round(density, 6)),
                           ("seed", module.seed), ("variant", "separable" if module.separable else "lbc")):
            ann.set_node_annotation(anchor, key, value)
        ann.set_node_annotation(comparator, "role", "comparator")
        ann.set_node_annotation(comparator, "layer", layer)
        ann.set_node_annotation(comparator, "comparator", module.comparator)
        annotate_pointwise(pointwise, layer, module.cin, module.cout, [module.kernel_size] * 2, 1,
                           module.anchors, "separable" if module.separable else "lbc", module.comparator)
        annotated[layer] = module.anchors
    return annotated


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _comparator_and_pointwise(anchor: onnx.NodeProto, readers: dict, name: str):
    users = readers.get(anchor.output[0], [])
    if len(users) != 1 or users[0].op_type not in ("Relu", "Greater"):
        raise PimcError(f"export: LBC layer '{name}': no comparison after the anchor conv")
    comparator = users[0]
    node = comparator
    while True:
        nxt = readers.get(node.output[0], [])
        if len(nxt) != 1:
            raise PimcError(f"export: LBC layer '{name}': the comparison does not feed a single 1×1 conv")
        node = nxt[0]
        if node.op_type == "Conv":
            return comparator, node
        if node.op_type != "Cast":
            raise PimcError(f"export: LBC layer '{name}': unexpected {node.op_type} after the comparison")


def compress_trained(model, loader, shape, output, substitution: LBCConfig, training: LBCTraining, *,
                     seed: int = 0, progress: bool = True):
    """The ``comparator`` method (``compiler/method.py``): a trained model's k×k convs become LBC layers, then
    it is trained (all of it, or the LBC 1×1 weights only)."""
    from ...models.train import train_classifier

    replaced = replace_convs(model, substitution.anchors, substitution.density, substitution.variant == "separable",
                             substitution.comparator, training.seed, substitution.min_kernel,
                             max_anchors=substitution.max_anchors)
    if not replaced:
        raise PimcError("compress(method='comparator'): the model has no ungrouped square k×k conv to replace")
    if training.train == "pointwise":
        freeze_all_but_pointwise(model)
    train_classifier(model, loader, training.epochs, lr=training.lr, seed=training.seed, progress=training.progress,
                     desc="train lbc")
    export_lbc_onnx(model, output, shape)
    return model
