"""Fitting the PatchSampler (and the conditional Gaussian baseline) for PMI / IG maps.

    python -m explainers fit --explainer patchsampler --data shapes --out assets/explainers/samplers/shapes
    python -m explainers fit --explainer patchsampler --data digits --out assets/explainers/samplers/digits
    python -m explainers fit --explainer patchsampler --data photos --out assets/explainers/samplers/photos
    python -m explainers fit --explainer patchsampler --data FOLDER [--set K=4 --set steps=3000 ...]

``--data`` is a built-in dataset (its train split; validation on its val split), ``photos`` or an
image folder (validation on fresh crops of the same pictures: say so when reporting it).
``photos`` are the colour photographs that ship with scikit-image and scikit-learn (no download),
each at two scales (shorter side 256 px, as torchvision's preprocessing before its 224 crop, and
160 px) and mirrored; the pictures in ``HELD_OUT`` are never fitted on and give the validation
NLL and any figure. Without ``--out`` the files go to ``$EXPLAINERS_HOME/fitted/samplers/<data>/``,
where ``pmi-ig`` finds them before the committed ones.

Training: random 3K×3K crops whose K×K centre lies inside the image; the image is ZERO-padded by
K and a fourth plane marks its pixels, so a crop's known pixels (``geometry.known``: inside the
image, outside the centre) are exactly what the sampler sees at explanation time and nothing of
the centre leaks into the ring. Half of each batch is the most varied-ringed quarter of extra
candidate crops (``focus``; chosen from the ring alone, so the target p(centre | ring) is
unchanged): shape edges, rare among random crops, are where in-fills went wrong. Loss: the exact
negative log-likelihood of the centre's 8-bit pixels (``PatchSamplerNet.log_prob``); Adam, cosine learning-rate decay after a short warm-up,
gradient norm clipped at 1. Each step's crops come from a generator seeded by (seed, step), so a
resumed run (``<name>.ckpt.safetensors``) continues exactly as an uninterrupted one. ``init``
starts from a finished fit's weights to fit longer (new Adam state and schedule; the card's
``init_from`` names the weights by sha256 and the command that made them). The
conditional Gaussian (Zintgraf et al.'s PDA) is fitted afterwards on ``gaussian_patches`` crops
lying wholly inside the images: mean and covariance of the flattened neighbourhoods (see
``samplers.gaussian_from_moments``).
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

from ..config import knob, parse
from ..errors import ExplainerError
from ..fitted import Checkpoint, save_fitted, user_dir
from ..methods.samplers import LEVELS, PatchSamplerNet, fitted_name, gaussian_from_moments, hole_mask, load_gaussian
from ..methods.samplers.fits import ARCH, data_key
from ..progress import report

# every colour photograph bundled with scikit-image (by loader name; ``stereo_motorcycle:0`` is the
# left view of the pair) and scikit-learn (by file name) that loads offline; ``cat`` is ``chelsea``,
# ``logo`` and ``colorwheel`` are drawings, ``skin`` / ``lily`` need a download
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle:0", "stereo_motorcycle:1", "hubble_deep_field",
          "retina", "immunohistochemistry", "china.jpg", "flower.jpg")
HELD_OUT = ("chelsea", "flower.jpg")  # whole pictures never fitted on: validation and figures
PHOTO_SCALES = (256, 160)  # shorter sides the fitted pictures are used at


@dataclass(frozen=True)
class PatchSamplerFitConfig:
    """Training options (``--set key=value``)."""

    K: int = knob(8, "patch side K the sampler is for (3K×3K neighbourhoods; paper: 8)", min=1, max=32, step=1)
    channels: int = knob(0, "0 = automatic (1 for grey-level data such as digits, else 3)", choices=(0, 1, 3))
    width: int = knob(64, "trunk channels (paper: 256)", min=1, max=512, step=1)
    head: int = knob(64, "channels of the head that draws the pixel groups", min=1, max=512, step=1)
    mixtures: int = knob(4, "discretised logistics per pixel", min=1, max=16, step=1)
    coherent: bool = knob(True, "draw the patch's pixels in six groups, each given the ones before (False: every "
                          "pixel independently, as the paper; an ablation)")
    steps: int = knob(2000, "Adam steps", min=1, step=1)
    batch: int = knob(32, "crops per step", min=1, step=1)
    lr: float = knob(2e-3, "peak learning rate (cosine decay)", min=1e-6, max=1.0)
    warmup: int = knob(100, "steps of linear learning-rate warm-up", min=0, step=1)
    focus: float = knob(0.5, "share of each batch taken from the crops whose known ring varies most (the best "
                        "quarter of 4× as many candidates); chosen by the ring alone, so p(centre | ring) is unchanged",
                        min=0.0, max=1.0)
    images: int = knob(6000, "at most this many training images of a dataset or folder", min=1, step=1)
    gaussian_patches: int = knob(20000, "crops the conditional Gaussian is fitted on", min=1, step=1)
    threads: int = knob(1, "torch CPU threads while fitting", min=1, max=64, step=1)
    checkpoint_every: int = knob(100, "steps between checkpoints", min=1, step=1)
    seed: int = knob(0, "seeds the initialisation and every step's crops", min=0, step=1)
    init: Optional[str] = knob(None, "start from these fitted PatchSampler weights (a .safetensors with its card, the "
                               "same K, channels, width, head, mixtures and coherent) instead of a random initialisation, "
                               "to fit longer; Adam, the warm-up and the cosine decay start afresh; empty = random",
                               auto="none", advanced=True)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v, lo, hi = getattr(self, f.name), f.metadata.get("min"), f.metadata.get("max")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
                raise ExplainerError(f"patchsampler fit: {f.name} must be {rng}, got {v}")


# ---------------------------------------------------------------------------------------------
# training images
# ---------------------------------------------------------------------------------------------
def _resize_short(arr: np.ndarray, short: int = 256) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(arr)
    w, h = img.size
    s = short / min(w, h)
    return np.asarray(img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


def photo(name: str) -> np.ndarray:
    """One bundled colour photograph as uint8 (H, W, 3) at its own size (``PHOTOS`` names it)."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return np.ascontiguousarray(load_sample_image(name)[..., :3])
    import skimage.data

    loader, _, part = name.partition(":")
    im = getattr(skimage.data, loader)()
    return np.ascontiguousarray(np.asarray(im[int(part)] if part else im)[..., :3])


