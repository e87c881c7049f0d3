"""Streamlit entry point: navigation over pages/ and the shared sidebar. Nothing else.

Run with ``streamlit run app.py`` (settings in ``.streamlit/config.toml``).
"""
from pathlib import Path

import streamlit as st

from ui import sidebar, widgets, work

st.set_page_config(page_title="Explainer explorer", page_icon=":material/visibility:", layout="wide")

HERE = Path(__file__).parent
# (file, title, icon). Every file must exist: a renamed or deleted page stops the app with its name.
PAGES = [
    ("pages/home.py", "Image & prediction", ":material/home:"),
    ("pages/compare.py", "Side by side", ":material/grid_view:"),
    ("pages/pmi.py", "PMI & IG", ":material/functions:"),
    ("pages/class_vs_class.py", "Class vs class", ":material/compare:"),
    ("pages/dssr.py", "DSSR+", ":material/texture:"),
    ("pages/varsal.py", "VarSal", ":material/blur_on:"),
    ("pages/dcontrol.py", "Distribution controller", ":material/bar_chart:"),
    ("pages/mipin.py", "MIP-IN", ":material/undo:"),
    ("pages/metrics.py", "Faithfulness", ":material/rule:"),
    ("pages/tour.py", "Teaching tour", ":material/school:"),
]

missing = [f for f, _, _ in PAGES if not (HERE / f).exists()]
if missing:
    raise FileNotFoundError(f"app.py lists pages that do not exist: {', '.join(missing)}")
pages = [st.Page(str(HERE / f), title=t, icon=i, default=(k == 0)) for k, (f, t, i) in enumerate(PAGES)]
page = st.navigation(pages)
ctx = sidebar.render()
if sidebar.changed(ctx):
    # another classifier, device or image: stop its work, drop its class boxes, and start a fresh
    # run, which clears every map and class name of the old one from the screen at once
    work.cancel_all()
    widgets.forget_context()
    st.rerun()
page.run()
