"""VarSal: the posterior over saliency maps — its mean (the explanation) and its standard deviation
(the uncertainty over the explanation), as in the paper's Fig. 7, posterior samples (Fig. 6) and the
soft-TV prior."""
import streamlit as st

from explainers.methods import softtv
from explainers.methods.varsal import BASELINES, VarSalConfig, grid_size, std_beyond_mean
from ui import page, plots, plots_varsal, widgets
from ui.widgets import help_for, kept

st.title("VarSal · variational saliency")
st.caption(
    "The saliency map is a random variable. Its likelihood (Eq. 2–3) is how close the prediction stays "
    "when only the top-k pixels of a sampled map are kept and the rest replaced by a baseline "
    "(k drawn between 10% and 90% of the pixels); its prior is the soft-TV Gaussian N(0, K_h ⊗ K_w) "
    "that makes neighbouring pixels agree (Eq. 4, 6). VarSal explains the whole predictive "
    "distribution, not one class. Units: standard deviations of the prior."
)
pc = page.prologue()
clf, seen = pc.clf, pc.seen

defaults = VarSalConfig()
BETA_STEPS = [0.0, 0.01, 0.03, None, 0.3, 1.0, 3.0, 10.0]  # × 1/(h·w); None: the config's automatic 1/(10·h·w)
BASELINE_CHOICES = ("random",) + BASELINES
MODES = ["auto", "per-image"]
c1, c2, c3, c4 = st.columns(4)
alpha = widgets.knob(VarSalConfig, "alpha", "varsal.alpha", where=c1, label="α (prior correlation)")
beta_x = c2.select_slider("β × h·w (prior weight)", BETA_STEPS, **kept("varsal.beta", defaults.beta, lambda v: v in BETA_STEPS),
                          format_func=lambda v: "0.1 (auto)" if v is None else f"{v:g}",
                          help=f"{help_for(VarSalConfig, 'beta')}; shown × h·w, so auto is 0.1")
baseline = c3.selectbox("baseline", BASELINE_CHOICES, **kept("varsal.baseline", defaults.baseline, lambda v: v in BASELINE_CHOICES),
                        help=help_for(VarSalConfig, "baseline"))
mode = c4.radio("mode", MODES, horizontal=True, **kept("varsal.mode", defaults.mode, lambda v: v in MODES),
                help=help_for(VarSalConfig, "mode"))

params: dict = {}
if alpha != defaults.alpha:
    params["alpha"] = alpha
if beta_x is not None:
    gh, gw = grid_size(clf.input_size, defaults.grid)
    params["beta"] = beta_x / (gh * gw)
if baseline != defaults.baseline:
    params["baseline"] = baseline
if mode != defaults.mode:
    params["mode"] = mode
params = {**widgets.lighter(pc, ["varsal"])["varsal"], **params}  # fewer per-image steps for 224 px on a CPU

res = page.explain_or_stop(pc, "varsal", params, pc.top[0][0], "VarSal", slot="varsal")  # the maps do not depend on the class

m = res.meta
if m["amortised"]:
    st.success(f"**Amortised**: one forward pass of the encoder fitted for {m['model']} "
               f"(trained with α = 0.4, β = 1/(10·h·w), random baselines) · {m['seconds'] * 1e3:.0f} ms", icon=":material/bolt:")
else:
    why = m["how"]
    st.info(f"**{why[0].upper() + why[1:]}**: μ and log ν optimised for this image alone with the same objective "
            f"({m['steps']} steps on a {m['grid'][0]}×{m['grid'][1]} grid, {m['seconds']:.1f} s). "
            "The amortised encoder was trained with fixed α, β and baseline, so other settings need this.",
            icon=":material/tune:")

page.show_maps(seen, [(res.maps["mean"], "signed", "prior s.d.", "posterior mean μ (the explanation)"),
                      (res.maps["std"], "positive", "prior s.d.", "posterior std √ν (the uncertainty)")], keys="varsal.")
st.caption(
    f"mean: {res.maps['mean'].min():.2f} … {res.maps['mean'].max():.2f} · std: {res.maps['std'].min():.2f} … "
    f"{res.maps['std'].max():.2f} · larger μ = kept earlier by the top-k = more important. "
    "The paper reads the std as uncertainty on the object's borders (Fig. 7); on 100 shapes test images the "
    "encoder's std is lowest inside the object, a little higher on its border and highest on the background, and the "
    "border is the most uncertain region in none of them (`scripts/varsal_uncertainty.py`)."
)

st.subheader("What the std adds to the mean")
resid, r2 = std_beyond_mean(res.maps["mean"], res.maps["std"])
left, right = st.columns(2)
page.chart(plots.map_figure(seen, resid, "signed", "prior s.d.", "std beyond the mean (residual of the fit)"),
           key="varsal.residual", where=left)
page.chart(plots_varsal.std_vs_mean_figure(res.maps["mean"], res.maps["std"], resid, r2), key="varsal.std_vs_mean", where=right)
st.caption(
    f"The mean predicts {r2:.0%} of the std's variation on this image (a quadratic fit of √ν on μ); the residual (red: "
    "more uncertain than the pixel's mean predicts) is all the std adds. Measured on the shapes models, the encoders' "
    "std is mostly the mean upside down (ρ(std, mean) ≈ −0.84, R² ≈ 0.9), while a long per-image fit of the same "
    "objective stays closer to the prior and less tied to the mean (ρ −0.27, R² 0.59 on 2 images after 2,000 steps, "
    "with a better ELBO): much of that inversion is the encoder's, not the posterior's."
)

samples = res.extras.get("samples")
if samples is not None and len(samples):
    st.subheader("Posterior samples")
    st.caption("Maps drawn from q(s|x) = N(μ, diag ν), as the paper's Fig. 6: the same object, plus pixel noise where ν is large.")
    cols = st.columns(len(samples))
    for i, (col, s) in enumerate(zip(cols, samples)):
        page.chart(plots.map_figure(None, s, "signed", "prior s.d.", f"sample {i + 1}", height=220, scale=plots.shared_peak(list(samples))),
                   key=f"varsal.sample.{i}", where=col)

st.subheader("The soft-TV prior")
st.caption(
    "Σ = K_h ⊗ K_w with K tridiagonal (1 on the diagonal, α beside it): each pixel is correlated α with its "
    "4-neighbours and α² with its diagonal neighbours, nothing beyond (Eq. 4, Fig. 9). Samples get smoother as α grows. "
    "The KL to this prior is computed through the small factors, never the (h·w)² matrix (Eq. 7)."
)
h, w = clf.input_size
pic = softtv.prior_picture(h, w, alpha, n_samples=3, seed=0)
page.chart(plots_varsal.prior_figure(pic, alpha))
