"""PMI and IG maps (information-theoretic attribution with a PatchSampler).

Paper: "Information-theoretic visual explanation for black-box classifiers" (Sections III–IV,
Algorithm 1, Appendix B–C). For every K×K patch x_r (stride S, patches fully inside the image):

- Eq. 3: p(y | x_\\r) ≈ 1/N Σ_n p(y | x_\\r, x̃_r^(n)), x̃_r^(n) drawn from a sampler conditioned
  on the 3K×3K neighbourhood — the Monte-Carlo MEAN of the probabilities, then the log (not
  the mean of log-probabilities);
- Eq. 4: PMI(y_c; x_r | x_\\r) = log p(y_c | x) − log p(y_c | x_\\r), for every class c from the
  same forwards;
- Eq. 5: IG(Y, x_r | x_\\r) = KL(p(Y | x) ‖ p(Y | x_\\r)) = Σ_c p(c | x) · PMI(c; x_r | x_\\r) ≥ 0;
- Algorithm 1, line 9: each pixel gets the average of the values of the patches that cover it.

Units are bits (log base 2), as the paper states. PMI values depend on the sampler: a patch
whose in-fills look like it (a good sampler on a plain region) carries little PMI, one replaced by
a grey constant carries much more, so maps made with different samplers are compared by their
ranking, not their values. Near the border a neighbourhood reaches past the image; the samplers
read only its pixels inside the image (see ``samplers.geometry``). The per-patch PMI of every class is returned in
``extras`` so that :func:`pmi_map` gives the map of any other class (or the difference of two,
Fig. 5 / 20) with no new forwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..batching import batch_for_memory, classifier_autocast, forward_bytes, map_chunks
from ..config import knob
from ..core import MethodOutput, MethodSpec, register
from ..errors import ExplainerError
from ..progress import report
from .anytime import coarse_to_fine, distribute
from .samplers import SAMPLERS, TEMPERATURE, InFills, data_key, make_sampler, patch_boxes, paste, sampler_key

LN2 = math.log(2.0)


@dataclass(frozen=True)
class PMIConfig:
    """Knobs of ``pmi-ig``.

    The last row/column of patches is moved to touch the border when (side − K) is not a multiple
    of S, so every pixel is covered (S ≤ K is required for the same reason). Deterministic samplers
    (blur, mean, constant) give N identical in-fills, so they run one forward per patch. The
    fitted samplers (patchsampler, gaussian) exist for some K only: a missing one is an error
    naming the command that fits it.
    """

    K: int = knob(8, "patch side K in pixels (paper: 8); each patch is in-filled given its 3K×3K neighbourhood",
                  min=1, max=32, step=1, symbol="K")
    N: int = knob(8, "Monte-Carlo in-fills per patch, Eq. 3 (paper: 8)", min=1, max=128, step=1, symbol="N")
    stride: int = knob(4, "patch stride S, at most K (default 4; the paper uses every patch, S = 1, and notes a larger "
                       "stride cuts the run time); smaller = finer and slower", min=1, max=32, step=1, symbol="S")
    sampler: str = knob("patchsampler", "what in-fills a patch: patchsampler (the paper's, default), gaussian (PDA's "
                        "conditional Gaussian), blur or mean (from the surrounding ring), noise (uniform), constant "
                        "(a grey level)", choices=SAMPLERS)
    value: float = knob(0.5, "grey level in [0, 1] of the constant sampler, before the classifier's normalisation "
                        "(the paper's black is 0; default 0.5)", min=0.0, max=1.0, step=0.05)
    sigma: Optional[float] = knob(None, "blur width σ in pixels of the blur sampler; auto = K / 2", min=0.1,
                                  symbol="σ", auto="auto", advanced=True)
    temperature: float = knob(TEMPERATURE, "sampling temperature T of the patchsampler (ours, beyond the paper, which "
                              "draws at T = 1): mixture weights softmax(logits / T), logistic scales × T; below 1 draws "
                              "smoother, likelier in-fills, 0 the greedy one (default 0.8: in-fills closer to real "
                              "ones on shapes and digits, README; 1 = the fitted model as it is)",
                              min=0.0, max=2.0, step=0.05, symbol="T", advanced=True)
    sampler_data: Optional[str] = knob(None, "which fitted samplers to use: a data key (shapes, digits, photos) or a "
                                       "folder; auto = the classifier's dataset, photos for ImageNet and user models",
                                       auto="auto", advanced=True)
    batch_size: int = knob(64, "classifier forwards per batch (halved on CUDA out-of-memory; the maps do not depend "
                           "on it; default 64)", min=1, max=1024, step=1, advanced=True)
    seed: int = knob(0, "seeds the samplers' random draws (default 0)", min=0, step=1)
    bf16: bool = knob(False, "bfloat16 autocast for the classifier's forwards (a GPU speed-up; the error is absolute, "
                      "about 1e-3 bits, so maps with tiny values drown in it: tests/test_pmi.py; default off)", advanced=True)

    def __post_init__(self) -> None:
        for name in ("K", "N", "stride", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ExplainerError(f"pmi-ig: {name} must be an integer of at least 1, got {v!r}")
        if self.stride > self.K:
            raise ExplainerError(f"pmi-ig: stride ({self.stride}) must be at most K ({self.K}), or some pixels lie in no patch")
        if self.sampler not in SAMPLERS:
            raise ExplainerError(f"pmi-ig: unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not 0.0 <= float(self.value) <= 1.0:
            raise ExplainerError(f"pmi-ig: value must be a grey level in [0, 1], got {self.value}")
        if self.sigma is not None and not float(self.sigma) > 0:
            raise ExplainerError(f"pmi-ig: sigma must be positive, got {self.sigma}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ExplainerError(f"pmi-ig: temperature must be between 0 and 2, got {self.temperature}")


# ---------------------------------------------------------------------------------------------
# Algorithm 1, line 9: patch values -> pixel averages (``anytime.distribute``)
# ---------------------------------------------------------------------------------------------
def pmi_map(extras: dict, cls: int) -> np.ndarray:
    """The PMI map (bits, (H, W)) of class ``cls`` from a ``pmi-ig`` result's ``extras``."""
    pmi = extras["patch_pmi"]
    if not 0 <= int(cls) < pmi.shape[1]:
        raise ExplainerError(f"class index {cls} out of range 0..{pmi.shape[1] - 1}")
    return distribute(pmi[:, int(cls)], extras["patch_boxes"], tuple(extras["shape"])).astype(np.float32)


