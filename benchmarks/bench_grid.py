"""Speed of the comparison page ("Side by side") for the embedded default, as a user meets it.

    .venv/bin/python benchmarks/bench_grid.py [--threads 2] [--methods pmi-ig,dssr,...]

Drives the real page with Streamlit's AppTest (the page's own code, caches and plots) and prints:
- the seconds until the whole grid is filled from a cold cache (fresh disk cache, empty
  ``st.cache_data``; target within 30 s on a 2-core CPU), with each method's engine seconds;
- the seconds of a rerun after a slider change that hits the cache (η moved away and back: the
  second move finds every map cached; target under 1 s).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method of the page)")
    args = ap.parse_args()
    os.environ["EXPLAINERS_HOME"] = tempfile.mkdtemp(prefix="bench-grid-")  # a cold disk cache

    import streamlit as st
    import torch
    from streamlit.testing.v1 import AppTest

    torch.set_num_threads(args.threads)
    from ui.grid import available_methods

    methods = args.methods.split(",") if args.methods else available_methods()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
    at.session_state["compare.methods"] = methods
    at.run()  # the home page: loads the model (not counted: the grid's cost is the maps)
    t = time.perf_counter()
    at.switch_page("pages/compare.py").run()
    cold = time.perf_counter() - t
    if at.exception:
        sys.exit(f"the page raised: {at.exception[0].value}")
    print(f"shapes-resnet (embedded default), {torch.get_num_threads()} thread(s), {len(methods)} methods")
    for cap in at.caption:
        if " · range " in cap.value:
            print(f"  {cap.value}")
    print(f"whole grid from a cold cache:           {cold:7.2f} s   (target <= 30 s)")

    if "dcontrol" in methods:
        at.slider(key="knob.dcontrol.eta").set_value(2.0).run()  # recomputes the controller mask only
        t = time.perf_counter()
        at.slider(key="knob.dcontrol.eta").set_value(1.5).run()  # back: every map is cached
        hot = time.perf_counter() - t
        print(f"rerun after a slider change (cache hit): {hot:7.2f} s   (target < 1 s)")


if __name__ == "__main__":
    main()
