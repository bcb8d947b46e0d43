"""The gates (a calibrated threshold, or a per-pixel top-k), one setting per sparsity level, and the gated model
(the method and the math: ``exporter.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.onnx.operators
from torch import nn

from ...compiler.errors import PimcError
from .config import check_gate, check_placement
from .placement import GateSite, _sites, _trace

TRACK_SAMPLE = 1 << 16  # values a training step's quantile is estimated from


class Gate(nn.Module):
    """One gate of a ``GateBank``: its column ``index`` in the bank's tables and the channels of its input. Its
    input's penalty term is collected here (while the bank penalizes); ``gate`` zeroes what the kind zeroes."""

    def __init__(self, index: int, channels: int):
        super().__init__()
        self.index = index
        self.channels = channels

    def forward(self, x: torch.Tensor, bank: GateBank) -> torch.Tensor:
        if bank.penalize:
            bank.penalties.append(channel_l1(x))
        return self.gate(x, bank)

    def gate(self, x: torch.Tensor, bank: GateBank) -> torch.Tensor:
        raise NotImplementedError


class ThresholdGate(Gate):
    """``y = x · 1(|x| > t)``; ``t`` comes from the bank's table (or the batch quantile while tracking)."""

    def gate(self, x: torch.Tensor, bank: GateBank) -> torch.Tensor:
        if bank.mode in ("track", "calibrate"):
            t = bank.observe(self.index, x)
        else:
            t = bank.threshold(self.index)
        return torch.where(x.abs() > t, x, 0.0)


class TopKGate(Gate):
    """``y = x · 1(|x| ≥ k-th largest |x[n, :, p]|)``: at most ``k`` channels (ties aside) survive at each pixel."""

    def gate(self, x: torch.Tensor, bank: GateBank) -> torch.Tensor:
        k = bank.keep(self.index)
        position = (k - 1).reshape(1) if isinstance(k, torch.Tensor) else torch.tensor([k - 1])
        magnitude = x.abs()
        kth = magnitude.sort(dim=1, descending=True).values.index_select(1, position)
        return torch.where(magnitude >= kth, x, 0.0)


class ImageQuantileGate(Gate):
    """``y = x · 1(|x| ≥ q_n)``, q_n the ⌈(1 − s)·L⌉-th largest |x| of image n's whole map (L values): every
    image's map keeps at most that many values (ties aside), wherever they are."""

    def gate(self, x: torch.Tensor, bank: GateBank) -> torch.Tensor:
        magnitude = x.abs()
        flat = magnitude.flatten(1)
        size = torch.onnx.operators.shape_as_tensor(flat)[1].to(torch.float32)  # traced: the map size is symbolic
        keep = torch.clamp(size - torch.ceil(bank.fraction() * size - 1e-6), min=1.0).to(torch.int64)
        if torch.onnx.is_in_onnx_export():  # Sort + Gather: the k-th largest of a map of symbolic size
            kth = flat.sort(dim=1, descending=True).values.index_select(1, (keep - 1).reshape(1))
        else:  # the same value, without sorting every map of every training step
            kth = flat.kthvalue(flat.shape[1] - int(keep) + 1, dim=1, keepdim=True).values
        return torch.where(magnitude >= kth.reshape(-1, *([1] * (x.dim() - 1))), x, 0.0)


def keep_count(channels: int, fraction: float) -> int:
    """Channels a top-k gate keeps per pixel so that at least ``fraction`` of them are zero (at least one)."""
    return max(1, channels - math.ceil(fraction * channels - 1e-9))


