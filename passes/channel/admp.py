"""ADMP, cross-domain channel pruning (``pimc export admp``): prune a model for a target domain without its labels.

Only the seed paper's abstract is public (``docs/sources.md``): a full-size teacher gives pseudo-labels and
measures the domain divergence as the teacher–student output difference; a soft and a hard mask are trained
adversarially; ADMM handles the {0, 1} constraint of the masks. pimc's own definition of every detail:

**1. Teacher: self-training with distribution alignment** (AdaMatch, Berthelot et al., ICLR 2022; the
alignment of ReMixMatch, ICLR 2020). From the model trained on the labelled source S (its batches randomly
shifted, rotated and scaled, A), over batches of source images and as many unlabelled target images x_t (an
epoch covers the larger domain once, the smaller one's batches repeating):

    L_adapt = CE(y_s, model(A(x_s))) + β · c · CE(ŷ_t, model(x_t)) [+ w_d · BCE(D(R_λ(f)), domain)]
    p̃_t = normalise(p_t · min(p̄_s / p̄_t, 10)),   ŷ_t = argmax p̃_t,   kept where max p̃_t ≥ ``confidence``

p_t the softmax on the target images, p̄_s and p̄_t the batch means of the source and target softmax: the
alignment rescales the target predictions to the source's class balance (the factor bounded by 10 when a
class has all but vanished from the target predictions), without which the confident pseudo-labels pile
onto a few classes and self-training reinforces them. c is the share of kept target images, β
``self_training``. The bracketed term is optional (``domain_weight`` w_d, default 0): DANN (Ganin &
Lempitsky, ICML 2015), a domain head D (two linear layers) on the features f (the input of the last Linear
layer) behind a gradient reversal layer R_λ (identity forward, −λ·gradient backward), λ = 2 / (1 + e^(−10 p)) − 1,
p the share of training done. On MNIST ↔ digits it lowered the adapted accuracy
(``docs/results/channel_pruning.md``), so it is off by default. The adapted model is the teacher T and the
unpruned baseline.

**2. Student: soft and hard channel masks.** The student starts as T (as ONNX, BatchNorms folded, back in
torch). Every channel group g (``channel_prune.channel_groups``: the producers of a residual stream share
one) gets a soft mask m_g ∈ R^C multiplying its producers' outputs, and a hard mask Z_g ∈ {0, 1}^C with
exactly k_g = (1 − ratio)·C ones (rounded to ``block``). ADMM (``models/admm.py``) splits the constraint
m_g = Z_g: the weights and m minimise

    L = CE(y_s, S(A(x_s))) + β · c · CE(ŷ_t^T, S(x_t)) + α · τ² · KL(T(x_t)/τ ‖ S(x_t)/τ)
        + ρ/2 · Σ_g ‖m_g − Z_g + U_g‖²

and after every epoch Z_g = the top-k_g indicator of |m_g + U_g| (the projection onto the hard masks) and
U_g ← U_g + m_g − Z_g. The teacher gives the pseudo-labels ŷ_t^T (aligned as in 1) and, at temperature τ,
the divergence: how far the student has drifted from the teacher on the target domain. The soft mask pulls
towards what the losses want, the hard mask towards the constraint: the adversarial pair.

**3. Hard pruning.** m_g := Z_g, frozen; ``finetune_epochs`` more epochs of the same loss without the ADMM term;
the masks are folded into the producers (W[c], b[c] times m_c) and ``shrink`` removes the zeroed channels.

**Baseline (prune, then adapt).** The source-only model pruned on the source (``channel-prune`` at the same
ratio and block, readers refitted), fine-tuned on the source, then adapted as in 1 (its own pseudo-labels:
it has no teacher).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ...compiler.errors import PimcError
from .admp_config import AdmpConfig
from .channel_prune import channel_groups, kept_counts


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


class _FeatureTap:
    """The input of ``model``'s last Linear layer on the latest forward pass, flattened."""

    def __init__(self, model: nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise PimcError("admp: the model has no Linear layer whose input could serve as its features")
        self.value: torch.Tensor | None = None
        self.handle = linears[-1].register_forward_pre_hook(self._keep)

    def _keep(self, _module, args) -> None:
        self.value = args[0].flatten(1)


@dataclass
class Domains:
    """Source batches (labelled) and the unlabelled target images, sampled alongside. An epoch of adaptation
    covers the larger domain once: the source batches cycle when the target has more images."""

    source: DataLoader
    target_x: np.ndarray
    seed: int = 0

    def epoch(self) -> _Cycled:
        size = getattr(self.source, "batch_size", None) or 64
        return _Cycled(self.source, max(len(self.source), math.ceil(len(self.target_x) / size)))

    def target_batches(self, size: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(self.target_x), (size,), generator=generator)
        return torch.from_numpy(np.asarray(self.target_x, np.float32))[index]


@dataclass
class _Cycled:
    """``steps`` batches of ``loader``, starting it again as often as needed."""

    loader: DataLoader
    steps: int

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        done = 0
        while done < self.steps:
            start = done
            for batch in self.loader:  # a new pass (and shuffle) of the loader each time round
                if done == self.steps:
                    return
                done += 1
                yield batch
            if done == start:  # an empty loader
                return


def _domain_head(features: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 100), nn.ReLU(), nn.Linear(100, 1))


