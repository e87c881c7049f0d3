"""What VarSal's standard deviation is, measured (paper 002, Sec. 4.5, Fig. 7).

    .venv/bin/python scripts/varsal_uncertainty.py [--models shapes-resnet,shapes-vgg] [--limit 100]
        [--per-image-limit 12] [--steps 150] [--draws 32] [--width 2] [--sections 1,2,3]

On the shapes test split, for each model with a committed encoder, prints:

1. **Amortised vs per-image** (first ``--per-image-limit`` images): the encoder's posterior and a
   per-image fit (``fit_one_image``, the same objective, on the encoder's grid), compared by the
   Spearman correlation of their std maps and of their mean maps, ρ(std, mean) for each, the share
   of the std's variance the mean explains (R², quadratic fit), and the negative ELBO of each
   (likelihood + β·prior KL, lower is better) on the same ``--draws`` Monte-Carlo draws per image.
   The amortisation gap is the encoder's negative ELBO minus the per-image one.
2. **Borders** (the paper's Fig. 7a claim): mean std on the border band (±``--width`` px around
   the object mask's edge), inside the object and on the background; how often the border is the
   most uncertain region; the same for the std *beyond the mean* (the residual of the quadratic
   fit of std on mean, :func:`explainers.methods.varsal.std_beyond_mean`).
3. **Corruptions** (Fig. 7b, c): ImageNet-C's brightness and motion blur at severity 5 applied to
   the same images: accuracy, mean std, roughness of the std map (mean |∇std| / mean std, on the
   posterior's own grid), Spearman of the corrupted std / mean maps with the clean ones, and
   ρ(std, mean). Both the encoder (on the first ``--limit`` images) and the per-image fit (on the
   first ``--per-image-limit``), since the encoder never saw corrupted images.

ImageNet-C's recipe (Hendrycks & Dietterich 2019), level 5: brightness adds 0.5 to V in HSV,
clipped; motion blur is a one-sided line of 2r + 1 Gaussian-weighted (σ) taps at a uniformly drawn
angle in [−45°, 45°], edges replicated, with (r, σ) = (20, 15) at 224 px, scaled here by side / 224
(6, 4.3 at 64 px) so the streak has the same length relative to the object. Angles come from a
generator seeded with ``--seed``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SEVERITY5 = {"brightness": 0.5, "motion_blur": (20, 15)}  # ImageNet-C's level-5 constants (at 224 px)


# ------------------------------------------------------------------------------- corruptions
def brightness(img: np.ndarray, c: float = SEVERITY5["brightness"]) -> np.ndarray:
    """ImageNet-C brightness: V += c in HSV, clipped (uint8 RGB in and out)."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(img.astype(np.float64) / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return (np.clip(hsv2rgb(hsv), 0, 1) * 255).round().astype(np.uint8)


def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """a moved by (dx, dy) pixels with the edge rows / columns replicated into the gap."""
    h, w = a.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return a[ys][:, xs]


