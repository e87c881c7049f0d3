"""The teaching tour's content: each step's text, the papers' figures it mirrors, its classifier and
built-in image, and the settings its figures use. No Streamlit here; ``draw.py`` draws the steps.

Settings are chosen to keep each step within a few seconds on a 2-core CPU: PMI on an 8-pixel
patch grid (K = 8, stride 8: 64 patches), DSSR+ with 100 iterations, per-image VarSal with 60 steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PMI: dict[str, Any] = {"stride": 8}  # K = 8 and N = 8 (the paper's), 64 patches: ~500 forwards
SAMPLER_PMI: dict[str, Any] = {"stride": 8, "N": 4}  # five samplers in one step
SAMPLERS = [("patchsampler", {}), ("constant", {"value": 0.5}), ("blur", {}), ("mean", {}), ("noise", {})]
SAMPLER_TITLES = {"patchsampler": "PatchSampler", "constant": "grey", "blur": "blur", "mean": "mean", "noise": "noise"}
K_SWEEP = [(4, 4), (8, 4), (16, 8)]  # (K, stride), blur in-fills: the PatchSampler is fitted for K = 8 only
N_SWEEP = [1, 2, 8]
LAMBDA_STEPS = [0.3, 1.0, 3.0]  # × the paper's 10/(H·W)
DSSR: dict[str, Any] = {"iterations": 100}
ALPHAS = [0.0, 0.2, 0.4, 0.45]
VARSAL_PER_IMAGE: dict[str, Any] = {"mode": "per-image", "steps": 60}
REMOVAL_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
UNTAGGED_RING = "shapes-biased/test/5"  # the biased classifier's shortcut, seen from the other side
KNOBS = ["K (PMI)", "N (PMI)", "λ (DSSR+)", "α (VarSal)", "η and h (controller)"]


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    figures: str  # the papers' figures it mirrors
    text: str  # markdown, shown beside the live figures
    model: str
    sample: str  # a built-in sample (``explainers.data.samples.get_sample``), never the sidebar's upload


STEPS: list[Step] = [
    Step("evidence", "Evidence for and against", "PMI paper, Fig. 8 and 10", (
        "A PMI map has two signs: **red** patches support the class, **blue** ones oppose it (Eq. 4, in bits). "
        "In Fig. 8 the horns argue against *ox*, which explains why VGG19 said *hartebeest*. Here the second shape "
        "opposes the classifier's top class. Fig. 10 checks that the negative evidence is really negative: remove it "
        "and the prediction gets **more** confident; removing the supporting evidence instead (the control) makes it collapse."
    ), "shapes-resnet", "shapes-two/test/6"),
    Step("shortcut", "A shortcut the classifier learned", "PMI paper, Fig. 17 and 19", (
        "In Fig. 17 a person supports *swing* and in Fig. 19 the printed word supports *Band Aid*: the training data "
        "taught the classifier a correlate, and the PMI map shows it. **shapes-biased-resnet** was trained on shapes where "
        "every ring, and nothing else, carries an \"OK\" tag. On this *triangle* with the tag the PMI map for *ring* is red on "
        "the tag, and the tag opposes *triangle*. Below: what Grad-CAM, Integrated Gradients, MIP-IN and the distribution "
        "controller say about *ring* on the same image."
    ), "shapes-biased-resnet", "shapes-biased/test/2"),
    Step("two", "Two objects, two classes", "PMI paper, Fig. 5 and 20", (
        "A star and a cross; the classifier hesitates between the two. One PMI run gives every class's map (Fig. 5): "
        "each shape supports its own class, and — Fig. 20's point — a supporter of one class need not oppose the other. "
        "The difference map is log-odds in bits. Below, class sensitivity: the distribution controller's mask and MIP-IN's "
        "attribution for each of the two classes — a class-sensitive method must move with the class."
    ), "shapes-resnet", "shapes-two/test/3"),
    Step("unsure", "An unsure classifier", "PMI paper, Fig. 6 and 9", (
        "When no class dominates (Fig. 9a: *bassoon* 8%, *stethoscope* 7%, *horn* 7%), which class-specific map should one "
        "show? The **IG map** needs no class: IG = KL(p(Y|x) ‖ p(Y|x without the patch)) = the expected PMI (Eq. 5), "
        "in bits (Fig. 9b), from the same forwards. Here the classifier spreads its belief over a few classes; IG shows where "
        "it looked (Fig. 6), the PMI maps of the top two what each class makes of it."
    ), "shapes-resnet", "shapes/test/15"),
    Step("samplers", "Why the sampler matters", "PMI paper, Fig. 3, 4, 13 (and 14)", (
        "PMI marginalises a patch by averaging the prediction over in-fills drawn given its 3K×3K neighbourhood (Eq. 3); "
        "grey, mean or noise in-fills are out of distribution (Fig. 3, 14), so the classifier reacts to the artefact too. "
        "On ImageNet the PatchSampler gives cleaner maps (Fig. 4) and a lower deletion AUC (Fig. 13). On these small shapes "
        "it does not: over 100 shapes test images the five samplers' deletion AUCs lie within each other's 95% intervals "
        "(on digits the PatchSampler beats the Gaussian, noise and grey, and the patch mean beats it; README, PMI samplers). "
        "PMI values depend on the sampler: compare these maps by where they are red or blue, not by their bits."
    ), "shapes-resnet", "shapes/test/3"),
    Step("knobs", "The knobs", "PMI Fig. 22, 23 · DSSR+ Sec. 3.3 · VarSal Eq. 4, Fig. 9 · controller Fig. 2", (
        "**K** (Fig. 22): larger patches give smoother, more interpretable maps; **N** (Fig. 23): a few in-fills already "
        "give nearly the same map (the paper settles on N = 8). **λ** (DSSR+, Eq. 4) weighs the mask's size, in two stages: "
        "smaller while the preserved image's score is at most θ, larger afterwards (Sec. 3.3). **α** (VarSal) sets how strongly "
        "the soft-TV prior ties neighbours; **η, h** (controller, Fig. 2): η = 1.5 makes sigmoid(ηz) nearly uniform, h = 2.5 skews it right."
    ), "shapes-resnet", "shapes/test/3"),
    Step("uncertainty", "Uncertainty over the explanation", "VarSal paper, Fig. 7", (
        "VarSal treats the saliency map as a random variable and returns its posterior mean (the explanation) and standard "
        "deviation (the uncertainty over it). The paper finds the uncertainty on the object's border for clean images, and "
        "noisy standard-deviation maps for images corrupted as in ImageNet-C (brightness, motion blur at severity 5), while "
        "the mean still finds the object. Compare an easy image with a corrupted copy, and check whether the shapes' "
        "amortised encoder behaves as the paper's does: here its std is lowest on the object itself."
    ), "shapes-resnet", "shapes/test/3"),
]