def photo_images(held_out: bool = False, scales: tuple[int, ...] = PHOTO_SCALES) -> list[np.ndarray]:
    """The bundled colour photographs (the fitted ones, or the ``HELD_OUT`` ones) at each of ``scales``."""
    out = []
    for name in PHOTOS:
        if (name in HELD_OUT) != held_out:
            continue
        try:
            im = photo(name)
        except Exception:  # noqa: BLE001 - a picture missing from this installation
            continue
        out += [_resize_short(im, s) for s in scales]
    if not out:
        raise ExplainerError("no colour photographs found in this scikit-image / scikit-learn installation")
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


class CropSource:
    """Random 3K×3K crops (n, 4, 3K, 3K) uint8 of zero-padded images: RGB and an inside-the-image plane."""

    def __init__(self, images: list[np.ndarray], K: int):
        self.K = K
        self.images = []
        for im in images:
            h, w = im.shape[:2]
            if min(h, w) < K:
                continue
            t = torch.zeros(4, h + 2 * K, w + 2 * K, dtype=torch.uint8)  # zero padding, never a copy of pixels
            t[:3, K : K + h, K : K + w] = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)
            t[3, K : K + h, K : K + w] = 1
            self.images.append(t)
        if not self.images:
            raise ExplainerError(f"no training image is at least {K} pixels on its shorter side")
        sizes = torch.tensor([t.shape[1] * t.shape[2] for t in self.images], dtype=torch.float64)
        self.weights = sizes / sizes.sum()  # pick images in proportion to their area

    def crops_at(self, idx: list[int], ys: list[int], xs: list[int]) -> torch.Tensor:
        """The crops whose centres' top-left pixels are (ys, xs) of images ``idx`` (image coordinates)."""
        k3 = 3 * self.K
        return torch.stack([self.images[i][:, y : y + k3, x : x + k3] for i, y, x in zip(idx, ys, xs)])

    def sample(self, n: int, gen: torch.Generator, flip: bool = True, interior: bool = False) -> torch.Tensor:
        """``n`` crops with the centre inside the image (``interior``: the whole crop inside)."""
        K = self.K
        lo = K if interior else 0
        ok = [i for i, t in enumerate(self.images) if t.shape[1] - 2 * K - 2 * lo >= K and t.shape[2] - 2 * K - 2 * lo >= K]
        if not ok:
            raise ExplainerError(f"no training image is at least {3 * K} pixels on its shorter side")
        w = self.weights[ok]
        idx = [ok[int(j)] for j in torch.multinomial(w / w.sum(), n, replacement=True, generator=gen)]
        u = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        ys, xs = [], []
        for i, j in enumerate(idx):
            H, W = self.images[j].shape[1] - 2 * K, self.images[j].shape[2] - 2 * K
            ys.append(lo + min(int(u[i, 0] * (H - K - 2 * lo + 1)), H - K - 2 * lo))
            xs.append(lo + min(int(u[i, 1] * (W - K - 2 * lo + 1)), W - K - 2 * lo))
        crops = self.crops_at(idx, ys, xs)
        if flip:
            f = u[:, 2] < 0.5
            crops[f] = crops[f].flip(-1)
        return crops


