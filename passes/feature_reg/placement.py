"""Where the gates go: a traced forward pass finds every conv input (``conv-input``) or every producer
of one (``stream``) (the method: ``exporter.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...compiler.errors import PimcError

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class GateSite:
    """One gate: the convs that read its output and where it is hooked in.

    ``stream`` sites gate the output of ``module`` at its ``call``-th call in one forward pass (a forward
    hook: every reader of that tensor, convs and residual Adds alike, reads the gated map); ``conv-input``
    sites gate the input of the single conv ``module`` (a forward pre-hook: only that conv reads the gated map).
    """

    name: str
    readers: list[str]
    channels: int
    module: nn.Module
    call: int
    stream: bool


@dataclass
class _Read:
    """A conv's first read of its input during the tracing pass, and the output the tensor came from."""

    conv: str
    module: nn.Module
    tensor: torch.Tensor
    image: bool
    producer: tuple[str, nn.Module, int] | None


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> list[_Read]:
    """One eval forward pass on a seeded random image: every conv's input read, in execution order, and the
    module output (name, module, call index) it is, when one is (the latest to finish, values unchanged)."""
    _run_pre_hooks_of_functional_convs(model)
    example = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    outputs: list[tuple[str, nn.Module, int, torch.Tensor, torch.Tensor]] = []
    calls: dict[str, int] = {}
    reads: list[_Read] = []
    seen: set[str] = set()

    def record(name: str):
        def hook(module: nn.Module, _args: tuple, output: object) -> None:
            call = calls.get(name, 0)
            calls[name] = call + 1
            if isinstance(output, torch.Tensor):
                outputs.append((name, module, call, output, output.detach().clone()))

        return hook

    def read(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if name in seen:
                return
            seen.add(name)
            x = args[0]
            # the image: the input itself, or a tensor made from it before any module ran (a mean shift)
            image = _same_tensor(x, example) or not outputs
            reads.append(_Read(name, module, x, image, _producer(outputs, x)))

        return hook

    modules = dict(model.named_modules())
    handles = []
    for name, module in modules.items():
        if name:
            handles.append(module.register_forward_hook(record(name)))
        if isinstance(module, CONV_TYPES):
            handles.append(module.register_forward_pre_hook(read(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:
        raise PimcError(f"the model does not run on input shape {tuple(input_shape)}: {exc}") from None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return reads


def _producer(outputs: list, x: torch.Tensor) -> tuple[str, nn.Module, int] | None:
    """The latest-finished module output that is ``x`` with ``x``'s current values (not changed in place since)."""
    for name, module, call, tensor, values in reversed(outputs):
        if _same_tensor(tensor, x):
            return (name, module, call) if torch.equal(values, x) else None
    return None


def _sites(reads: list[_Read], stream: bool) -> list[GateSite]:
    """The gates of the non-image conv reads, in execution order of their first reader."""
    sites: list[GateSite] = []
    shared: list[tuple[torch.Tensor, GateSite]] = []
    for r in (r for r in reads if not r.image):
        if stream and r.producer is not None:
            site = next((s for t, s in shared if _same_tensor(t, r.tensor)), None)
            if site is not None:
                site.readers.append(r.conv)
                continue
            name, module, call = r.producer
            label = name if call == 0 else f"{name}#{call}"
            site = GateSite(label, [r.conv], int(r.tensor.shape[1]), module, call, True)
            shared.append((r.tensor, site))
        else:
            site = GateSite(r.conv, [r.conv], int(r.module.in_channels), r.module, 0, False)
        sites.append(site)
    return sites


def _run_pre_hooks_of_functional_convs(model: nn.Module) -> None:
    """``models/from_onnx.OnnxModule`` calls ``F.conv2d`` with a Conv2d's weights (its ``_layer``), which
    skips the module's forward pre-hooks: run them there too, so the gates see its convs' inputs."""
    original = getattr(type(model), "_layer", None)
    if original is None or "_layer" in vars(model):
        return

    def layer(op: str, x: torch.Tensor, attrs: dict, module: nn.Module) -> torch.Tensor:
        for hook in list(module._forward_pre_hooks.values()):
            result = hook(module, (x,))
            if result is not None:
                x = result[0] if isinstance(result, tuple) else result
        return original(op, x, attrs, module)

    model._layer = layer


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape)
