"""MIP-IN's readings on efficientnet-lite0 (issue #24): the top-10% blur drop of each variant of the
classifier-module inversion on the real-network table's seven photographs, against Occlusion's.

    .venv/bin/python scripts/mipin_offline_crops.py --out runs/mipin_crops
    cp runs/lead/final.jsonl runs/p.jsonl   # Occlusion's and the random square's rows (imagenet_table.py)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/mipin_imagenet_variants.py --crops runs/mipin_crops --rows runs/p.jsonl
    OMP_NUM_THREADS=1 .venv/bin/python scripts/mipin_imagenet_variants.py --crops eval --rows runs/p.jsonl   # in-sample bound

Each variant's map is made here from the network's own tensors (X_0 = the 1280 × 7 × 7 head output,
a ReLU6 output, w_c the top Linear's row, Y_c the top-1 logit) and scored with imagenet_table.py's
``top_blur_drop`` (σ = 14 px); ``data-free/shares/bilinear`` is the method's default and reproduces
its table rows exactly. Variants:

- data-free top inverse w_c/‖w_c‖² (``store.data_free_params``) with the global pool inverted by
  ``shares`` (X/mean X per channel, the default), ``broadcast`` (the pooling's minimum-norm inverse:
  the pooled signal at every position) or ``activation`` (X itself: CAM — not an inverse), each
  gated by the forward ReLU; ``+relu`` = the paper's ReLU on the attribution vectors (Section 6.1)
  taken before the channel mean (after it, the ranking of the top 10% does not change); and the
  default with ReLU6's flat top gated too (0 < X < 6);
- the map resized ``bilinear`` (default), ``bicubic`` or ``nearest``;
- one more stage inverted, the head's 1×1 conv 320 → 1280 with its BN folded, data-free: its
  minimum-norm inverse (pinv of the folded weight; Eq. 7 with isotropic features) or its transpose;
  the 320-channel input is signed (a linear bottleneck), so read as the channel mean, the channel
  mean of attribution × input, or the channel mean of the ReLU'd attribution;
- fitted on ``--crops`` (an image folder of 224-px crops, ``train`` split; ``eval`` = 150 crops of
  each of the seven photographs themselves, an in-sample bound, not a held-out fit): the top Linear
  fitted by Eq. 6 (λ = 0.001) with the three pool inverses; the global pool fitted per position
  (the fits of version 1: X_0[c, ij] regressed on S[c]), whose attribution is
  Y_c · Cov(X_0, Y_c) / Var(Y_c) whatever the top inverse; the head conv fitted by Eq. 7 (ridge 0.1
  in units of the mean variance, 8 sampled positions per crop) below the data-free top inverse.

Prints one line per variant: the mean drop, × Occlusion's (rows of ``--reference`` in ``--rows``),
and the drop per photograph.
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from explainers import load_classifier  # noqa: E402
from imagenet_table import PHOTOS, load_photo, top_blur_drop  # noqa: E402
from mipin_offline_crops import crop  # noqa: E402


def head_parts(net):
    """(everything before the head, the head, the head conv's weight with its BN folded (1280, 320))."""
    head = net.features[-1]
    conv, bn = head[0], head[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return net.features[:-1], head, (conv.weight[:, :, 0, 0] * scale[:, None]).detach().double()


def crop_batches(source: str, batch: int):
    """Batches of (B, 3, 224, 224) pixels in [0, 1] from a crops folder's train split, or ``eval``."""
    if source == "eval":
        ims = [crop(load_photo(p), np.random.default_rng([1, zlib.crc32(p.encode()), i])) for p in PHOTOS for i in range(150)]
    else:
        from explainers.data import load_dataset

        ims = [it.image for it in load_dataset(source, "train")]
    for lo in range(0, len(ims), batch):
        yield torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
                           for im in ims[lo:lo + batch]])


def data_free_S(X, w, Y):
    """The data-free inverse down to X_0 with the pool's shares, gated: (B, 1280, 7, 7)."""
    mean = X.mean((2, 3), keepdim=True)
    share = torch.where(mean > 0, X / mean.clamp_min(1e-30), torch.ones_like(X))
    return Y.view(-1, 1, 1, 1) * (w / w.dot(w)).view(1, -1, 1, 1) * share * (X != 0)