def focused_crops(src: CropSource, n: int, focus: float, gen: torch.Generator) -> torch.Tensor:
    """``n`` crops, a share ``focus`` of them the most varied-ringed quarter of 4× as many candidates.

    The choice reads only the ring's known pixels, never the centre, so the network still learns
    p(centre | ring) — it sees more of the rings where that is hard (shape edges), fewer flat ones.
    """
    m = int(round(n * focus))
    crops = src.sample(n - m, gen)
    if m:
        cand = src.sample(4 * m, gen)
        known = (cand[:, 3:4] * hole_mask(src.K)).float()
        rgb = cand[:, :3].float()
        cnt = known.sum((2, 3)).clamp_min(1)
        mean = (rgb * known).sum((2, 3)) / cnt
        var = (((rgb - mean[..., None, None]) ** 2) * known).sum((2, 3)) / cnt
        crops = torch.cat([crops, cand[var.mean(1).argsort(descending=True, stable=True)[:m]]])
    return crops


def batch_tensors(crops: torch.Tensor, net: PatchSamplerNet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(neighbourhoods in [0, 1] in the net's channels, known masks, centres in [-1, 1]) of uint8 crops."""
    K = net.K
    neigh = net.to_input(crops[:, :3].float() / (LEVELS - 1))
    known = crops[:, 3:4].float() * hole_mask(K)
    centre = crops[:, :3, K : 2 * K, K : 2 * K].float()
    if net.channels == 1:
        centre = centre.mean(1, keepdim=True).round()
    return neigh, known, centre * 2 / (LEVELS - 1) - 1


def nll_bits(net: PatchSamplerNet, crops: torch.Tensor, batch: int = 256) -> float:
    """Mean negative log-likelihood of the hidden centres, in bits per pixel and channel."""
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            neigh, known, x = batch_tensors(crops[i : i + batch], net)
            tot -= float(net.log_prob(net.trunk(neigh, known), x).sum())
            n += x.numel()
    return tot / n / math.log(2)


# ---------------------------------------------------------------------------------------------
# the fitter
# ---------------------------------------------------------------------------------------------
def fit(clf, data: str, out_dir: Optional[str] = None, progress=None, **options) -> Path:
    """Train a PatchSampler (and fit the conditional Gaussian) on ``data``; returns the weights path."""
    from ..data import BUILTINS

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
            net = PatchSamplerNet(K, channels, cfg.width, cfg.head, cfg.mixtures, cfg.coherent)
        init_from = _warm_start(net, cfg.init) if cfg.init else None
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
            neigh, known, x = batch_tensors(focused_crops(src, cfg.batch, cfg.focus, gen), net)
            warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
            for g in opt.param_groups:
                g["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            loss = -net.log_prob(net.trunk(neigh, known), x).mean() / channels  # nats per subpixel
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            losses.append(loss.item() / math.log(2))
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                ckpt.save(net, opt, step, losses=losses, seconds=time.perf_counter() - start)
            if step % 10 == 0 or step == cfg.steps:
                report(progress, step, cfg.steps + 1, f"{np.mean(losses[-50:]):.3f} bits/subpixel")
        net.eval()
        seconds = time.perf_counter() - start

        val_crops, val_from = _validation_crops(str(data), src, K, cfg)
        info = {
            "data": str(data),
            "key": key,
            "images": len(src.images),
            "photos": [p for p in PHOTOS if p not in HELD_OUT] if str(data) == "photos" else None,
            "held_out": list(HELD_OUT) if str(data) == "photos" else None,
            "short_side": None if str(data) in BUILTINS else PHOTO_SCALES[0],  # sampler-nll resizes to it
            "steps_done": step,
            "init_from": init_from,
            "seconds": round(seconds, 1),
            "train_bits_per_subpixel": round(float(np.mean(losses[-100:])), 4),
            "val_bits_per_subpixel": round(nll_bits(net, val_crops), 4),
            "val_from": val_from,
            "command": f"python -m explainers fit --explainer patchsampler --data {data}"
            + "".join(f" --set {k}={v}" for k, v in sorted(options.items())),
            "architecture": "PatchSamplerNet: Appendix B.C's trunk, narrower, with pixels drawn in six groups "
            "(see explainers/methods/samplers/network.py)",
        }
        config = {**dataclasses.asdict(cfg), "channels": channels, "levels": LEVELS, "arch": ARCH}
        path = save_fitted(out / f"{name}.safetensors", net, config, **{k: v for k, v in info.items() if v is not None})
        ckpt.remove()

        report(progress, cfg.steps, cfg.steps + 1, "fitting the conditional Gaussian")
        fit_gaussian(src, K, channels, cfg, out, info, val_crops)
        report(progress, cfg.steps + 1, cfg.steps + 1, "done")
        return path
    finally:
        torch.set_num_threads(old_threads)


def _warm_start(net: PatchSamplerNet, path: str) -> dict:
    """Load fitted weights into ``net`` (same architecture); returns what the card records of them."""
    import hashlib

    from ..fitted import load_fitted

    p = Path(path).expanduser()
    if not p.is_file() or not p.with_suffix(".json").is_file():
        raise ExplainerError(f"patchsampler fit: init {path}: no such fitted file (a .safetensors with its .json card)")
    tensors, card = load_fitted(p)
    mine = {"K": net.K, "channels": net.channels, "width": net.width, "head": net.head_width, "mixtures": net.mixtures,
            "coherent": net.coherent, "arch": ARCH}
    theirs = {k: card.get("config", {}).get(k, True if k == "coherent" else None) for k in mine}
    if theirs != mine:
        diff = ", ".join(f"{k}={theirs[k]} (here {v})" for k, v in mine.items() if theirs[k] != v)
        raise ExplainerError(f"patchsampler fit: init {path} is a different network: {diff}")
    net.load_state_dict(tensors)
    return {"path": str(path), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "command": card.get("command"),
            "steps_done": card.get("steps_done"), "val_bits_per_subpixel": card.get("val_bits_per_subpixel")}


def _validation_crops(data: str, src: CropSource, K: int, cfg: PatchSamplerFitConfig) -> tuple[torch.Tensor, str]:
    from ..data import BUILTINS

    gen = torch.Generator().manual_seed(cfg.seed + 7)
    if data in BUILTINS:
        from ..data import load_dataset

        x, _ = load_dataset(data, "val", limit=200).arrays()
        return CropSource(list(x), K).sample(1024, gen, flip=False), "val split"
    if data == "photos":
        return CropSource(photo_images(held_out=True), K).sample(1024, gen, flip=False), "held-out pictures: " + ", ".join(HELD_OUT)
    return src.sample(1024, gen, flip=False), "training images (fresh crops)"


def gaussian_nll_bits(path: Path, crops: torch.Tensor, K: int, channels: int) -> float:
    """NLL of the hidden centres under the fitted conditional Gaussian (conditioned on each crop's
    known pixels), bits per pixel and channel: the density times one grey level (1/255 of [0, 1]),
    i.e. the density discretised to the 256 levels (clamping to [0, 1] when sampling is ignored)."""
    g = load_gaussian(str(path), "cpu")
    neigh = crops[:, :3].double() / (LEVELS - 1)
    known = crops[:, 3].double() * hole_mask(K).double()
    logdens = g.log_density(neigh, known)
    return float((-logdens.mean() / (channels * K * K)) / math.log(2) + math.log2(LEVELS - 1))


def fit_gaussian(
    src: CropSource, K: int, channels: int, cfg: PatchSamplerFitConfig, out: Path, info: dict, val_crops: torch.Tensor
) -> Path:
    """Mean and covariance of flattened (C, 3K, 3K) neighbourhoods lying inside the images (PDA)."""
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    D = channels * (3 * K) ** 2
    s1 = torch.zeros(D, dtype=torch.float64)
    s2 = torch.zeros(D, D, dtype=torch.float64)
    n = 0
    while n < cfg.gaussian_patches:
        m = min(2048, cfg.gaussian_patches - n)
        c = src.sample(m, gen, interior=True)[:, :3].float() / (LEVELS - 1)
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
    card = {k: info[k] for k in ("data", "key", "short_side") if info.get(k) is not None}
    path = save_fitted(out / f"{fitted_name('gaussian', K)}.safetensors", stats, config, **card)
    bits = gaussian_nll_bits(path, val_crops, K, channels)
    return save_fitted(path, stats, config, **card, val_from=info["val_from"], val_bits_per_subpixel=round(bits, 4))
