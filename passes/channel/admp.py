"""ADMP, cross-domain channel pruning (``pimc export admp``): prune a model for a target domain without its labels.

Only the seed paper's abstract is public (``docs/sources.md``): a full-size teacher gives pseudo-labels and
measures the domain divergence as the teacher–student output difference; a soft and a hard mask are trained
adversarially; ADMM handles the {0, 1} constraint of the masks. pimc's own definition of every detail:

**1. Teacher: domain-adversarial adaptation** (DANN, Ganin & Lempitsky, ICML 2015). From the model trained on
the labelled source S, with a domain head D (two linear layers) on the features f (the input of the last
Linear layer) behind a gradient reversal layer R_λ (identity forward, −λ·gradient backward):

    L_adapt = CE(y_s, model(x_s)) + w_d · BCE(D(R_λ(f)), domain) + β · c · CE(ŷ_t, model(x_t)),
    λ = 2 / (1 + e^(−10 p)) − 1

over batches of source images (labelled) and as many target images (unlabelled), p the share of training
done; the last term is self-training (``self_training`` β): ŷ_t the model's own prediction on the target
images whose confidence is at least ``confidence``, c the share of such images in the batch. The adapted model is the teacher T and the unpruned baseline.

**2. Student: soft and hard channel masks.** The student starts as T (as ONNX, BatchNorms folded, back in
torch). Every channel group g (``channel_prune.channel_groups``: the producers of a residual stream share
one) gets a soft mask m_g ∈ R^C multiplying its producers' outputs, and a hard mask Z_g ∈ {0, 1}^C with
exactly k_g = (1 − ratio)·C ones (rounded to ``block``). ADMM (Boyd et al., 2011) splits the constraint
m_g = Z_g: the weights and m minimise

    L = CE(y_s, S(x_s)) + w_d · BCE(D(R_λ(f_S)), domain) + α · τ² · KL(T(x_t)/τ ‖ S(x_t)/τ)
        + ρ/2 · Σ_g ‖m_g − Z_g + U_g‖²

and after every epoch Z_g = the top-k_g indicator of m_g + U_g (the projection onto the hard masks) and
U_g ← U_g + m_g − Z_g. The divergence term on the target images is the teacher's pseudo-labels (soft, at
temperature τ); it measures how far the student has drifted from the teacher on the target domain. The
soft mask pulls towards what the losses want, the hard mask towards the constraint: the adversarial pair.

**3. Hard pruning.** m_g := Z_g, frozen; ``finetune_epochs`` more epochs of the same loss without the ADMM term;
the masks are folded into the producers (W[c], b[c] times m_c) and ``shrink`` removes the zeroed channels.

**Baseline (prune, then adapt).** The source-only model pruned on the source (``channel-prune`` at the same
ratio and block, readers refitted), fine-tuned on the source, then adapted as in 1.
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
    """Source batches (labelled) and the unlabelled target images, sampled alongside."""

    source: DataLoader
    target_x: np.ndarray
    seed: int = 0

    def target_batches(self, size: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(self.target_x), (size,), generator=generator)
        return torch.from_numpy(np.asarray(self.target_x, np.float32))[index]


def _domain_head(features: int) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 100), nn.ReLU(), nn.Linear(100, 1))


def train_domains(model: nn.Module, domains: Domains, epochs: int, config: AdmpConfig, *, teacher: nn.Module | None
                  = None, extra=None, after_epoch=None, seed: int = 0, progress: bool = True, desc: str = "adapt") -> None:
    """The domain-adversarial training of 1 (and, with ``teacher``, the divergence term of 2) on ``model``."""
    from ...models.train import Hooks, run_training

    if epochs < 1:
        return
    tap = _FeatureTap(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.eval()
        model(domains.target_batches(2, generator))
    head = _domain_head(tap.value.shape[1])
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=config.lr)
    total = max(1, epochs * len(domains.source))
    state = {"step": 0}

    def loss(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        xt = domains.target_batches(len(xs), generator)
        logits = model(torch.cat([xs, xt]))
        scale = 2.0 / (1.0 + math.exp(-10.0 * state["step"] / total)) - 1.0
        domain = head(_Reverse.apply(tap.value, scale)).squeeze(1)
        labels = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))])
        value = F.cross_entropy(logits[: len(xs)], ys) + config.domain_weight * F.binary_cross_entropy_with_logits(
            domain, labels)
        if config.self_training:  # the model's own confident target predictions as labels
            with torch.no_grad():
                probs = F.softmax(logits[len(xs):].detach(), dim=1)
                confident = probs.max(dim=1).values >= config.confidence
            if bool(confident.any()):
                value = value + config.self_training * F.cross_entropy(
                    logits[len(xs):][confident], probs.argmax(dim=1)[confident]) * confident.float().mean()
        if teacher is not None and config.distill:
            with torch.no_grad():
                soft = F.log_softmax(teacher(xt) / config.temperature, dim=1)
            value = value + config.distill * config.temperature**2 * F.kl_div(
                F.log_softmax(logits[len(xs):] / config.temperature, dim=1), soft, reduction="batchmean",
                log_target=True)
        return value + extra() if extra is not None else value

    def after_step() -> None:
        state["step"] += 1

    def start(_epoch: int) -> None:
        model.train()
        head.train()

    try:
        run_training(opt, domains.source, epochs, Hooks(loss, after_step=after_step, epoch_start=start,
                                                        epoch_end=after_epoch), progress, desc)
    finally:
        tap.handle.remove()
        model.eval()


class ChannelMasks:
    """Soft masks m_g (trained) and hard masks Z_g (the ADMM projection) on the producers of every group."""

    def __init__(self, module: nn.Module, onnx_model: onnx.ModelProto, ratio: float, block: int):
        self.groups = []
        self.handles = []
        for group in channel_groups(onnx_model)[0]:
            layers = [module.layers[module.keys[p.node.name]] for p in group.producers if p.node.name in module.keys]
            counts = kept_counts(group.width, block, (ratio,), nearest=True)
            if not layers or not counts:
                continue
            soft = nn.Parameter(torch.ones(group.width))
            self.groups.append({"layers": layers, "soft": soft, "keep": counts[0],
                                "hard": torch.ones(group.width), "dual": torch.zeros(group.width)})
            for layer in layers:
                self.handles.append(layer.register_forward_hook(self._scale(soft)))
        self.project()

    @staticmethod
    def _scale(mask: nn.Parameter):
        def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
            shape = (1, -1) + (1,) * (output.dim() - 2)
            return output * mask.reshape(shape)

        return hook

    def parameters(self) -> list[nn.Parameter]:
        return [g["soft"] for g in self.groups]

    def penalty(self, rho: float) -> torch.Tensor:
        return rho / 2 * sum(((g["soft"] - g["hard"] + g["dual"]) ** 2).sum() for g in self.groups)

    @torch.no_grad()
    def project(self) -> None:
        """Z = top-k indicator of m + U; then the dual update U ← U + m − Z."""
        for g in self.groups:
            target = g["soft"] + g["dual"]
            hard = torch.zeros_like(target)
            hard[torch.topk(target.abs(), g["keep"]).indices] = 1.0
            g["hard"] = hard
            g["dual"] = g["dual"] + g["soft"] - hard

    @torch.no_grad()
    def harden(self) -> None:
        """m := Z, frozen."""
        for g in self.groups:
            g["soft"].data.copy_(g["hard"])
            g["soft"].requires_grad_(False)

    @torch.no_grad()
    def fold(self) -> None:
        """Multiply every producer's filters and biases by its mask and remove the hooks."""
        for handle in self.handles:
            handle.remove()
        for g in self.groups:
            for layer in g["layers"]:
                shape = (-1,) + (1,) * (layer.weight.dim() - 1)
                layer.weight.mul_(g["soft"].reshape(shape))
                if layer.bias is not None:
                    layer.bias.mul_(g["soft"])


def admp_prune(teacher: nn.Module, domains: Domains, shape: tuple[int, ...], config: AdmpConfig, *,
               seed: int = 0, progress: bool = True) -> onnx.ModelProto:
    """Steps 2 and 3 of the module docstring on the adapted ``teacher``; the narrowed student as ONNX."""
    from ...models.from_onnx import OnnxModule
    from .exporter import as_onnx

    source = as_onnx(teacher, shape)
    student = OnnxModule(source)
    masks = ChannelMasks(student, source, config.ratio, config.block)
    for mask in masks.parameters():
        student.register_parameter(f"admp_mask_{len(list(student.parameters()))}", mask)
    train_domains(student, domains, config.admm_epochs, config, teacher=teacher, seed=seed, progress=progress,
                  extra=lambda: masks.penalty(config.rho), after_epoch=lambda _e: masks.project(), desc="admp admm")
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
                         desc="baseline fine-tune")
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