def fit_stats(clf, source: str, targets: list[int], cache: Path, positions: int = 8) -> dict:
    """Streamed sums over the crops for the fitted variants (cached in ``cache``)."""
    if cache.exists():
        z = np.load(cache)
        return {k: torch.from_numpy(z[k]) for k in z.files}
    net = clf.net
    trunk, head, _ = head_parts(net)
    T = len(targets)
    acc = {"n": torch.zeros((), dtype=torch.float64), "sx0": torch.zeros(62720, dtype=torch.float64),
           "sx0y": torch.zeros(62720, T, dtype=torch.float64), "sy": torch.zeros(T, dtype=torch.float64),
           "syy": torch.zeros(T, dtype=torch.float64), "sp": torch.zeros(1280, dtype=torch.float64),
           "spy": torch.zeros(1280, T, dtype=torch.float64),
           # head conv (Eq. 7, 1x1): X_320 at sampled positions against the data-free S_1280, per class
           "m": torch.zeros(()), "ss": torch.zeros(T, 1280, dtype=torch.float64), "sx3": torch.zeros(320, dtype=torch.float64),
           "sss": torch.zeros(T, 1280, 1280, dtype=torch.float64), "sxs": torch.zeros(T, 320, 1280, dtype=torch.float64)}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for x in crop_batches(source, 50):
            h = trunk(clf.normalize(x))
            X = head(h)
            Ylog = net.classifier(X.mean((2, 3)))[:, targets].double()
            B = x.shape[0]
            Xf = X.reshape(B, -1).double()
            acc["n"] += B
            acc["sx0"] += Xf.sum(0)
            acc["sx0y"] += Xf.T @ Ylog
            acc["sy"] += Ylog.sum(0)
            acc["syy"] += (Ylog ** 2).sum(0)
            P = X.mean((2, 3)).double()
            acc["sp"] += P.sum(0)
            acc["spy"] += P.T @ Ylog
            pos = torch.stack([torch.randperm(49, generator=g)[:positions] for _ in range(B)])  # (B, P)
            X3 = torch.gather(h.reshape(B, 320, 49), 2, pos[:, None].expand(B, 320, positions)).transpose(1, 2).reshape(-1, 320).double()
            acc["m"] += X3.shape[0]
            acc["sx3"] += X3.sum(0)
            for t, c in enumerate(targets):
                w = net.classifier[1].weight[c].detach()
                S = data_free_S(X, w, Ylog[:, t].float())
                S = torch.gather(S.reshape(B, 1280, 49), 2, pos[:, None].expand(B, 1280, positions)).transpose(1, 2).reshape(-1, 1280).double()
                acc["ss"][t] += S.sum(0)
                acc["sss"][t] += S.T @ S
                acc["sxs"][t] += X3.T @ S
            print(f"  {int(acc['n'])} crops", file=sys.stderr, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{k: v.numpy() for k, v in acc.items()})
    return acc


def fitted(stats: dict, t: int, lam: float = 1e-3, conv_lam: float = 0.1) -> dict:
    """Class t's fitted parts: top dense Wd (1280,), per-position module inverse Wm (1280, 7, 7),
    head-conv inverse K (320, 1280)."""
    n = stats["n"]
    my = stats["sy"][t] / n
    vy = stats["syy"][t] / n - my ** 2
    Wd = (stats["spy"][:, t] / n - stats["sp"] / n * my) / (vy + lam)
    Wm = ((stats["sx0y"][:, t] / n - stats["sx0"] / n * my) / (vy + lam)).reshape(1280, 7, 7)
    m = stats["m"]
    ms = stats["ss"][t] / m
    css = stats["sss"][t] / m - torch.outer(ms, ms)
    cxs = stats["sxs"][t] / m - torch.outer(stats["sx3"] / m, ms)
    ridge = conv_lam * torch.diagonal(css).mean()
    K = torch.linalg.solve(css + ridge * torch.eye(1280, dtype=css.dtype), cxs.T).T
    return {"Wd": Wd, "Wm": Wm, "K": K}


