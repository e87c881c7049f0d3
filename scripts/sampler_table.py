"""PMI's samplers measured as the paper measures them (Fig. 13, Fig. 14), per data set.

    .venv/bin/python scripts/sampler_table.py                       # shapes and digits, markdown on stdout
    .venv/bin/python scripts/sampler_table.py --data shapes --auc-images 100 --fits shapes=/tmp/fit

For each data set (shapes with shapes-resnet, digits with digits-cnn) and each sampler
(patchsampler, gaussian = PDA's conditional Gaussian, mean, noise, grey = constant 0.5):

- **NLL**: held-out bits per subpixel on every non-overlapping 8×8 patch of the first
  ``--nll-images`` test images (``explainers.methods.samplers.evaluate``; None for a deterministic
  sampler, 8 for uniform noise);
- **roughness**: mean |difference| of neighbouring pixels inside one in-fill per patch, grey
  levels, against the real patches' (same patches);
- **FD** (Fig. 14): Fréchet distance between the classifier's penultimate features (the input of
  its last linear layer) of the ``--fd-images`` test images and of the same images with every
  other 8×8 patch of the grid, in both directions (a quarter of the pixels), in-filled once, each
  given its original neighbourhood;
- **deletion AUC** (Fig. 13): of the PMI map of the true class (``pmi-ig``, K = 8, N = ``--N`` (8), stride
  ``--stride``: 8 on shapes, 4 on digits by default, to fit in CPU time), RISE's deletion (black,
  32 steps, ``explainers.curves.deletion_auc``), mean over ``--auc-images`` test images with a 95%
  confidence interval (± 1.96 standard errors) and the paired difference from the PatchSampler.

``--temperature T`` draws the PatchSampler's in-fills at temperature T (ours, beyond the paper;
``PatchSamplerNet.sample``) for roughness, FD and deletion AUC; its NLL stays the model's (T = 1);
``--temperature 1,0.8`` gives one PatchSampler row per temperature (paired differences are from
the first row measured).
``--fd-draws D`` repeats the FD of a random sampler with D sets of in-fills (draw d in-fills
image i with seed 1000·d + i; d = 0 is the single draw of the default) and reports their mean and
range, since one draw's FD varies by about ±0.05 on shapes.
``--samplers`` measures only the named rows (``--auc-images 0`` skips the deletion AUCs).
``--fits DATA=FOLDER`` measures the fitted samplers in FOLDER instead of the committed ones;
``--figure PNG`` draws in-fills of patches of the held-out photographs instead (the committed
``assets/explainers/samplers/photos/infills.png``).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from explainers import explain, load_classifier  # noqa: E402
from explainers.curves import deletion_auc  # noqa: E402
from explainers.data import load_dataset  # noqa: E402
from explainers.methods.samplers import InFills, make_sampler  # noqa: E402
from explainers.methods.samplers.evaluate import measure  # noqa: E402

SETUPS = {"shapes": ("shapes-resnet", 8), "digits": ("digits-cnn", 4)}  # data: (classifier, default stride)
SAMPLERS = [("patchsampler", {}), ("gaussian", {}), ("mean", {}), ("noise", {}), ("grey", {"value": 0.5})]
K = 8


def _engine_name(name: str) -> str:
    return "constant" if name == "grey" else name


def penultimate(clf, x01: torch.Tensor, batch: int = 256) -> np.ndarray:
    """The input of the classifier's last linear layer for images (B, 3, H, W) in [0, 1]."""
    last = [m for m in clf.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    feats = []
    hook = last.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach().flatten(1).double().cpu()))
    try:
        with torch.no_grad():
            for i in range(0, len(x01), batch):
                clf.logits01(x01[i : i + batch].to(clf.device))
    finally:
        hook.remove()
    return torch.cat(feats).numpy()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||μa − μb||² + Tr(Σa + Σb − 2 (Σa Σb)^½), the trace of the root from the eigenvalues of the
    symmetric Σa^½ Σb Σa^½ (Σa^½ by eigendecomposition: ReLU features leave Σ singular)."""
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    ra = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = ra @ sb @ ra
    ev = np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(ev).sum())


def grid_infilled(x01: torch.Tensor, sampler, seed: int) -> torch.Tensor:
    """x01 (1, 3, H, W) with every other K×K patch of the grid in both directions in-filled once."""
    h, w = x01.shape[-2:]
    ys, xs = np.arange(0, h - K + 1, 2 * K), np.arange(0, w - K + 1, 2 * K)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = torch.as_tensor(yy.ravel()), torch.as_tensor(xx.ravel())
    fills = InFills(sampler, x01, y0, x0, 1, seed).all()[:, 0]
    out = x01.clone()
    for i in range(len(y0)):
        out[0, :, int(y0[i]) : int(y0[i]) + K, int(x0[i]) : int(x0[i]) + K] = fills[i]
    return out


def ci(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def run(data: str, fit: str, args) -> list[dict]:
    model, default_stride = SETUPS[data]
    stride = args.stride or default_stride
    clf = load_classifier(model, device="cpu")
    n_fd = args.fd_images
    test = load_dataset(data, "test", limit=max(n_fd, args.auc_images, args.nll_images))
    x_all, y_all = test.arrays()
    x_all = torch.as_tensor(x_all).permute(0, 3, 1, 2).float() / 255
    real_feats = penultimate(clf, x_all[:n_fd])
    rows = []
    temps = [float(t) for t in str(args.temperature).split(",")]
    todo = [(name, {**extra, "temperature": t} if name == "patchsampler" else extra) for name, extra in SAMPLERS
            for t in (temps if name == "patchsampler" else [1.0])]  # one PatchSampler row per temperature, T explicit
    for name, extra in todo:
        if args.samplers and name not in args.samplers.split(","):
            continue
        t0 = time.perf_counter()
        eng = _engine_name(name)
        row = {"sampler": name if extra.get("temperature", 1.0) == 1.0 else f"{name} (T = {extra['temperature']:g})"}
        images = [np.asarray(test[i].image) for i in range(args.nll_images)]
        row.update(measure(images, eng, fit, K=K, seed=0, **extra))
        sampler = make_sampler(eng, K, torch.device("cpu"), fit, **extra)
        fds = []
        for d in range(1 if sampler.deterministic else args.fd_draws):
            filled = torch.cat([grid_infilled(x_all[i : i + 1], sampler, seed=1000 * d + i) for i in range(n_fd)])
            fds.append(frechet(real_feats, penultimate(clf, filled)))
        row["fd"], row["fd_range"] = float(np.mean(fds)), (min(fds), max(fds)) if len(fds) > 1 else None
        aucs = []
        for i in range(args.auc_images):
            r = explain(clf, test[i].image, "pmi-ig", target=int(y_all[i]), K=K, N=args.N, stride=stride, sampler=eng,
                        sampler_data=fit, seed=0, **extra)
            aucs.append(deletion_auc(clf, clf.pixels(test[i].image), r.maps["pmi"], int(y_all[i])))
        row["auc"] = aucs
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  [{data}] {name}: done in {row['seconds']:.0f} s", file=sys.stderr, flush=True)
    return rows


def table(data: str, rows: list[dict], args) -> str:
    model, default_stride = SETUPS[data]
    ps = np.asarray(rows[0]["auc"])  # the first row measured (the PatchSampler's unless --samplers leaves it out)
    draws = f", mean (range) of {args.fd_draws} draws" if args.fd_draws > 1 else ""
    out = [f"**{data}** ({model}; NLL and roughness on {args.nll_images} test images, {rows[0]['patches']} patches; "
           f"FD on {args.fd_images}{draws}; deletion AUC on {args.auc_images}, PMI at K = 8, N = {args.N}, "
           f"stride {args.stride or default_stride})",
           "", "| sampler | NLL (bits/subpixel) | roughness (real) | FD | deletion AUC (95% CI) | minus PatchSampler's (95% CI) |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        nll = "—" if r["bits_per_subpixel"] is None else f"{r['bits_per_subpixel']:.3f}"
        m, h = ci(r["auc"]) if r["auc"] else (math.nan, math.nan)
        dm, dh = ci(list(np.asarray(r["auc"]) - ps)) if r["auc"] else (math.nan, math.nan)
        diff = "—" if r is rows[0] or not r["auc"] else f"{dm:+.4f} ± {dh:.4f}"
        auc = f"{m:.4f} ± {h:.4f}" if r["auc"] else "—"
        fd = f"{r['fd']:.3f}" + (f" ({r['fd_range'][0]:.3f}–{r['fd_range'][1]:.3f})" if r["fd_range"] else "")
        out.append(f"| {r['sampler']} | {nll} | {r['roughness']:.2f} ({r['real_roughness']:.2f}) | {fd} | "
                   f"{auc} | {diff} |")
    return "\n".join(out)


def infills_figure(path: Path, fit: str = "photos", n: int = 6) -> None:
    """Fig. 14 on photographs: for patches of the held-out pictures, the 3K×3K neighbourhood
    (patch greyed) and ``n`` in-fills from each sampler (the photos fit by default)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from explainers.methods.samplers import infills
    from explainers.training.patchsampler import HELD_OUT, PHOTO_SCALES, _resize_short, photo

    # (picture, patch x, y at the 256-px scale): fur and an edge of the cat, petals of the flower
    spots = [("chelsea", 170, 120), ("chelsea", 60, 170), ("flower.jpg", 190, 100), ("flower.jpg", 230, 170)]
    names = ["patchsampler", "gaussian", "blur", "mean", "noise", "grey"]
    fig, axes = plt.subplots(len(spots) * len(names), n + 1, figsize=(1.1 * (n + 1), 1.1 * len(spots) * len(names)))
    for si, (pic, px, py) in enumerate(spots):
        assert pic in HELD_OUT
        im = torch.as_tensor(_resize_short(photo(pic), PHOTO_SCALES[0]).copy()).permute(2, 0, 1).float() / 255
        for ni, name in enumerate(names):
            out = infills(fit, im, (px, py), K=K, N=n, sampler=_engine_name(name), seed=0, value=0.5)
            row = axes[si * len(names) + ni]
            shown = out["neighbourhood"].copy()
            shown[:, out["hole"]] = 0.5
            for j, img in enumerate([shown] + list(out["filled"])):
                row[j].imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
                row[j].set_xticks([])
                row[j].set_yticks([])
            row[0].set_ylabel(f"{name}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"In-fills of 8×8 patches of held-out pictures ({', '.join(HELD_OUT)}) given their 24×24 neighbourhood",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="shapes,digits", help="comma-separated: shapes, digits")
    ap.add_argument("--nll-images", type=int, default=200)
    ap.add_argument("--fd-images", type=int, default=500)
    ap.add_argument("--auc-images", type=int, default=100)
    ap.add_argument("--N", type=int, default=8, help="PMI in-fills per patch for the deletion AUCs (paper: 8)")
    ap.add_argument("--stride", type=int, default=None, help="PMI stride for the deletion AUCs (default: 8 shapes, 4 digits)")
    ap.add_argument("--temperature", default="1", help="the PatchSampler's sampling temperature(s), comma-separated "
                    "(ours; default 1 = the model, as the paper; pmi-ig's default is 0.8)")
    ap.add_argument("--fd-draws", type=int, default=1, help="FD of a random sampler averaged over this many draws")
    ap.add_argument("--samplers", default=None, help="comma-separated rows to measure (default: all)")
    ap.add_argument("--fits", action="append", default=[], metavar="DATA=FOLDER", help="use these fitted samplers")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", default=None, metavar="PNG", help="only draw in-fills of held-out photographs to PNG")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fits = dict(f.split("=", 1) for f in args.fits)
    if args.figure:
        infills_figure(Path(args.figure), fits.get("photos", "photos"))
        return 0
    for data in args.data.split(","):
        rows = run(data, fits.get(data, data), args)
        print(table(data, rows, args) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
