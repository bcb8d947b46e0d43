"""The accuracy budget: the one measured signal by which every lossy pass decides how much to compress.

Every figure is *paired*: the same images go through the reference (the compile's input model) and the
candidate model, so the noise is that of the predictions that changed, not of two accuracies.

Steering set S (labelled; images the model was not trained on where they exist, see
``runtime.datasets.data_splits``). Per image d_i = [reference right] − [candidate right] ∈ {−1, 0, 1}:
    drop Δ = 100 · mean(d)                      (points)
    flip rate f = mean([top-1 changed])
    SE(Δ) = 100 · std(d) / √|S|
Output distance, on the probe images P (the first :data:`PROBE_SAMPLES` steering images; labels unused):
    damage = Σ_i ‖c(z_cand,i) − c(z_ref,i)‖² / Σ_i ‖c(z_ref,i)‖²,  c(z) = z − mean_k z_k
the relative change of the centred logits (softmax is invariant to the centring). Unlike top-1 or the KL of
the softmax — both flat where the model is confident — it keeps growing with the damage, so it ranks
candidates; the decision that spends the budget rests on Δ. (KL(p_ref ‖ p_cand) is reported beside Δ.)

Acceptance of a model, with T the number of test images that will report it:
    Δ + z · 100 · √(f/|S| + f/T) ≤ D                                              (1)
with f̃ = (flips + ½)/(|S| + 1) in place of the observed flip rate f whenever any output changed (Jeffreys'
prior: no flip among |S| images does not make the rate zero, and on a small test split one flip can exceed D by
itself; a model whose outputs are identical has no margin);
the noise margin covers both the steering estimate and the test split's own draw, so the final test-split
check — still the honest report, still an error when exceeded — rarely fails: the test drop exceeds D only
if the test draw and the steering draw differ by more than z standard errors of their difference, so
z = Φ⁻¹(confidence) bounds that at 1 − confidence for each accepted model (``--confidence``, default
:data:`DEFAULT_CONFIDENCE` = 0.95, z = 1.645). On 500 + 500 images a 1-point budget at 95 % then admits models
that change about 0.6 % of the predictions; more held-out images (``--val-data``) admit more.
D is ``--max-accuracy-drop`` in points. Δ is always measured against the compile's input model, so what
earlier passes spent counts.

Image-to-image models (``compiler.metrics``: PSNR on image targets). The same paired scheme on the per-image
PSNR: d_i = PSNR_ref,i − PSNR_cand,i (dB), Δ = mean(d), SE(Δ) = std(d)/√|S|, and the margin
z · √(m₂/|S| + m₂/T) with m₂ = mean(d²) in place of f (for top-1, mean(d²) ≤ f); D is then in dB. The
damage is the relative change of the output images, Σ‖o_cand − o_ref‖² / Σ‖o_ref − mean(o_ref)‖².
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import onnx

from .metrics import TOP1, Metric

DEFAULT_MAX_DROP_POINTS = 1.0
DEFAULT_CONFIDENCE = 0.95
PROBE_SAMPLES = 64  # output-distance probes: a paired, continuous signal, so few images rank candidates


def z_for(confidence: float) -> float:
    """The one-sided normal quantile of ``confidence`` (0.5 < confidence < 1)."""
    return NormalDist().inv_cdf(confidence)


DEFAULT_Z = z_for(DEFAULT_CONFIDENCE)  # 1.645


@dataclass
class Measurement:
    """One model measured against the reference (see the module docstring)."""

    accuracy: float
    drop_points: float
    se_points: float
    flip_rate: float
    kl: float
    margin_points: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 5) for k, v in self.__dict__.items()}


@dataclass
class AccuracyBudget:
    """The steering images and labels, the probe images, the budget in points and the reference outputs."""

    x: np.ndarray
    y: np.ndarray
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS
    z: float = DEFAULT_Z
    test_samples: int = 0
    integer_kernels: bool = True  # False for simulator targets: see compiler.sessions.make_session
    source: str = ""
    evaluations: int = 0
    seconds: float = 0.0
    reference_accuracy: float | None = None
    batched: bool = False  # a batch-1 export evaluated with a free batch dim (compiler.sessions.runs_batched)
    metric: Metric = TOP1  # of the steering targets: top-1 for labels, PSNR for images (compiler.metrics)
    _reference: np.ndarray | None = None
    _reference_scores: np.ndarray | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def probe_x(self) -> np.ndarray:
        """The probe images: the first PROBE_SAMPLES steering images."""
        return self.x[:PROBE_SAMPLES]

    def logits(self, model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
        from .sessions import free_batch, make_session, predict

        start = time.perf_counter()
        self.evaluations += 1
        if self.batched:
            model = free_batch(model)
        session = make_session(model, spinning=False, integer_kernels=self.integer_kernels)
        out = predict(session, x.astype(np.float32))
        self.seconds += time.perf_counter() - start
        return out

    def set_reference(self, model: onnx.ModelProto) -> float:
        from .sessions import runs_batched

        self.batched = runs_batched(model, self.x[:2].astype(np.float32))
        self._reference = self.logits(model, self.x)
        self._reference_scores = self.metric.scores(self._reference, self.y)
        self.reference_accuracy = float(np.mean(self._reference_scores))
        return self.reference_accuracy

    def measure(self, model: onnx.ModelProto) -> Measurement:
        """Model (1)'s terms on the steering images."""
        self._require_reference()
        outputs = self.logits(model, self.x)
        scores = self.metric.scores(outputs, self.y)
        d = self._reference_scores - scores
        scale = self.metric.scale
        if self.metric is TOP1:
            spread = float(np.mean(np.argmax(self._reference, 1) != np.argmax(outputs, 1)))
            kl = mean_kl(self._reference, outputs)
        else:
            spread, kl = float(np.mean(d**2)), 0.0
        m = Measurement(float(np.mean(scores)), scale * float(np.mean(d)), scale * float(np.std(d)) / np.sqrt(len(d)),
                        spread, kl)
        m.margin_points = self.margin(m.flip_rate, not np.array_equal(outputs, self._reference))
        return m

    def damage(self, model: onnx.ModelProto) -> float:
        """The relative change of ``model``'s outputs on the probe images (see the module docstring)."""
        self._require_reference()
        outputs = self.logits(model, self.probe_x)
        if self.metric is TOP1:
            return logit_change(self._reference[:PROBE_SAMPLES], outputs)
        return image_change(self._reference[:PROBE_SAMPLES], outputs)

    def margin(self, spread: float, changed: bool = True) -> float:
        """z · scale · √(f/|S| + f/T) (top-1: f the flip rate, as f̃ = (flips + ½)/(|S| + 1) when any output
        changed; PSNR: f = mean(d²)): what the drop holds back for the noise of the steering and the test draw,
        in the metric's unit."""
        n = len(self.y)
        if self.metric is TOP1 and changed:
            spread = (spread * n + 0.5) / (n + 1)  # no flip among |S| images is not a zero flip rate
        variance = spread / n + (spread / self.test_samples if self.test_samples else 0.0)
        return self.z * self.metric.scale * float(np.sqrt(variance))

    def fits(self, m: Measurement) -> bool:
        return m.drop_points + m.margin_points <= self.max_drop_points + 1e-9

    def summary(self) -> dict[str, Any]:
        return {"steering_samples": int(len(self.y)), "steering_source": self.source, "metric": self.metric.name,
                "probe_samples": int(len(self.probe_x)), "z": self.z, "evaluations": self.evaluations,
                "evaluation_seconds": round(self.seconds, 3),
                "reference_accuracy": self.reference_accuracy}

    def _require_reference(self) -> None:
        if self.reference_accuracy is None:
            raise RuntimeError("AccuracyBudget.set_reference must run first")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p of each row; rows that already are probabilities (a Softmax output) are taken as they are."""
    z = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    if np.all(z >= 0) and np.allclose(z.sum(1), 1.0, atol=1e-3):
        return np.log(np.clip(z, 1e-12, None))
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def logit_change(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Σ‖c(z) − c(z_ref)‖² / Σ‖c(z_ref)‖² with c the centring over classes (log-probabilities if given)."""
    ref, new = log_softmax(reference), log_softmax(candidate)
    ref = ref - ref.mean(1, keepdims=True)
    new = new - new.mean(1, keepdims=True)
    return float(np.sum((new - ref) ** 2) / max(np.sum(ref**2), 1e-30))


def image_change(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Σ‖o − o_ref‖² / Σ‖o_ref − mean(o_ref)‖² over images (each centred on its own mean)."""
    ref = np.asarray(reference, dtype=np.float64)
    new = np.asarray(candidate, dtype=np.float64)
    centred = ref - ref.reshape(len(ref), -1).mean(1).reshape(-1, *([1] * (ref.ndim - 1)))
    return float(np.sum((new - ref) ** 2) / max(np.sum(centred**2), 1e-30))


def mean_kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    """mean_i Σ_k p_ref log(p_ref / p_cand) (nats)."""
    lp, lq = log_softmax(reference), log_softmax(candidate)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))