ALIGNMENT_BOUND = 10.0  # the largest factor by which alignment lifts a class (module docstring, 1)


def aligned_pseudo_labels(target_logits: torch.Tensor, source_logits: torch.Tensor, confidence: float
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """ŷ_t and the kept-image mask of the module docstring's alignment, from one batch's logits."""
    target = F.softmax(target_logits, dim=1)
    ratio = (F.softmax(source_logits, dim=1).mean(0) / target.mean(0).clamp_min(1e-12)).clamp(max=ALIGNMENT_BOUND)
    aligned = target * ratio
    aligned = aligned / aligned.sum(dim=1, keepdim=True)
    best, labels = aligned.max(dim=1)
    return labels, best >= confidence


class _DomainLoss:
    """The optional DANN term of 1: the domain head on the tapped features behind gradient reversal."""

    def __init__(self, model: nn.Module, probe: torch.Tensor, total_steps: int):
        self.tap = _FeatureTap(model)
        with torch.no_grad():
            model.eval()
            model(probe)
        self.head = _domain_head(self.tap.value.shape[1])
        self.total, self.step = max(1, total_steps), 0

    def __call__(self, sources: int) -> torch.Tensor:
        scale = 2.0 / (1.0 + math.exp(-10.0 * self.step / self.total)) - 1.0
        domain = self.head(_Reverse.apply(self.tap.value, scale)).squeeze(1)
        labels = torch.cat([torch.zeros(sources), torch.ones(len(domain) - sources)])
        return F.binary_cross_entropy_with_logits(domain, labels)


def train_domains(model: nn.Module, domains: Domains, epochs: int, config: AdmpConfig, *, teacher: nn.Module | None
                  = None, penalty=None, after_step=None, seed: int = 0, progress: bool = True,
                  desc: str = "adapt") -> None:
    """The adaptation of 1 on ``model``; with ``teacher``, the student's loss of 2 (``penalty()`` its ADMM term,
    ``after_step()`` its Z/U updates)."""
    from ...models.train import Hooks, run_training, soft_divergence

    if epochs < 1:
        return
    generator = torch.Generator().manual_seed(seed)
    augment = config.augment()
    domain = (_DomainLoss(model, domains.target_batches(2, generator), epochs * len(domains.epoch()))
              if config.domain_weight else None)
    params = [p for p in model.parameters() if p.requires_grad] + (list(domain.head.parameters()) if domain else [])
    opt = torch.optim.Adam(params, lr=config.lr)

    def loss(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        xs = augment(xs, generator)
        xt = domains.target_batches(len(xs), generator)
        both = torch.cat([xs, xt])
        logits = model(both)
        value = F.cross_entropy(logits[: len(xs)], ys)
        if domain is not None:
            value = value + config.domain_weight * domain(len(xs))
        with torch.no_grad():
            labeller = teacher(both) if teacher is not None else logits.detach()
        if config.self_training:
            labels, kept = aligned_pseudo_labels(labeller[len(xs):], labeller[: len(xs)], config.confidence)
            if bool(kept.any()):
                value = value + config.self_training * kept.float().mean() * F.cross_entropy(
                    logits[len(xs):][kept], labels[kept])
        if teacher is not None and config.distill:
            value = value + config.distill * soft_divergence(logits[len(xs):], labeller[len(xs):],
                                                             config.temperature)
        return value + penalty() if penalty is not None else value

    def step_done() -> None:
        if domain is not None:
            domain.step += 1
        if after_step is not None:
            after_step()

    def start(_epoch: int) -> None:
        model.train()
        if domain is not None:
            domain.head.train()

    try:
        run_training(opt, domains.epoch(), epochs, Hooks(loss, after_step=step_done, epoch_start=start), progress,
                     desc)
    finally:
        if domain is not None:
            domain.tap.handle.remove()
        model.eval()


class _Mask(nn.Module):
    """One group's soft mask m_g, as the ``weight`` that ``models/admm.Admm`` constrains."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))


class ChannelMasks:
    """Soft masks m_g (trained) on the producers of every group; ADMM keeps their hard masks Z_g (top-k)."""

    def __init__(self, module: nn.Module, onnx_model: onnx.ModelProto, config: AdmpConfig, steps_per_epoch: int):
        from ...models.admm import Admm, per_layer

        self.masks: dict[str, _Mask] = {}
        self.layers: dict[str, list[nn.Module]] = {}
        self.keep: dict[str, int] = {}
        self.handles = []
        for group in channel_groups(onnx_model)[0]:
            layers = [module.layers[module.keys[p.node.name]] for p in group.producers if p.node.name in module.keys]
            counts = kept_counts(group.width, config.block, (config.ratio,), nearest=True)
            if not layers or not counts:
                continue
            name = f"group{len(self.masks)}"
            self.masks[name], self.layers[name], self.keep[name] = _Mask(group.width), layers, counts[0]
            for layer in layers:
                self.handles.append(layer.register_forward_hook(self._scale(self.masks[name].weight)))
        self.admm = Admm(self.masks, per_layer(self._top_k), config.rho, 1.0, steps_per_epoch, label="admp")

    def _top_k(self, name: str, values: torch.Tensor) -> torch.Tensor:
        hard = torch.zeros_like(values)
        hard[torch.topk(values.abs(), self.keep[name]).indices] = 1.0
        return hard

    @staticmethod
    def _scale(mask: nn.Parameter):
        def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (output.dim() - 2)
            return output * mask.reshape(shape)

        return hook

    def parameters(self) -> list[nn.Parameter]:
        return [mask.weight for mask in self.masks.values()]

    @torch.no_grad()
    def harden(self) -> None:
        """m := Z, frozen."""
        for name, mask in self.masks.items():
            mask.weight.data.copy_(self.admm.z[name])
            mask.weight.requires_grad_(False)

    @torch.no_grad()
    def fold(self) -> None:
        """Multiply every producer's filters and biases by its mask and remove the hooks."""
        for handle in self.handles:
            handle.remove()
        for name, mask in self.masks.items():
            for layer in self.layers[name]:
                shape = (-1,) + (1,) * (layer.weight.dim() - 1)
                layer.weight.mul_(mask.weight.reshape(shape))
                if layer.bias is not None:
                    layer.bias.mul_(mask.weight)


def admp_prune(teacher: nn.Module, domains: Domains, shape: tuple[int, ...], config: AdmpConfig, *,
               seed: int = 0, progress: bool = True) -> onnx.ModelProto:
    """Steps 2 and 3 of the module docstring on the adapted ``teacher``; the narrowed student as ONNX."""
    from ...models.from_onnx import OnnxModule
    from .exporter import as_onnx

    source = as_onnx(teacher, shape)
    student = OnnxModule(source)
    masks = ChannelMasks(student, source, config, len(domains.epoch()))
    for mask in masks.parameters():
        student.register_parameter(f"admp_mask_{len(list(student.parameters()))}", mask)
    train_domains(student, domains, config.admm_epochs, config, teacher=teacher, seed=seed, progress=progress,
                  penalty=masks.admm.penalty, after_step=masks.admm.after_step, desc="admp admm")
    masks.harden()
    train_domains(student, domains, config.finetune_epochs, config, teacher=teacher, seed=seed + 1,
                  progress=progress, desc="admp fine-tune")
    masks.fold()
    return _narrowed(student, shape)


def _narrowed(module: nn.Module, shape: tuple[int, ...]) -> onnx.ModelProto:
    from ...compiler.passbase import PassContext, get_pass
    from ...compiler.pipeline import PassManager
    from .exporter import as_onnx

    model = as_onnx(_without_masks(module), shape)
    return PassManager([get_pass("shrink")(), get_pass("cleanup")()], PassContext()).run(model)


def _without_masks(module: nn.Module) -> nn.Module:
    """A copy without the (folded) mask parameters, which the exporter would otherwise carry as inputs."""
    clone = copy.deepcopy(module)
    for name in [n for n, _ in clone.named_parameters(recurse=False) if n.startswith("admp_mask_")]:
        delattr(clone, name)
    return clone


def prune_then_adapt(source_only: nn.Module, domains: Domains, shape: tuple[int, ...], config: AdmpConfig, *,
                     seed: int = 0, progress: bool = True) -> onnx.ModelProto:
    """The baseline: ``channel-prune`` on the source at the same ratio, fine-tuned on the source, then adapted."""
    from ...models.from_onnx import OnnxModule
    from ...models.train import loader_arrays, train_classifier
    from .exporter import as_onnx, prune_round

    x, _ = loader_arrays(domains.source)
    feeds = [{"input": np.asarray(x[i:i + 1], np.float32)} for i in range(min(64, len(x)))]
    module = OnnxModule(prune_round(as_onnx(source_only, shape), feeds, config.ratio, config.block))
    if config.finetune_epochs:
        train_classifier(module, domains.source, config.finetune_epochs, lr=config.lr, seed=seed, progress=progress,
                         augment=config.augment(), desc="baseline fine-tune")
    train_domains(module, domains, config.adapt_epochs, config, seed=seed, progress=progress, desc="baseline adapt")
    return as_onnx(module, shape)


def compress_trained(model: nn.Module, loader: DataLoader, shape: tuple[int, ...], output: str | Path,
                     config: AdmpConfig, *, seed: int = 0, progress: bool = True) -> nn.Module:
    """The ``admp`` method (``compiler/method.py``): adapt ``model`` (trained on the loader's source images) to
    ``config.target_data``, prune it there, write the narrowed ONNX; returns the adapted teacher."""
    from ...compiler.modelio import write_model
    from ...models.train import training_data

    config.check()
    target = training_data(config.target_data, tuple(shape), getattr(loader, "batch_size", None) or 64, seed)
    domains = Domains(loader, target.train.x, seed)
    train_domains(model, domains, config.adapt_epochs, config, seed=seed, progress=progress, desc="adapt")
    write_model(admp_prune(model, domains, shape, config, seed=seed, progress=progress), Path(output))
    return model
