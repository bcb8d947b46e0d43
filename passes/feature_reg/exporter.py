"""Feature Regularization (pimc's own definition): input-dependent channel sparsity of the conv inputs.

The seed paper's exact regularizer and thresholding are unknown (``docs/sources.md``); pimc defines:

**Gate.** In front of every conv except those reading the network input (the image), a threshold gate

    y = x · 1(|x| > t_l[k])                      (ONNX: Where(Greater(Abs(x), t), x, 0))

zeroes the small features of layer l. Which channels survive at a pixel depends on the input, so the
sparsity is along the channel dimension at each pixel and input-dependent. ``t`` has one value per layer
``l`` and per sparsity level ``k``: the table ``T ∈ R^{K×L}`` is one initializer, and the graph input
``sparsity_level`` (int64 scalar, with a default-valued initializer, so feeding it is optional) selects
the row: ``t_l = Gather(Gather(T, level), l)``. One trained model serves every level.

**Placement** (``placement``, CLI ``--gate-placement``). ``conv-input`` (the default): a gate in front of each
conv (a forward pre-hook), l indexes the convs. A map that other nodes also read — a block output read by the
next block's conv1 and by the identity shortcut's Add, or by a 1×1 shortcut conv — then reaches those other
readers ungated, so the map a target stores off chip is the ungated one and the gate only runs as a conv
fetches it (``activation-sparsity``'s ``input_stored_zero_fraction``). ``stream``: one gate per distinct
tensor x_l that gated convs read, on the module that produced it (a forward hook on the latest module to
finish whose output is x_l — a ReLU, a residual block, a stage; a module called several times in one
forward, like a block's shared ReLU, is gated at the one call that made x_l), so l indexes the maps: every
reader (each conv, the residual Add) reads the gated map, the stored map is the gated one, and two convs
reading one map share one gate, one threshold column and one penalty term. The producer is found in the
tracing pass; a map no module output is (a functional ``F.relu``, or changed in place after its module
returned) keeps conv-input gates, counted as ``fallback_gates`` in the summary. The gate's math is the
same in both placements; in ``stream`` the residual path carries the gated map too, so the gate changes the
block's identity term as well as its conv input.

**Thresholds are calibrated, not learned.** For level k with target zero fraction s_k, t_l[k] is the
s_k-quantile of |x_l| (the k-th smallest value with k = ⌈s_k·n⌉, so at least s_k of the values are ≤ t and
become zero; a post-ReLU input whose natural zeros already exceed s_k gets t = 0, which keeps every
non-zero). During the regularized fine-tune every batch uses its own quantile (the batch's sparsity is
exactly s_k — ramped up linearly from 0 over the first ``ramp`` of the steps, so the network is sparsified
gradually; gradients flow through the kept features only, like the inference gate) and keeps an
exponential running average for evaluation, as BatchNorm does; afterwards one forward pass over
``calibration`` training images sets the table exactly, layer after layer in execution order (each gate
sees its upstream gates already applied at the same level).

**A level is a floor on unseen images.** The exact quantile meets s_k on the calibration images only; on
other images each layer's zero fraction scatters around it, so about half the layers would fall just short.
Calibration therefore aims each layer at s_k + z·σ_l/√n, with σ_l the standard deviation over the n
calibration images of their per-image zero fractions at the exact quantile, and z = ``floor_z`` (2 by
default; 0 gives the exact quantile): the standard error of a mean of n images, z of them as a guard band.

**Penalty.** For the input x_l ∈ R^{N×C×P} of each gated conv (P pixels),

    R = λ · (1/L) Σ_l  [ (1/(N·P)) Σ_{n,p} ‖x_l[n, :, p]‖₁ / C ]  /  rms(x_l)

i.e. the mean over pixels of the per-pixel channel L1 norm, normalised per layer by the channel count and
the layer's RMS (differentiable, so the ratio is scale-invariant: a layer cannot lower it by shrinking all
its features, only by concentrating its energy in fewer channels per pixel — an L1/L2, Hoyer-style
sparsity measure). It is computed on the gate's input, before thresholding.

**Training.** (1) dense pre-training (the model ``--dense-output`` exports); (2) regularized fine-tune:
cross-entropy at the level of the step (levels cycle over the batches) + R, gates on batch quantiles;
(3) exact calibration; (4) optional fine-tune with the table frozen, then the calibration once more (the
weights moved, so the exported table meets the targets on the training images again). BatchNorm layers keep their dense
running statistics during (2) and (4) (eval mode, affine parameters still trained), so training and
inference normalise identically at every level and no per-level BatchNorm is needed.

**Default level.** A held-out, seeded part of the training split (``val_fraction``, never trained on) is
the validation set: the default is the highest level whose validation accuracy is within
``max_accuracy_drop`` points of the dense model's; the test split is not used for this choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ...compiler.errors import PimcError

LEVEL_INPUT = "sparsity_level"
TABLE_NAME = "feature_reg.thresholds"
METADATA_KEY = "pimc.feature_reg"
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRACK_SAMPLE = 1 << 16  # values a training step's quantile is estimated from
PLACEMENTS = ("conv-input", "stream")  # where the gates sit (see the module docstring)


@dataclass
class FeatureRegConfig:
    """The regularizer, the levels and the fine-tuning schedule (CLI defaults are these)."""

    levels: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8)
    penalty: float = 0.5
    epochs: int = 14
    ramp: float = 0.4
    frozen_epochs: int = 0
    frozen_lr_scale: float = 0.1
    lr: float = 1e-3
    momentum: float = 0.1
    calibration: int = 512
    val_fraction: float = 0.15
    max_accuracy_drop: float = 1.0
    floor_z: float = 2.0
    placement: str = "conv-input"

    def check(self) -> None:
        if not self.levels:
            raise PimcError("--levels needs at least one target zero fraction")
        if any(not 0.0 <= s < 1.0 for s in self.levels):
            raise PimcError(f"--levels must be zero fractions in [0, 1), got {list(self.levels)}")
        if list(self.levels) != sorted(set(self.levels)):
            raise PimcError(f"--levels must be strictly increasing, got {list(self.levels)}")
        if self.penalty < 0:
            raise PimcError(f"--penalty must not be negative, got {self.penalty}")
        if self.epochs < 1 or self.frozen_epochs < 0:
            raise PimcError("--reg-epochs must be positive and --frozen-epochs not negative")
        if not 0.0 <= self.ramp <= 1.0:
            raise PimcError(f"--ramp must be in [0, 1], got {self.ramp}")
        if not 0.0 < self.val_fraction < 1.0:
            raise PimcError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.calibration < 1:
            raise PimcError(f"--calibration must be positive, got {self.calibration}")
        if not 0.0 <= self.floor_z <= 10.0:
            raise PimcError(f"--floor-z must be in [0, 10], got {self.floor_z}")
        check_placement(self.placement)


def check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise PimcError(f"--gate-placement must be one of {', '.join(PLACEMENTS)}, got '{placement}'")


class ThresholdGate(nn.Module):
    """``y = x · 1(|x| > t)``; ``t`` comes from the bank's table (or the batch quantile while tracking)."""

    def __init__(self, index: int, channels: int):
        super().__init__()
        self.index = index
        self.channels = channels

    def forward(self, x: torch.Tensor, bank: GateBank) -> torch.Tensor:
        if bank.mode in ("track", "calibrate"):
            t = bank.observe(self.index, x)
        else:
            t = bank.threshold(self.index)
        if bank.penalize:
            bank.penalties.append(channel_l1(x))
        return torch.where(x.abs() > t, x, 0.0)


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
    """The gates of one model and their threshold table ``T[level, layer]``.

    ``mode``: ``fixed`` reads ``T[level]`` (``level`` an int, or a 0-d int64 tensor while exporting);
    ``track`` uses each batch's quantile and updates T by a running average; ``calibrate`` sets T to the
    batch quantile.
    """

    def __init__(self, levels: Sequence[float], channels: Sequence[int], momentum: float = 0.1):
        super().__init__()
        self.levels = tuple(float(s) for s in levels)
        self.gates = nn.ModuleList(ThresholdGate(i, c) for i, c in enumerate(channels))
        self.register_buffer("table", torch.zeros(len(self.levels), len(self.gates)))
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