def variant_maps(clf, x01: torch.Tensor, c: int, fit: dict | None) -> dict[str, tuple[torch.Tensor, str]]:
    """name -> (7 × 7 map, resize mode)."""
    net = clf.net
    trunk, head, Wf = head_parts(net)
    with torch.no_grad():
        h = trunk(clf.normalize(x01[None]))
        X = head(h)[0].double()
        Y = net.classifier(X.mean((1, 2))[None].float())[0, c].double()
        X3 = h[0].double()
    w = net.classifier[1].weight[c].detach().double()
    mean = X.mean((1, 2), keepdim=True)
    pools = {"shares": torch.where(mean > 0, X / mean.clamp_min(1e-30), torch.ones_like(X)),
             "broadcast": torch.ones_like(X), "activation": X}
    gate = (X != 0).double()
    out = {}
    tops = {"data-free": w / w.dot(w)}
    if fit is not None:
        tops["fitted-dense"] = fit["Wd"]
    for top, wt in tops.items():
        for pool, g in pools.items():
            a = Y * wt.view(-1, 1, 1) * g * gate
            out[f"{top}/{pool}/bilinear"] = (a.mean(0), "bilinear")
            out[f"{top}/{pool}+relu/bilinear"] = (F.relu(a).mean(0), "bilinear")
            if top == "data-free" and pool != "activation":
                for mode in ("bicubic", "nearest"):
                    out[f"{top}/{pool}/{mode}"] = (a.mean(0), mode)
    # ReLU6 is flat at 6 as well as at 0: gate the saturated entries too (0.5% of them here)
    a = Y * (w / w.dot(w)).view(-1, 1, 1) * pools["shares"] * ((X > 0) & (X < 6))
    out["data-free/shares, ReLU6 gate (0 < X < 6)/bilinear"] = (a.mean(0), "bilinear")
    a1280 = Y * (w / w.dot(w)).view(-1, 1, 1) * pools["shares"] * gate
    for name, K in (("pinv", torch.linalg.pinv(Wf)), ("transpose", Wf.T)) + ((("fitted-eq7", fit["K"]),) if fit else ()):
        a = torch.einsum("dc,chw->dhw", K, a1280)
        out[f"head-conv {name}/mean"] = (a.mean(0), "bilinear")
        out[f"head-conv {name}/times-input"] = ((a * X3).mean(0), "bilinear")
        out[f"head-conv {name}/relu-mean"] = (F.relu(a).mean(0), "bilinear")
    if fit is not None:
        a = Y * fit["Wm"] * gate
        out["fitted-module (per-position pool)"] = (a.mean(0), "bilinear")
        out["fitted-module (per-position pool)+relu"] = (F.relu(a).mean(0), "bilinear")
        out["fitted-module, not gated"] = ((Y * fit["Wm"]).mean(0), "bilinear")
    return out


def resize(m: torch.Tensor, size, mode: str) -> np.ndarray:
    up = F.interpolate(m[None, None].float(), size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    up = up[0, 0].double().numpy()
    if mode == "nearest":  # break the 32 × 32 blocks' ties by the bilinear map (else the cut picks among ties)
        up = up + 1e-6 * np.abs(up).max() * resize(m, size, "bilinear") / max(float(m.abs().max()), 1e-30)
    return up


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops", default=None, help="crops folder (train split) for the fitted variants, or 'eval'; none = data-free only")
    ap.add_argument("--rows", default="runs/p.jsonl", help="imagenet_table.py rows with the reference's drops")
    ap.add_argument("--reference", default="occlusion[stride=8,window=16]")
    ap.add_argument("--steps", type=int, default=16, help="the reference rows' --steps")
    ap.add_argument("--cache", default="runs/mipin_variants", help="folder for the crops' streamed sums")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clf = load_classifier("efficientnet-lite0", device="cpu")
    ref = {}
    for line in Path(args.rows).read_text().splitlines():
        r = json.loads(line)
        if r.get("steps") == args.steps and r.get("sigma") is None and r.get("fraction") == 0.1:
            ref[(r["method"], r["photo"])] = r["drop"]
    xs = {p: clf.pixels(load_photo(p)) for p in PHOTOS}
    with torch.no_grad():
        targets = [int(clf.net(clf.normalize(xs[p][None])).argmax()) for p in PHOTOS]
    fits = None
    if args.crops:
        tag = "eval" if args.crops == "eval" else Path(args.crops).name
        stats = fit_stats(clf, args.crops, targets, Path(args.cache) / f"{tag}.npz")
        fits = [fitted(stats, t) for t in range(len(targets))]
    drops: dict[str, dict] = {}
    for t, (p, c) in enumerate(zip(PHOTOS, targets)):
        for name, (m, mode) in variant_maps(clf, xs[p], c, fits[t] if fits else None).items():
            pr, pb = top_blur_drop(clf, xs[p], resize(m, tuple(clf.input_size), mode), c)
            drops.setdefault(name, {})[p] = pr - pb
    occ = np.mean([ref[(args.reference, p)] for p in PHOTOS])
    sq = np.mean([ref[("random-square", p)] for p in PHOTOS]) if all(("random-square", p) in ref for p in PHOTOS) else float("nan")
    print(f"reference {args.reference}: {occ:.3f}; random square {sq:.3f}; fitted on: {args.crops or '(none)'}")
    print("| variant | drop | × occl. | " + " | ".join(PHOTOS) + " |")
    print("|---|---|---|" + "---|" * len(PHOTOS))
    for name, d in drops.items():
        v = float(np.mean([d[p] for p in PHOTOS]))
        print(f"| {name} | {v:.3f} | {v / occ:.2f} | " + " | ".join(f"{d[p]:.3f}" for p in PHOTOS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
