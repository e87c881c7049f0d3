"""MIP-IN: invert the network layer by layer (learned inverses, forward ReLU) into a source signal."""
import numpy as np
import streamlit as st

from explainers.methods.mipin import MIPINConfig
from ui import page, plots, plots_mipin
from ui.widgets import help_for, kept, target_picker

LAMBDAS = [0.0, 1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]

st.title("MIP-IN: learn to invert")
st.caption(
    "The logit of the class is inverted layer by layer back to the input with inverses **learned** on "
    "the training data (each reconstructs its layer's input by least squares, Eq. 5–8), and zeroed wherever "
    "the forward activation was zero (forward ReLU, Section 4.2). The **source signal** S₀ is the result; "
    "the **attribution** is its bias-free part (product of the inverses' weights, Algorithm 1): red = positive "
    "evidence for the class, blue = negative, white = not needed (Fig. 5)."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen
d = MIPINConfig()

c1, c2, c3 = st.columns([2, 2, 1])
with c1:
    target = target_picker(pc.top, key="mipin.class", label="Class to explain (top 5)")
with c2:
    lam = st.select_slider(
        "λ (ridge of the dense inverses, Eq. 6)", LAMBDAS, **kept("mipin.lam", d.lam, lambda v: v in LAMBDAS),
        format_func=lambda v: f"{v:g}",
        help=f"{help_for(MIPINConfig, 'lam')}. Changing λ re-solves every dense inverse in closed form from the statistics "
             "stored with the fit: exact for the top layer; the layers below keep the statistics gathered with the fitted λ.",
    )
with c3:
    forward_relu = st.checkbox("forward ReLU", **kept("mipin.frelu", d.forward_relu),
                               help=f"{help_for(MIPINConfig, 'forward_relu')}. Off: the same signal for every image of a class.")

params = {k: v for k, v in {"lam": float(lam), "forward_relu": forward_relu}.items() if v != getattr(d, k)}
res = page.explain_or_stop(pc, "mipin", params, target, slot="mipin")

m, ex = res.meta, res.extras
t = m["target"]
label = clf.labels[t]
unit = m.get("units", {}).get("attribution") or m.get("unit", "input units")  # the same name as in the grid
scope = m.get("scope", "network")
if scope == "classifier":
    st.info(
        "For this network only the classifier module is inverted, on top of the last convolutional features; "
        "the attribution is averaged over channels and resized to the image, like Grad-CAM (Section 6.1).",
        icon=":material/info:",
    )

st.subheader(f"Attribution · {label}")
left, right = st.columns(2)
attr = res.maps["attribution"]
kind = (m.get("kinds") or {}).get("attribution", "signed")  # a whole-network inversion may give a magnitude
with left:
    page.chart(plots.map_figure(None, attr, kind, unit, "attribution" + (" (diverging, 0 = white)" if kind == "signed" else "")))
with right:
    page.chart(plots.map_figure(seen, attr, kind, unit, "over the image"))
if plots.near_zero(attr, unit):
    st.caption(f":warning: {plots.near_zero(attr, unit)}")
pos, neg = float(np.clip(attr, 0, None).sum()), float(np.clip(attr, None, 0).sum())
st.caption(
    f"sum of positive evidence {pos:.4g}, of negative evidence {neg:.4g} ({unit}) · "
    f"λ = {lam:g}" + (" (re-solved from the stored statistics)" if m.get("resolved") else " (as fitted)")
    + f" · {m['seconds'] * 1000:.0f} ms" + (" · from the cache" if m.get("cached") else "")
)

st.subheader("Source signal")
fx, fs = float(m["logit"]), float(m["source_logit"])
change = plots_mipin.percent_change(fx, fs)
a, b, c = st.columns([1, 1, 2])
with a:
    st.image(seen, caption=f"image X · logit {fx:.2f}", width="stretch")
with b:
    src = np.asarray(ex["source_image"])
    if src.ndim == 3:
        st.image(plots_mipin.display_image(src), caption=f"source signal S₀ · logit {fs:.2f}", width="stretch")
    else:
        page.chart(plots_mipin.signal_figure(src, "", "feature units", height=240))
        st.caption(f"source signal S₀ (channel mean) · logit {fs:.2f}")
with c:
    page.chart(plots_mipin.logits_bar(clf.labels, ex["logits"], ex["source_logits"], t))
st.caption(
    (f"Completeness for this image: |Φ(X) − Φ(S₀)| / |Φ(X)| = {change:.1f}% (the summand of APC, Eq. 10). " if change is not None else "")
    + ("S₀ is shown scaled to its own range." if src.ndim == 3 else "")
)

st.subheader("Layer by layer")
st.caption(
    "The inverted signal S_l at every layer, from the top down (channel mean for feature maps, one bar per "
    "neuron for dense layers). With forward ReLU it is zero wherever the layer's activation was zero."
)
names = list(ex.get("layer_names", []))
cols = st.columns(3)
for i, name in enumerate(names):
    arr = ex.get(f"layer.{i}")
    if arr is None:
        continue
    with cols[i % 3]:
        st.plotly_chart(plots_mipin.signal_figure(np.asarray(arr), name, unit if i == len(names) - 1 else "", height=220),
                        width="stretch", key=f"mipin.layer.{i}", config={"displayModeBar": False})

with st.expander("Reproduce from the command line"):
    sets = "".join(f" --set {k}={v}" for k, v in params.items())
    st.code(
        f"python -m explainers explain --model {pc.model_id} --image IMAGE --method mipin --target {t}{sets} --out mipin.npz\n"
        f"# fitted inverses: {m.get('fit')}",
        language="bash",
    )
