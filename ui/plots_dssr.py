"""Plotly figures and small text helpers for the DSSR+ page: the perturbed images with their class
probability, the optimisation history (loss and the two scores, λ's stage shaded) and the resolved
settings in words. Plain NumPy; the raw values are shown, never re-normalised."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# λ as a multiple of 1/(H·W): the paper's 10/224² (DSSR, DSSR+) and 1/224² (SSR, SDR) are 10 and 1
LAM_STEPS = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
LR_STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]


def paper_lam(variant: str) -> float:
    """The paper's λ·H·W for the variant (Section 3.4, Fig. 2)."""
    return 10.0 if variant in ("dssr+", "dssr") else 1.0


def image_figure(image: np.ndarray, title: str, height: int = 320) -> go.Figure:
    """An RGB uint8 (H, W, 3) image as a figure of the same size as the page's map figures."""
    fig = go.Figure(go.Image(z=image, hovertemplate="x=%{x}, y=%{y}<br>RGB %{z}<extra></extra>"))
    fig.update_yaxes(visible=False, scaleanchor="x")
    fig.update_xaxes(visible=False)
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def stages(lam: np.ndarray, small: float) -> list[tuple[int, int]]:
    """[start, end) iteration ranges where the small λ (the first stage) was used."""
    is_small = np.isclose(np.asarray(lam, dtype=np.float64), small, rtol=1e-5, atol=0.0)
    out, start = [], None
    for i, s in enumerate(is_small):
        if s and start is None:
            start = i
        elif not s and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(is_small)))
    return out


def reference_text(asked: str, used: dict) -> str:
    """The reference in words: ``auto → blur`` when the automatic choice was made, else its name."""
    kind = used.get("kind", asked)
    return f"auto → {kind}" if asked == "auto" and kind != "auto" else kind


def evidence_text(used: dict) -> str:
    """Why ``auto`` chose what it chose: each candidate's class evidence (KL of the classifier's
    prediction on it to uniform, nats; 0 = reads no class), or "" for a reference the user picked."""
    scores = used.get("scores")
    if not scores:
        return ""
    parts = " · ".join(f"{k} {v:.2f}" for k, v in scores.items())
    return f" (class evidence, KL to uniform on {used.get('probes', 'probe images')}: {parts} nats)"


def history_figure(extras: dict, resolved: dict, theta: float, label: str, height: int = 340) -> go.Figure:
    """Loss (left axis) and f(preserved), f(deleted) (right axis, probability) per iteration; the
    iterations that used the small λ (two-stage variants: f(preserved) ≤ ``theta``, the run's
    threshold θ·f(x) in probability) are shaded."""
    loss = np.asarray(extras["loss"], dtype=np.float64)
    it = np.arange(1, len(loss) + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=it, y=loss, name="loss", line=dict(color="#333333", width=2)))
    fig.add_trace(go.Scatter(x=it, y=extras["preserved_score"], name=f"f(preserved) · {label}", yaxis="y2",
                             line=dict(color="#54a24b")))
    fig.add_trace(go.Scatter(x=it, y=extras["deleted_score"], name=f"f(deleted) · {label}", yaxis="y2",
                             line=dict(color="#e45756")))
    if resolved.get("two_stage"):
        fig.add_hline(y=theta, yref="y2", line=dict(color="#54a24b", dash="dot", width=1),
                      annotation_text=f"θ·f(x) = {theta:.3g}", annotation_position="bottom right")
        for a, b in stages(extras["lam"], resolved["lam_small"]) if resolved["lam_small"] < resolved["lam"] else []:
            fig.add_vrect(x0=a + 0.5, x1=b + 0.5, fillcolor="#f2cf5b", opacity=0.25, line_width=0,
                          annotation_text="small λ" if b - a > 0.08 * len(loss) else "", annotation_position="top left")
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=30, b=0), hovermode="x unified",
        title=dict(text="Optimisation (shaded: the small-λ stage)" if resolved.get("two_stage") else "Optimisation (constant λ)",
                   font=dict(size=14)),
        xaxis=dict(title="iteration"),
        yaxis=dict(title="loss (without the constant λ·#windows)"),
        yaxis2=dict(title="probability", overlaying="y", side="right", range=[0, 1.02], showgrid=False),
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"),
    )
    return fig


def resolved_text(rs: dict, size: tuple[int, int], variant: str) -> str:
    """The settings the run used (the paper's 224×224 values scaled to this input), in one line."""
    h, w = size
    lam = f"λ = {rs['lam'] * h * w:.3g}/(H·W) = {rs['lam']:.3g}"
    if rs.get("two_stage"):
        lam += f" (small λ = {rs['lam_small']:.3g} while f(preserved) ≤ θ·f(x))"
    pools = f"max-pool k₁ = {rs['k1']}, s₁ = {rs['s1']}, p₁ = {rs['p1']}"
    if variant == "dssr+":
        pools += f" · avg-pool k₂ = {rs['k2']}, s₂ = {rs['s2']}, p₂ = {rs['p2']} · m is {rs['mask_size'][0]}×{rs['mask_size'][1]}"
    else:
        pools = "regulariser ‖m‖₁"
    return f"Resolved for {h}×{w} (×{rs['scale']:g} of the paper's 224): {lam} · {pools} · m starts at {rs['init']:g}"
