"""Fitting the PatchSampler (and the conditional Gaussian baseline) for PMI / IG maps.

    python -m explainers fit --explainer patchsampler --data shapes --out assets/explainers/samplers/shapes
    python -m explainers fit --explainer patchsampler --data digits --out assets/explainers/samplers/digits
    python -m explainers fit --explainer patchsampler --data photos --out assets/explainers/samplers/photos
    python -m explainers fit --explainer patchsampler --data FOLDER [--set K=4 --set steps=3000 ...]

``--data`` is a built-in dataset (its train split), ``photos`` (the photographs bundled with
scikit-image: astronaut, coffee, chelsea, rocket, the stereo motorcycle pair and a few grey-level
ones, each resized so its shorter side is 256 px, as torchvision's preprocessing does before its
224 crop) or an image folder. Without ``--out`` the files go to
``$EXPLAINERS_HOME/fitted/samplers/<data>/``, where ``pmi-ig`` finds them before the committed ones.

Training follows Appendix B.C: random 3K×3K crops (the image reflect-padded by K, as at explanation
time, with the K×K centre inside the image), cross-entropy of the 256-way categorical of every
pixel and channel of the hidden centre; Adam with a cosine learning-rate decay. Each step's crops
come from a generator seeded by (seed, step), so a resumed run (``<name>.ckpt.safetensors``)
continues exactly as an uninterrupted one. The conditional Gaussian (Zintgraf et al.'s PDA) is
fitted afterwards on ``gaussian_patches`` crops of the same data: mean and covariance of the
flattened neighbourhoods, conditioned on the ring once (see ``samplers.gaussian_from_moments``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import parse
from ..errors import ExplainerError
from ..methods.samplers import LEVELS, PatchSamplerNet, fitted_name, gaussian_from_moments, pad_mode
from ..progress import report
from ..fitted import Checkpoint, save_fitted, user_dir

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "camera", "grass", "gravel", "brick", "coins")


@dataclass(frozen=True)
class PatchSamplerFitConfig:
    """Training options (``--set key=value``).

    K: patch side the sampler is for (3K×3K neighbourhoods); channels: 0 = automatic (1 for
    grey-level data such as digits, else 3); width: conv channels; kernel2: the second conv's
    kernel (0 = the first's); steps, batch, lr: Adam;
    images: at most this many training images; gaussian_patches: crops for the Gaussian;
    threads: torch CPU threads; checkpoint_every: steps between checkpoints; seed.
    """

    K: int = 8
    channels: int = 0
    width: int = 32
    kernel2: int = 3
    steps: int = 2500
    batch: int = 32
    lr: float = 2e-3
    images: int = 3000
    gaussian_patches: int = 20000
    threads: int = 1
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "channels":
                if v not in (0, 1, 3):
                    raise ExplainerError("patchsampler: channels must be 0 (auto), 1 or 3")
            elif f.name == "seed":
                continue
            elif f.name == "kernel2":
                if v < 0 or (v > 0 and v % 2 == 0):
                    raise ExplainerError("patchsampler: kernel2 must be 0 (same as the first conv's) or odd")
            elif not v > 0:
                raise ExplainerError(f"patchsampler: {f.name} must be positive, got {v}")


# ---------------------------------------------------------------------------------------------
# training images
# ---------------------------------------------------------------------------------------------
def _resize_short(arr: np.ndarray, short: int = 256) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(arr)
    w, h = img.size
    s = short / min(w, h)
    return np.asarray(img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


def photo_images() -> list[np.ndarray]:
    """scikit-image's bundled photographs as uint8 (H, W, 3), shorter side 256 (no download)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            a = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - an image missing from this scikit-image build
            continue
        for im in a if isinstance(a, tuple) else (a,):
            im = np.asarray(im)
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=2)
            if im.ndim != 3 or im.shape[2] < 3 or im.dtype != np.uint8:
                continue
            out.append(_resize_short(np.ascontiguousarray(im[..., :3])))
    if not out:
        raise ExplainerError("no photographs found in this scikit-image installation")
    return out