def ig_map(extras: dict) -> np.ndarray:
    """The IG map (bits, (H, W)) from ``extras`` (the same as ``maps['ig']``)."""
    return distribute(extras["patch_ig"], extras["patch_boxes"], tuple(extras["shape"])).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Eq. 3 accumulated in log space
# ---------------------------------------------------------------------------------------------
def _logaddexp_rows(acc: torch.Tensor, rows: torch.Tensor, lp: torch.Tensor) -> None:
    """acc[r] <- log(exp(acc[r]) + Σ_{i: rows[i] = r} exp(lp[i])) in place (equal rows adjacent)."""
    u, inv = torch.unique_consecutive(rows, return_inverse=True)
    m = torch.full((len(u), lp.shape[1]), -math.inf, dtype=lp.dtype, device=lp.device)
    m = m.scatter_reduce(0, inv[:, None].expand_as(lp), lp, reduce="amax")
    s = torch.zeros_like(m).index_add_(0, inv, torch.exp(lp - m[inv]))
    acc[u] = torch.logaddexp(acc[u], m + torch.log(s))


def _forward_logp(clf, imgs: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    with torch.no_grad(), classifier_autocast(clf.device, bf16):
        logits = clf.logits01(imgs)
    return torch.log_softmax(logits.double(), dim=1)  # in float64 whatever the forward's precision


def _pmi_ig(logp0: torch.Tensor, log_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch PMI of every class (Eq. 4) and IG (Eq. 5), in bits, from ln p(c|x) and ln p(c|x_\\r)."""
    pmi = (logp0[None, :] - log_q) / LN2
    # Eq. 5: IG = KL(p(Y|x) ‖ p(Y|x_\\r)). Summed as Σ_c [p ln(p/q) − p + q], whose every term is
    # ≥ 0 and whose sum equals the KL (Σp = Σq = 1); terms are clamped at 0 against rounding only.
    p, q = logp0.exp()[None, :], log_q.exp()
    ig = (p * (logp0[None, :] - log_q) - p + q).clamp_min(0).sum(1) / LN2
    return pmi, ig


def run(clf, x01: torch.Tensor, target: int, config: PMIConfig, progress=None) -> MethodOutput:
    """PMI map of ``target`` and the IG map, both in bits (Eq. 3–5, Algorithm 1)."""
    cfg = config
    h, w = clf.input_size
    K = int(cfg.K)
    if K > min(h, w):
        raise ExplainerError(f"pmi-ig: K={K} is larger than the image ({w}x{h}); pick K <= {min(h, w)}")
    device = clf.device
    x01 = x01.to(device).float()
    key = data_key(cfg.sampler_data) if cfg.sampler_data else sampler_key(clf)  # a folder: the key its fit was saved under
    sampler = make_sampler(cfg.sampler, K, device, key, cfg.value, cfg.sigma, float(cfg.temperature))
    N = 1 if sampler.deterministic else int(cfg.N)

    boxes = patch_boxes(h, w, K, int(cfg.stride))
    P = len(boxes)
    x0 = torch.as_tensor(boxes[:, 0], device=device)
    y0 = torch.as_tensor(boxes[:, 1], device=device)
    total = P * N
    report(progress, 0, total, "classifier forwards")

    # Algorithm 1, line 3: p(y | x) for every class
    logp0 = _forward_logp(clf, x01, cfg.bf16)[0]  # natural log, float64
    # lines 5-6: N in-fills per patch from the sampler given the 3K×3K neighbourhood (made
    # chunk by chunk as the batches need them; they depend on the seed only)
    fills = InFills(sampler, x01, y0, x0, N, int(cfg.seed))

    # line 7 / Eq. 3: log of the MEAN probability over the N in-fills, accumulated in log space
    C = logp0.shape[0]
    acc = torch.full((P, C), -math.inf, dtype=torch.float64, device=device)
    # Anytime: patches in coarse-to-fine order (explainers/methods/anytime.py); after each level the
    # finished pixels are published with their final values. Each patch's N draws stay together.
    plan = coarse_to_fine(boxes, (h, w))
    order = torch.as_tensor(plan.order, device=device)

    def forward(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        jj = torch.arange(lo, hi, device=device)
        r, n = order[jj // N], jj % N
        s = torch.argsort(r * N + n)  # InFills.take wants ascending patches
        return r, _forward_logp(clf, paste(x01, y0[r], x0[r], fills.take(r[s], n[s])[torch.argsort(s)]), cfg.bf16)

    def accumulate(lo: int, hi: int, out: tuple[torch.Tensor, torch.Tensor]) -> None:
        _logaddexp_rows(acc, *out)
        partial = None
        if hi < total and plan.due(hi // N):
            rows = torch.as_tensor(plan.order[: hi // N], device=device)
            pmi_d, ig_d = _pmi_ig(logp0, acc[rows] - math.log(N))
            partial = plan.partial({"pmi": pmi_d[:, target].cpu().numpy(), "ig": ig_d.cpu().numpy()}, hi // N, distribute)
        report(progress, hi, total, "classifier forwards", partial=partial)

    batch = int(cfg.batch_size)
    if device.type == "cuda":  # as many forwards per batch as half the free memory holds, whole patches (N draws) each
        batch = batch_for_memory(device, forward_bytes(clf.net, clf.normalize(x01)), batch)
        batch = max(N, batch // N * N) if batch > int(cfg.batch_size) else batch
    map_chunks(P * N, batch, forward, accumulate)
    log_q = acc - math.log(N)  # ln p(c | x_\r), (P, C)
    pmi, ig = _pmi_ig(logp0, log_q)

    pmi_np = pmi.cpu().numpy()
    ig_np = ig.cpu().numpy()
    extras: dict[str, Any] = {
        "patch_pmi": pmi_np.astype(np.float32),  # (P, C) bits; log2 p(c|x_\r) = logp - patch_pmi
        "patch_ig": ig_np,  # (P,) bits
        "patch_boxes": boxes.astype(np.int32),  # (P, 4) x0, y0, x1, y1
        "logp": (logp0 / LN2).cpu().numpy(),  # (C,) log2 p(c|x)
        "probs": logp0.exp().cpu().numpy(),  # (C,)
        "shape": (h, w),
    }
    maps = {
        "pmi": distribute(pmi_np[:, target], boxes, (h, w)).astype(np.float32),
        "ig": distribute(ig_np, boxes, (h, w)).astype(np.float32),
    }
    meta = {
        "sampler": cfg.sampler,
        "sampler_data": key if cfg.sampler in ("patchsampler", "gaussian") else None,
        **{f"sampler_{k}": v for k, v in sampler.describe().items()},
        "patches": P,
        "N_effective": N,
        "forwards": P * N + 1,
    }
    return MethodOutput(maps=maps, extras=extras, meta=meta)


register(
    MethodSpec(
        name="pmi-ig",
        title="PMI & IG maps",
        config=PMIConfig,
        run=run,
        maps={"pmi": "signed", "ig": "positive"},
        units={"pmi": "bits", "ig": "bits"},
        paper="000_3821e9a6f7050c9a",
        needs_fit=True,
    )
)