def channel_l1(x: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ‖x[n, :, p]‖₁ / C, divided by rms(x) (see the module docstring)."""
    l1 = x.abs().sum(dim=1).mean() / x.shape[1]
    return l1 / (x.pow(2).mean().sqrt() + 1e-8)


def quantile_threshold(x: torch.Tensor, fraction: float, sample: int | None = None) -> torch.Tensor:
    """The k-th smallest |x| with k = ⌈fraction·n⌉ (0 for fraction 0): |x| > t zeroes ≥ fraction of x.

    ``sample``: estimate it from that many values drawn at random (training steps; calibration is exact).
    """
    flat = x.detach().abs().reshape(-1)
    if sample is not None and flat.numel() > sample:
        flat = flat[torch.randint(flat.numel(), (sample,))]
    k = math.ceil(fraction * flat.numel())
    if k < 1:
        return flat.new_zeros(())
    return flat.kthvalue(min(k, flat.numel())).values


def floor_margin(x: torch.Tensor, t: torch.Tensor, z: float) -> float:
    """z standard errors of the mean per-image zero fraction of ``x`` gated at ``t`` (images on axis 0)."""
    if x.shape[0] < 2:
        return 0.0
    per_image = (x.detach().abs() <= t).reshape(x.shape[0], -1).float().mean(dim=1)
    return float(z * per_image.std() / math.sqrt(x.shape[0]))


class GateBank(nn.Module):
    """The gates of one model, their threshold table ``T[level, layer]`` and their keep table ``K[level, layer]``.

    ``kind="threshold"``: ``mode`` ``fixed`` reads ``T[level]`` (``level`` an int, or a 0-d int64 tensor while
    exporting); ``track`` uses each batch's quantile and updates T by a running average; ``calibrate`` sets T to
    the batch quantile. ``kind="topk"``: K is fixed by the levels and the channel counts; ``kind="image"``: each
    image's own quantile at the level (``level_table``). Neither is calibrated.
    """

    def __init__(self, levels: Sequence[float], channels: Sequence[int], momentum: float = 0.1,
                 kind: str = "threshold"):
        super().__init__()
        check_gate(kind)
        self.kind = kind
        self.levels = tuple(float(s) for s in levels)
        gate = {"topk": TopKGate, "image": ImageQuantileGate}.get(kind, ThresholdGate)
        self.gates = nn.ModuleList(gate(i, c) for i, c in enumerate(channels))
        self.register_buffer("table", torch.zeros(len(self.levels), len(self.gates)))
        self.register_buffer("level_table", torch.tensor(self.levels, dtype=torch.float32))
        self.register_buffer("keep_table", torch.tensor(
            [[keep_count(c, s) for c in channels] for s in self.levels], dtype=torch.int64).reshape(
            len(self.levels), len(self.gates)))
        self.momentum = momentum
        self.mode = "fixed"
        self.level: int | torch.Tensor = len(self.levels) - 1
        self.penalize = False
        self.penalties: list[torch.Tensor] = []
        self.seen = torch.zeros(len(self.levels), dtype=torch.bool)
        self.scale = 1.0  # the regularized fine-tune ramps the targets up: s_k · scale
        self.floor_z = 0.0  # calibration's guard band, in standard errors (see the module docstring)

    def threshold(self, index: int) -> torch.Tensor:
        if isinstance(self.level, torch.Tensor):
            return torch.index_select(self.table, 0, self.level.reshape(1))[0, index]
        return self.table[self.level, index]

    def fraction(self) -> torch.Tensor:
        """The current level's target zero fraction (ramped while tracking), as a 0-d tensor."""
        if isinstance(self.level, torch.Tensor):
            return torch.index_select(self.level_table, 0, self.level.reshape(1))[0]
        scale = self.scale if self.mode == "track" else 1.0
        return torch.tensor(self.levels[self.level] * scale, dtype=torch.float32)

    def keep(self, index: int) -> int | torch.Tensor:
        """Channels the top-k gate ``index`` keeps per pixel at the current level (ramped while tracking)."""
        if isinstance(self.level, torch.Tensor):
            return torch.index_select(self.keep_table, 0, self.level.reshape(1))[0, index]
        if self.mode != "track":
            return int(self.keep_table[self.level, index])
        return keep_count(self.gates[index].channels, self.levels[self.level] * self.scale)

    def observe(self, index: int, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.level, int)
        track = self.mode == "track"
        target = self.levels[self.level] * (self.scale if track else 1.0)
        t = quantile_threshold(x, target, TRACK_SAMPLE if track else None)
        if self.mode == "calibrate" and self.floor_z > 0 and target > 0:
            t = quantile_threshold(x, min(target + floor_margin(x, t, self.floor_z), 1.0))
        with torch.no_grad():
            if self.mode == "calibrate" or not bool(self.seen[self.level]):
                self.table[self.level, index] = t
            else:
                old = self.table[self.level, index]
                self.table[self.level, index] = (1 - self.momentum) * old + self.momentum * t
        return t

    def penalty(self) -> torch.Tensor:
        """Mean of the per-layer channel-L1 terms collected in the last forward pass (then cleared)."""
        terms, self.penalties = self.penalties, []
        return torch.stack(terms).mean() if terms else torch.zeros(())


class GatedModel(nn.Module):
    """``model`` with threshold gates on the inputs of every conv that does not read the network input.

    ``placement="conv-input"``: one gate in front of each such conv (a forward pre-hook). ``"stream"``: one
    gate per distinct tensor those convs read, on the module that produced it (a forward hook), shared by all
    of the tensor's readers; a tensor no module produced as it is read (a functional op made it, or changed it
    in place) keeps conv-input gates. The hooks leave ``model``'s own modules and state-dict keys unchanged.
    ``forward(x, level=None)``: ``level`` (0-d int64 tensor) overrides ``bank.level``, as in the ONNX file.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], levels: Sequence[float],
                 momentum: float = 0.1, placement: str = "conv-input", gate: str = "threshold"):
        super().__init__()
        check_placement(placement)
        self.model = model
        self.placement = placement
        reads = _trace(model, input_shape)
        self.first = [r.conv for r in reads if r.image]
        self.gated = [(r.conv, r.module) for r in reads if not r.image]
        self.sites = _sites(reads, placement == "stream")
        if not self.sites:
            raise PimcError("the model has no conv after the first one: nothing to gate")
        self.bank = GateBank(levels, [site.channels for site in self.sites], momentum, gate)
        self._calls: dict[int, int] = {}
        self._hooks = [self._pre_hook(i, site) for i, site in enumerate(self.sites) if not site.stream]
        self._hooks += [self._output_hook(module, by_call) for module, by_call in self._stream_modules()]

    def _pre_hook(self, index: int, site: GateSite):
        gate = self.bank.gates[index]
        return site.module.register_forward_pre_hook(lambda _m, args: (gate(args[0], self.bank), *args[1:]))

    def _stream_modules(self) -> list[tuple[nn.Module, dict[int, int]]]:
        """(module, {call index: gate index}) of every module that stream gates sit on."""
        modules: dict[int, tuple[nn.Module, dict[int, int]]] = {}
        for index, site in enumerate(self.sites):
            if site.stream:
                modules.setdefault(id(site.module), (site.module, {}))[1][site.call] = index
        return list(modules.values())

    def _output_hook(self, module: nn.Module, by_call: dict[int, int]):
        def hook(module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            call = self._calls.get(id(module), 0)
            self._calls[id(module)] = call + 1
            index = by_call.get(call)
            return None if index is None else self.bank.gates[index](output, self.bank)

        return module.register_forward_hook(hook)

    def forward(self, x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        if level is not None:
            self.bank.level = level
        self._calls.clear()
        return self.model(x)

    @property
    def names(self) -> list[str]:
        """The gated convs, in execution order."""
        return [name for name, _ in self.gated]