class GatedModel(nn.Module):
    """``model`` with threshold gates on the inputs of every conv that does not read the network input.

    ``placement="conv-input"``: one gate in front of each such conv (a forward pre-hook). ``"stream"``: one
    gate per distinct tensor those convs read, on the module that produced it (a forward hook), shared by all
    of the tensor's readers; a tensor no module produced as it is read (a functional op made it, or changed it
    in place) keeps conv-input gates. The hooks leave ``model``'s own modules and state-dict keys unchanged.
    ``forward(x, level=None)``: ``level`` (0-d int64 tensor) overrides ``bank.level``, as in the ONNX file.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], levels: Sequence[float],
                 momentum: float = 0.1, placement: str = "conv-input"):
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
        self.bank = GateBank(levels, [site.channels for site in self.sites], momentum)
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
            reads.append(_Read(name, module, x, _same_tensor(x, example), _producer(outputs, x)))

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


@dataclass
class FeatureRegResult:
    """What the fine-tune produced: the gated model, the default level and the validation accuracies."""

    gated: GatedModel
    default_level: int
    val_accuracy: list[float]
    val_accuracy_dense: float
    val_samples: int
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        bank = self.gated.bank
        return {
            "levels": list(bank.levels), "default_level": self.default_level,
            "default_target": bank.levels[self.default_level],
            "gated_convs": self.gated.names, "ungated_convs": self.gated.first,
            "gate_placement": self.gated.placement,
            "gates": [{"name": site.name, "placement": "stream" if site.stream else "conv-input",
                       "readers": site.readers} for site in self.gated.sites],
            "stream_gates": sum(site.stream for site in self.gated.sites),
            "fallback_gates": sum(not site.stream for site in self.gated.sites)
            if self.gated.placement == "stream" else 0,
            "thresholds": {site.name: [round(float(bank.table[k, i]), 6) for k in range(len(bank.levels))]
                           for i, site in enumerate(self.gated.sites)},
            "val_accuracy_dense": self.val_accuracy_dense, "val_accuracy": self.val_accuracy,
            "val_samples": self.val_samples, "losses": self.losses,
        }


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train indices, validation indices) of n training samples; validation ≥ 1 sample."""
    perm = np.random.default_rng(seed + 7919).permutation(n)
    count = min(n - 1, max(1, round(fraction * n)))
    return np.sort(perm[count:]), np.sort(perm[:count])


