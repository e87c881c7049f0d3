"""Bring your own network, on a real one: EfficientNet-Lite0 saved as torch.export (.pt2) and as
TorchScript in a scratch models folder, loaded back by name, and Grad-CAM's map compared with the
built-in network's on a sample photograph; prints what the method picker says for Grad-CAM and MIP-IN.

    OMP_NUM_THREADS=1 python scripts/byo_export_check.py [--folder /tmp/byo-models]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default=None, help="scratch models folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    d = Path(args.folder or tempfile.mkdtemp(prefix="byo-models-"))
    d.mkdir(parents=True, exist_ok=True)
    os.environ["EXPLAINERS_MODELS"] = str(d)
    from explainers import explain, load_classifier
    from explainers.availability import method_status
    from explainers.data import samples

    clf = load_classifier("efficientnet-lite0", device="cpu")
    img = next(s.image for s in samples(photos=True) if s.id.startswith("photos/"))
    meta = {"input_size": list(clf.input_size), "resize": clf.resize, "mean": list(clf.mean), "std": list(clf.std), "labels": clf.labels}
    t = time.perf_counter()
    ep = torch.export.export(clf.net, (torch.rand(2, 3, *clf.input_size),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    torch.export.save(ep, str(d / "effnet_export.pt2"))
    (d / "effnet_export.json").write_text(json.dumps(meta))
    print(f"torch.export + save: {time.perf_counter() - t:.1f} s")
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(clf.net, torch.rand(1, 3, *clf.input_size)), str(d / "effnet_ts.pt"))
    (d / "effnet_ts.json").write_text(json.dumps(meta))
    t = time.perf_counter()
    exported = load_classifier("effnet_export", device="cpu")
    print(f"load effnet_export.pt2: {time.perf_counter() - t:.1f} s ({type(exported.net).__name__})")
    ref = explain(clf, img, "gradcam")
    t = time.perf_counter()
    got = explain(exported, img, "gradcam")
    diff = float(np.abs(ref.maps["gradcam"] - got.maps["gradcam"]).max())
    print(f"Grad-CAM on the .pt2: {time.perf_counter() - t:.2f} s; max |difference| from the built-in network's map: {diff:.2e}; "
          f"top-1 {got.meta['target_label']} (built-in: {ref.meta['target_label']})")
    for name, c in [("built-in", clf), (".pt2", exported), ("TorchScript", load_classifier("effnet_ts", device="cpu"))]:
        for s in method_status(c, ["gradcam", "mipin"]):
            print(f"{name:12s} {s.method:8s} {s.line()[:150]}")


if __name__ == "__main__":
    main()