def motion_blur(img: np.ndarray, angle: float, radius: float, sigma: float) -> np.ndarray:
    """ImageNet-C motion blur: Σ_i k_i · img shifted by i px along ``angle`` (degrees), i < 2r + 1,
    k_i ∝ exp(−i² / 2σ²); a tap that would leave the image ends the line."""
    width = 2 * int(round(radius)) + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    x = img.astype(np.float64)
    out = np.zeros_like(x)
    for i in range(width):
        dy, dx = -math.ceil(i * py / hyp - 0.5), -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        out += k[i] * _shift(x, dx, dy)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def corrupt(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 images with ``kind`` (brightness | motion_blur) at severity 5."""
    if kind == "brightness":
        return np.stack([brightness(im) for im in images])
    rng = np.random.default_rng(seed)
    r, s = SEVERITY5["motion_blur"]
    scale = min(images.shape[1:3]) / 224.0
    return np.stack([motion_blur(im, rng.uniform(-45, 45), r * scale, s * scale) for im in images])


# ------------------------------------------------------------------------------- statistics
def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def roughness(s: np.ndarray) -> float:
    """Mean absolute difference between 4-neighbours, relative to the map's mean."""
    d = np.abs(np.diff(s, axis=0)).mean() + np.abs(np.diff(s, axis=1)).mean()
    return float(d / 2 / max(float(np.abs(s).mean()), 1e-12))


def region_means(maps: np.ndarray, masks: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Per image, the mean of ``maps`` (N, H, W at the mask's size) on border, interior, background;
    images whose object has no interior at this width are left out (NaN)."""
    from varsal_borders import regions

    out = {k: np.full(len(maps), np.nan) for k in ("border", "interior", "background")}
    for i, (m, mask) in enumerate(zip(maps, masks)):
        reg = regions(mask, width)
        if not reg["interior"].any():
            continue
        for k, v in reg.items():
            out[k][i] = float(m[v].mean())
    return out


def _up(a: np.ndarray, size) -> np.ndarray:
    import torch

    from explainers.methods.varsal import upsample

    return upsample(torch.from_numpy(np.ascontiguousarray(a)).float(), size).numpy()


# ------------------------------------------------------------------------------- posteriors
def amortised(clf, x01):
    """The encoder's (μ, log ν) on its own grid, (N, h, w) each."""
    import torch

    from explainers.methods import varsal

    enc, _ = varsal.load_encoder(varsal.fitted_path(clf), clf.device)
    with torch.inference_mode():
        mu, log_nu = enc(x01)
    return mu.clone(), log_nu.clone()


def per_image(clf, x01, cfg, grid):
    """Per-image fits on ``grid`` cells a side: (μ, log ν), (N, h, w) each."""
    import torch

    from explainers.methods import varsal

    cfg = type(cfg)(**{**cfg.__dict__, "mode": "per-image", "grid": grid})
    out = [varsal.fit_one_image(clf, x01[i : i + 1], cfg)[:2] for i in range(len(x01))]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


def describe(name: str, mu, log_nu) -> dict[str, np.ndarray]:
    from explainers.methods.varsal import std_beyond_mean

    mu, std = mu.numpy(), (0.5 * log_nu).exp().numpy()
    r2 = np.array([std_beyond_mean(m, s)[1] for m, s in zip(mu, std)])
    rho = np.array([spearman(s, m) for m, s in zip(mu, std)])
    return {"name": name, "mu": mu, "std": std, "r2": r2, "rho": rho}


def _f(v) -> str:
    return f"{np.nanmean(v):.3f}"


# ------------------------------------------------------------------------------- main
def run_model(model: str, args) -> None:
    import torch

    from explainers import load_classifier
    from explainers.data import load_dataset
    from explainers.errors import ExplainerError
    from explainers.methods import varsal

    try:
        clf = load_classifier(model, device="cpu")
    except ExplainerError as e:
        print(f"{model}: skipped ({e})")
        return
    if varsal.fitted_path(clf) is None:
        print(f"{model}: skipped (no fitted VarSal encoder)")
        return
    ds = load_dataset("shapes", "test", limit=args.limit)
    images, labels = ds.arrays(size=tuple(clf.input_size))
    masks = np.stack([np.asarray(it.mask, dtype=bool) for it in ds])
    size = tuple(clf.input_size)
    cfg = varsal.VarSalConfig(steps=args.steps)
    n_pi = min(args.per_image_limit, len(images))

    def tensor(imgs):
        return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255)

    x = tensor(images)
    acc = float((clf.probabilities(x).argmax(1).numpy() == labels).mean())
    mu_a, lnu_a = amortised(clf, x)
    grid = mu_a.shape[-1]
    print(f"\n== {model}: shapes test, {len(images)} images (per-image fits on the first {n_pi}; "
          f"{grid}×{grid} grid, {args.steps} steps; {args.draws} draws per ELBO) · accuracy {acc:.3f}")
    A = describe("amortised", mu_a, lnu_a)

    # 1. amortised vs per-image
    if n_pi:
        mu_p, lnu_p = per_image(clf, x[:n_pi], cfg, grid)
        P = describe("per-image", mu_p, lnu_p)
        ea = varsal.negative_elbo(clf, x[:n_pi], mu_a[:n_pi], lnu_a[:n_pi], cfg, n=args.draws, seed=args.seed)
        ep = varsal.negative_elbo(clf, x[:n_pi], mu_p, lnu_p, cfg, n=args.draws, seed=args.seed)
        beta = cfg.beta_for(grid, grid)
        print("1. amortised vs per-image (mean over images)")
        print(f"   Spearman std(amortised) vs std(per-image) {_f([spearman(a, b) for a, b in zip(A['std'][:n_pi], P['std'])])}"
              f" · mean vs mean {_f([spearman(a, b) for a, b in zip(A['mu'][:n_pi], P['mu'])])}")
        for D, e in ((A, ea), (P, ep)):
            rho, r2 = D["rho"][:n_pi], D["r2"][:n_pi]
            print(f"   {D['name']:>10}: ρ(std, mean) {_f(rho)} · R²(std | mean) {_f(r2)} · std {_f(D['std'][:n_pi])}"
                  f" · −ELBO {_f(e['loss'])} = likelihood {_f(e['likelihood'])} nats + β·KL {beta * float(e['prior_kl'].mean()):.3f}")
        gap = (ea["loss"] - ep["loss"]).numpy()
        print(f"   amortisation gap (−ELBO amortised − per-image) {gap.mean():+.3f} nats per image "
              f"(per-image lower on {np.mean(gap > 0):.0%} of images)")

    if "2" not in args.sections:
        return _corruptions(clf, args, images, labels, A, P if n_pi else None, cfg, grid, n_pi, tensor)
    # 2. borders
    print(f"2. borders (band ±{args.width} px; images whose object has an interior)")
    for D, n in ((A, len(images)),) + (((P, n_pi),) if n_pi else ()):
        std = _up(D["std"][:n], size)
        resid = _up(np.stack([varsal.std_beyond_mean(m, s)[0] for m, s in zip(D["mu"][:n], D["std"][:n])]), size)
        for what, maps in (("std", std), ("std beyond mean", resid)):
            r = region_means(maps, masks[:n], args.width)
            ok = ~np.isnan(r["border"])
            first = np.mean([r["border"][i] >= max(r["interior"][i], r["background"][i]) for i in np.flatnonzero(ok)])
            print(f"   {D['name']:>10} {what:>15}: border {_f(r['border'])} · interior {_f(r['interior'])} · "
                  f"background {_f(r['background'])} · border highest in {first:.0%} of {ok.sum()}")

    _corruptions(clf, args, images, labels, A, P if n_pi else None, cfg, grid, n_pi, tensor)


def _corruptions(clf, args, images, labels, A, P, cfg, grid, n_pi, tensor) -> None:
    if "3" not in args.sections:
        return
    print("3. corruptions (ImageNet-C level 5)")
    rows = [("clean", images)] + [(k, corrupt(images, k, args.seed)) for k in ("brightness", "motion_blur")]
    for name, imgs in rows:
        xc = tensor(imgs)
        accc = float((clf.probabilities(xc).argmax(1).numpy() == labels).mean())
        C = describe("amortised", *amortised(clf, xc))
        line = (f"   {name:>11} acc {accc:.3f} | amortised: std {_f(C['std'])} · roughness {_f([roughness(s) for s in C['std']])}"
                f" · ρ(std, mean) {_f(C['rho'])} · R² {_f(C['r2'])}")
        if name != "clean":
            line += (f" · Spearman with clean: std {_f([spearman(a, b) for a, b in zip(A['std'], C['std'])])},"
                     f" mean {_f([spearman(a, b) for a, b in zip(A['mu'], C['mu'])])}")
        print(line)
        if n_pi:
            Q = P if name == "clean" else describe("per-image", *per_image(clf, xc[:n_pi], cfg, grid))
            line = (f"   {'':>11}             per-image: std {_f(Q['std'])} · roughness {_f([roughness(s) for s in Q['std']])}"
                    f" · ρ(std, mean) {_f(Q['rho'])} · R² {_f(Q['r2'])}")
            if name != "clean":
                line += (f" · Spearman with clean: std {_f([spearman(a, b) for a, b in zip(P['std'], Q['std'])])},"
                         f" mean {_f([spearman(a, b) for a, b in zip(P['mu'], Q['mu'])])}")
            print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shapes-resnet,shapes-vgg")
    ap.add_argument("--limit", type=int, default=100, help="test images for the encoder's figures (default 100)")
    ap.add_argument("--per-image-limit", type=int, default=12, help="of those, how many get per-image fits (default 12)")
    ap.add_argument("--steps", type=int, default=150, help="per-image Adam steps (default 150, the method's)")
    ap.add_argument("--draws", type=int, default=32, help="Monte-Carlo draws per image for the ELBO (default 32)")
    ap.add_argument("--width", type=int, default=2, help="border band half-width in px (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", default="1,2,3", help="which figures: 1 amortised vs per-image, 2 borders, 3 corruptions")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the machine is shared; the figures do not depend on it
    for model in args.models.split(","):
        run_model(model.strip(), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