def feature_regularize(
    model: nn.Module, loader: DataLoader, calib_x: np.ndarray, val: tuple[np.ndarray, np.ndarray],
    input_shape: tuple[int, ...], config: FeatureRegConfig, seed: int = 0, progress: bool = True,
) -> FeatureRegResult:
    """Fine-tune a trained ``model`` with gates + penalty, calibrate the table and pick the default level."""
    from ...models.train import evaluate_torch

    config.check()
    dense_val = evaluate_torch(model, *val)
    gated = GatedModel(model, input_shape, config.levels, config.momentum, config.placement)
    torch.manual_seed(seed)
    losses = _fine_tune(gated, loader, config, config.epochs, "track", config.penalty, progress, "feature-reg")
    calibrate(gated, calib_x, config.floor_z)
    if config.frozen_epochs:
        losses += _fine_tune(gated, loader, config, config.frozen_epochs, "fixed", 0.0, progress, "frozen gates")
        calibrate(gated, calib_x, config.floor_z)  # the weights moved: the table meets the targets again
    accs = [level_accuracy(gated, k, *val) for k in range(len(config.levels))]
    within = [k for k, a in enumerate(accs) if (dense_val - a) * 100 <= config.max_accuracy_drop + 1e-9]
    default = max(within) if within else 0
    gated.bank.level = default
    return FeatureRegResult(gated, default, accs, dense_val, len(val[0]), losses)


def level_accuracy(gated: GatedModel, level: int, x: np.ndarray, y: np.ndarray) -> float:
    from ...models.train import evaluate_torch

    gated.bank.mode, gated.bank.level = "fixed", level
    return evaluate_torch(gated, x, y)


@torch.no_grad()
def calibrate(gated: GatedModel, x: np.ndarray, floor_z: float = 0.0) -> None:
    """Set every level's thresholds from one forward pass over ``x`` (training images), each ``floor_z``
    standard errors above the level (:func:`floor_margin`)."""
    bank = gated.bank
    was_training = gated.training
    gated.eval()
    bank.mode, bank.floor_z = "calibrate", floor_z
    batch = torch.from_numpy(np.asarray(x, np.float32))
    try:
        for level in range(len(bank.levels)):
            bank.level = level
            gated(batch)
            bank.seen[level] = True
    finally:
        bank.mode, bank.floor_z = "fixed", 0.0
        gated.train(was_training)


def _fine_tune(gated: GatedModel, loader: DataLoader, config: FeatureRegConfig, epochs: int, mode: str,
               penalty: float, progress: bool, desc: str) -> list[float]:
    """Cross-entropy at the step's level (levels cycle) + λ·R; BatchNorm keeps its running statistics.

    The frozen-gate phase starts a fresh Adam on an already fine-tuned network, whose first steps (≈ lr per
    weight) would undo it at the full rate: it runs at ``frozen_lr_scale`` × lr."""
    bank = gated.bank
    params = [p for p in gated.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr * (1.0 if mode == "track" else config.frozen_lr_scale))
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    loss_fn = nn.CrossEntropyLoss()
    history, step = [], 0
    ramp = config.ramp * total if mode == "track" else 0
    bank.mode, bank.penalize = mode, penalty > 0
    bar = tqdm(range(epochs), desc=desc, disable=not progress, unit="epoch", leave=False)
    try:
        for _ in bar:
            _train_mode(gated)
            epoch = []
            for xb, yb in loader:
                bank.level = step % len(bank.levels)
                bank.scale = min(1.0, (step + 1) / ramp) if ramp else 1.0
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(gated(xb), yb)
                if penalty > 0:
                    loss = loss + penalty * bank.penalty()
                loss.backward()
                opt.step()
                sched.step()
                if mode == "track":
                    bank.seen[bank.level] = True
                epoch.append(float(loss.detach()))
                step += 1
            history.append(float(np.mean(epoch)) if epoch else 0.0)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    finally:
        bank.mode, bank.penalize, bank.penalties, bank.scale = "fixed", False, [], 1.0
        gated.eval()
    return history