def training_images(data: str, limit: int) -> list[np.ndarray]:
    """uint8 (H, W, 3) images to fit on: ``photos``, a built-in dataset's train split, or a folder."""
    if data == "photos":
        return photo_images()
    from ..data import BUILTINS, load_dataset

    if data in BUILTINS:
        x, _ = load_dataset(data, "train", limit=limit).arrays()
        return list(x)
    ds = load_dataset(data, "train", limit=limit)
    return [_resize_short(np.asarray(it.image.convert("RGB"))) for it in ds]


def data_key(data: str) -> str:
    p = Path(data).expanduser()
    return p.name if p.is_dir() else data


class CropSource:
    """Random 3K×3K crops of reflect-padded images, with the K×K centre inside the image."""

    def __init__(self, images: list[np.ndarray], K: int):
        self.K = K
        self.images = []
        for im in images:
            h, w = im.shape[:2]
            if min(h, w) < K:
                continue
            t = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float()
            self.images.append(F.pad(t, (K,) * 4, mode=pad_mode(K, h, w))[0].to(torch.uint8))
        if not self.images:
            raise ExplainerError(f"no training image is at least {K} pixels on its shorter side")
        self.same = len({tuple(t.shape) for t in self.images}) == 1
        self.stack = torch.stack(self.images) if self.same else None
        sizes = torch.tensor([t.shape[1] * t.shape[2] for t in self.images], dtype=torch.float64)
        self.weights = sizes / sizes.sum()  # pick images in proportion to their area

    def sample(self, n: int, gen: torch.Generator, flip: bool = True) -> torch.Tensor:
        """(n, 3, 3K, 3K) uint8 crops."""
        K, k3 = self.K, 3 * self.K
        idx = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        u = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        if self.same:
            H, W = self.stack.shape[2] - 2 * K, self.stack.shape[3] - 2 * K
            y = (u[:, 0] * (H - K + 1)).long().clamp_max(H - K)
            x = (u[:, 1] * (W - K + 1)).long().clamp_max(W - K)
            ar = torch.arange(k3)
            rows = (y[:, None] + ar)[:, None, :, None]
            cols = (x[:, None] + ar)[:, None, None, :]
            crops = self.stack[idx[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
        else:
            out = []
            for i, j in enumerate(idx.tolist()):
                t = self.images[j]
                H, W = t.shape[1] - 2 * K, t.shape[2] - 2 * K
                y = min(int(u[i, 0] * (H - K + 1)), H - K)
                x = min(int(u[i, 1] * (W - K + 1)), W - K)
                out.append(t[:, y : y + k3, x : x + k3])
            crops = torch.stack(out)
        if flip:
            f = u[:, 2] < 0.5
            crops[f] = crops[f].flip(-1)
        return crops


def _targets(crops: torch.Tensor, K: int, channels: int) -> torch.Tensor:
    centre = crops[:, :, K : 2 * K, K : 2 * K].float()
    if channels == 1:
        centre = centre.mean(1, keepdim=True)
    return centre.round().long().clamp(0, LEVELS - 1)


def _class_first(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, K, C, 256) -> (B, 256, C, K, K), the layout cross_entropy wants."""
    return logits.permute(0, 4, 3, 1, 2)


def _inputs(crops: torch.Tensor, net: PatchSamplerNet) -> torch.Tensor:
    return net.to_input(crops.float() / (LEVELS - 1))


def nll_bits(net: PatchSamplerNet, crops: torch.Tensor, batch: int = 256) -> float:
    """Mean negative log-likelihood of the hidden centres, in bits per pixel and channel."""
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            c = crops[i : i + batch]
            logits = net(_inputs(c, net))
            ce = F.cross_entropy(_class_first(logits), _targets(c, net.K, net.channels), reduction="sum")
            tot += float(ce)
            n += c.shape[0] * net.channels * net.K * net.K
    return tot / n / math.log(2)


# ---------------------------------------------------------------------------------------------
# the fitter
# ---------------------------------------------------------------------------------------------
def fit(clf, data: str, out_dir: Optional[str] = None, progress=None, **options) -> Path:
    """Train a PatchSampler (and fit the conditional Gaussian) on ``data``; returns the weights path."""
    cfg = parse(PatchSamplerFitConfig, options, owner="patchsampler fit")
    key = data_key(str(data))
    out = Path(out_dir) if out_dir else user_dir(f"samplers/{key}")
    out.mkdir(parents=True, exist_ok=True)
    K = cfg.K
    name = fitted_name("patchsampler", K)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        report(progress, 0, cfg.steps + 1, "loading images")
        images = training_images(str(data), cfg.images)
        grey = all(np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 0], im[..., 2]) for im in images[:200])
        channels = cfg.channels or (1 if grey else 3)
        src = CropSource(images, K)

        with torch.random.fork_rng():  # seeded weight initialisation, no global side effect
            torch.manual_seed(cfg.seed)
            net = PatchSamplerNet(K, channels, cfg.width, kernel2=cfg.kernel2)
        # start the output layer at the pixel-value histogram (the marginal), as a prior
        t = _targets(src.sample(2048, torch.Generator().manual_seed(cfg.seed + 1)), K, channels)
        vals = t.permute(1, 0, 2, 3).reshape(channels, -1) + torch.arange(channels)[:, None] * LEVELS
        hist = torch.bincount(vals.reshape(-1), minlength=channels * LEVELS).float().view(channels, LEVELS)
        with torch.no_grad():
            net.out.bias.copy_(torch.log((hist + 1) / (hist + 1).sum(1, keepdim=True)).reshape(-1))
            net.out.weight.mul_(0.1)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        ckpt = Checkpoint(out, name)
        step, extra = 0, {}
        if ckpt.exists():
            step, extra = ckpt.load(net, opt)
        losses: list[float] = list(extra.get("losses", []))
        start = time.perf_counter() - float(extra.get("seconds", 0.0))
        net.train()
        while step < cfg.steps:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            crops = src.sample(cfg.batch, gen)
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = net(_inputs(crops, net))
            loss = F.cross_entropy(_class_first(logits), _targets(crops, K, channels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item() / math.log(2))
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                ckpt.save(net, opt, step, losses=losses, seconds=time.perf_counter() - start)
            if step % 10 == 0 or step == cfg.steps:
                report(progress, step, cfg.steps + 1, f"{np.mean(losses[-50:]):.3f} bits/subpixel")
        net.eval()
        seconds = time.perf_counter() - start

        # held-out check: the val split of a built-in dataset, else fresh crops (other seed)
        val_crops, val_from = _validation_crops(str(data), src, K, cfg)
        val_bits = nll_bits(net, val_crops)
        info = {
            "data": str(data),
            "key": key,
            "images": len(src.images),
            "steps_done": step,
            "seconds": round(seconds, 1),
            "train_bits_per_subpixel": round(float(np.mean(losses[-100:])), 4),
            "val_bits_per_subpixel": round(val_bits, 4),
            "val_from": val_from,
            "command": f"python -m explainers fit --explainer patchsampler --data {data}"
            + "".join(f" --set {k}={v}" for k, v in sorted(options.items())),
            "architecture": "PatchSamplerNet (Appendix B.C, adapted; see explainers/methods/samplers/fits.py)",
        }
        config = {**dataclasses.asdict(cfg), "channels": channels, "levels": LEVELS}
        path = save_fitted(out / f"{name}.safetensors", net, config, **info)
        ckpt.remove()

        report(progress, cfg.steps, cfg.steps + 1, "fitting the conditional Gaussian")
        fit_gaussian(src, K, channels, cfg, out, info, val_crops)
        report(progress, cfg.steps + 1, cfg.steps + 1, "done")
        return path
    finally:
        torch.set_num_threads(old_threads)


def _validation_crops(data: str, src: CropSource, K: int, cfg: PatchSamplerFitConfig) -> tuple[torch.Tensor, str]:
    from ..data import BUILTINS

    if data in BUILTINS:
        from ..data import load_dataset

        x, _ = load_dataset(data, "val", limit=200).arrays()
        vsrc = CropSource(list(x), K)
        return vsrc.sample(1024, torch.Generator().manual_seed(cfg.seed + 7), flip=False), "val split"
    return src.sample(1024, torch.Generator().manual_seed(cfg.seed + 7), flip=False), "training images (fresh crops)"


def gaussian_nll_bits(stats: dict, crops: torch.Tensor, K: int, channels: int) -> tuple[float, float]:
    """NLL of the hidden centres under the conditional Gaussian, bits per pixel and channel.

    Returns (joint, marginal): the joint density of the whole patch, and the product of its
    per-pixel marginals — the latter is factorised like the PatchSampler (one independent
    categorical per pixel and channel), so it is the like-for-like comparison. Densities become
    probabilities of 8-bit levels by the bin width 1/255 (the clamping to [0, 1] at sampling
    time is ignored).
    """
    from ..methods.samplers import hole_mask

    c = crops.double() / (LEVELS - 1)
    c = c.mean(1, keepdim=True) if channels == 1 else c
    flat = c.reshape(len(c), -1)
    hole = (hole_mask(K) == 0).expand(channels, -1, -1).reshape(-1)
    mu, A, L = (stats[k].double() for k in ("mu", "A", "L"))
    resid = flat[:, hole] - (mu[hole] + (flat[:, ~hole] - mu[~hole]) @ A.T)
    y = torch.linalg.solve_triangular(L, resid.T, upper=False)
    da = int(hole.sum())
    logdens = -0.5 * (y**2).sum(0) - torch.log(torch.diagonal(L)).sum() - 0.5 * da * math.log(2 * math.pi)
    joint = float((-logdens.mean() / da) / math.log(2) + math.log2(LEVELS - 1))
    var = (L @ L.T).diagonal()  # per-pixel marginals: factorised like the PatchSampler
    nll = 0.5 * resid**2 / var + 0.5 * torch.log(2 * math.pi * var)
    marginal = float(nll.mean() / math.log(2) + math.log2(LEVELS - 1))
    return joint, marginal


def fit_gaussian(
    src: CropSource, K: int, channels: int, cfg: PatchSamplerFitConfig, out: Path, info: dict, val_crops: torch.Tensor
) -> Path:
    """Mean and covariance of flattened (C, 3K, 3K) neighbourhoods, conditioned on the ring (PDA)."""
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    D = channels * (3 * K) ** 2
    s1 = torch.zeros(D, dtype=torch.float64)
    s2 = torch.zeros(D, D, dtype=torch.float64)
    n = 0
    while n < cfg.gaussian_patches:
        m = min(2048, cfg.gaussian_patches - n)
        c = src.sample(m, gen).float() / (LEVELS - 1)
        if channels == 1:
            c = c.mean(1, keepdim=True)
        v = c.reshape(m, -1).double()
        s1 += v.sum(0)
        s2 += v.T @ v
        n += m
    mean = s1 / n
    cov = s2 / n - torch.outer(mean, mean)
    stats = gaussian_from_moments(mean, cov, K, channels)
    config = {"K": K, "channels": channels, "patches": n, "eps": 1e-4}
    joint, marginal = gaussian_nll_bits(stats, val_crops, K, channels)
    return save_fitted(
        out / f"{fitted_name('gaussian', K)}.safetensors", stats, config,
        data=info["data"], key=info["key"], val_from=info["val_from"],
        val_bits_per_subpixel=round(joint, 4), val_marginal_bits_per_subpixel=round(marginal, 4),
    )