def _train_mode(gated: GatedModel) -> None:
    gated.train()
    for module in gated.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class _LevelWrapper(nn.Module):
    def __init__(self, gated: GatedModel):
        super().__init__()
        self.gated = gated

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.gated(x, level)


def export_feature_reg_onnx(result: FeatureRegResult, path: str | Path, input_shape: tuple[int, ...],
                            opset: int = 17) -> Path:
    """Write the gated model: inputs ``input`` and ``sparsity_level`` (int64 scalar, defaulted)."""
    from ...compiler.modelio import write_model
    from ...models.train import _quiet, _temp_onnx, _unshare_initializers

    gated = result.gated
    bank = gated.bank
    saved, was_training = bank.level, gated.training
    wrapper = _LevelWrapper(gated).eval()  # the exporter restores the wrapper's (and so gated's) mode
    example = (torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)),
               torch.tensor(result.default_level, dtype=torch.int64))
    try:
        with _temp_onnx() as tmp, _quiet():
            torch.onnx.export(
                wrapper, example, str(tmp), dynamo=False, opset_version=opset,
                do_constant_folding=True, input_names=["input", LEVEL_INPUT], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
            proto = _unshare_initializers(onnx.load(str(tmp)))
    finally:
        bank.level = saved
        gated.train(was_training)
    _finish_graph(proto, result)
    return write_model(proto, Path(path))


def _finish_graph(proto: onnx.ModelProto, result: FeatureRegResult) -> None:
    """Default the level input, name the table, and record levels / default / gated convs as metadata."""
    import json

    graph = proto.graph
    for node in graph.node:
        node.name = node.name.replace("/gated/model/", "/", 1)
    table = [t for t in graph.initializer if tuple(t.dims) == tuple(result.gated.bank.table.shape)
             and t.data_type == onnx.TensorProto.FLOAT]
    if len(table) == 1:
        _rename_tensor(graph, table[0].name, TABLE_NAME)
    if not any(i.name == LEVEL_INPUT for i in graph.input):
        raise PimcError("export lost the sparsity_level input (the gates do not read it)")
    graph.initializer.append(numpy_helper.from_array(np.array(result.default_level, np.int64), LEVEL_INPUT))
    for value in graph.input:
        if value.name == LEVEL_INPUT:
            value.CopyFrom(helper.make_tensor_value_info(LEVEL_INPUT, onnx.TensorProto.INT64, []))
    info = {"levels": list(result.gated.bank.levels), "default_level": result.default_level,
            "level_input": LEVEL_INPUT, "table": TABLE_NAME}
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(info, sort_keys=True))


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for tensor in graph.initializer:
        if tensor.name == old:
            tensor.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]


def conv_input_zero_fractions(path: str | Path, x: np.ndarray, level: int | None = None,
                              batch: int = 128) -> dict[str, float]:
    """Per Conv node of the ONNX file: the fraction of exact zeros in its data input, on onnxruntime.

    Every Conv's input becomes a graph output of a copy of the model; ``level`` feeds ``sparsity_level``
    (None: the file's default). Keyed by the Conv node's name (its output name if it has none).
    """
    from ...compiler.sessions import open_session, session_options

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    outputs = {o.name for o in model.graph.output}
    for node in convs:
        if node.input[0] not in outputs:
            model.graph.output.append(helper.make_empty_tensor_value_info(node.input[0]))
            outputs.add(node.input[0])
    options = session_options()
    options.intra_op_num_threads = 1
    session = open_session(model, options)
    names = [n.input[0] for n in convs]
    zeros = np.zeros(len(names))
    total = np.zeros(len(names))
    data_name = session.get_inputs()[0].name
    for start in range(0, len(x), batch):
        feed = {data_name: np.asarray(x[start:start + batch], np.float32)}
        if level is not None:
            feed[LEVEL_INPUT] = np.array(level, np.int64)
        values = session.run(names, feed)
        for i, v in enumerate(values):
            zeros[i] += float(np.count_nonzero(v == 0))
            total[i] += v.size
    return {(n.name or n.output[0]): float(z / max(t, 1)) for n, z, t in zip(convs, zeros, total, strict=True)}


def image_convs(path: str | Path) -> list[str]:
    """Conv nodes (names, else output names) whose data input is a graph input: the ungated first convs."""
    model = onnx.load(str(path), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    return [n.name or n.output[0] for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def level_metadata(path: str | Path) -> dict | None:
    """The ``pimc.feature_reg`` metadata of an exported file (levels, default level), or None."""
    import json

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None
