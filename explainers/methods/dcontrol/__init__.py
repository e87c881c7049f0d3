"""Distribution-guided local explanation: a mask predictor with a distribution controller
(paper 003, Section 3, Appendix A).

The mask of an image ``I`` for class ``c`` is (Eq. 4)::

    M = upsample(C(G(F(I))))

- ``F(I)``: feature maps of the frozen classifier at several depths, captured with forward
  hooks (registered in ``try/finally``, removed after every forward) — ``generator``;
- ``G``: the U-Net-style mask generator (Section 3.1) with the feature filter of Appendix A.1
  (Eq. 10); it outputs a coarse map ``M^g`` at 1/4 of the input (56×56 at 224, 16×16 at 64,
  7×7 at 28) — ``generator``;
- ``C``: the distribution controller (Section 3.2.2): instance normalisation of ``M^g`` to ``z``
  (mean 0, variance 1 over the coarse map of each image), then the Basic Transformer ``ReLU(z)``
  (Eq. 5) or the Customised Transformer ``sigmoid(η z)^h`` (Eq. 6, defaults η = 1.5, h = 2.5);
  :func:`controller_density` is the closed form of Eq. 7 — ``controller``;
- ``upsample``: bilinear to the input size.

The generator is trained with the classification loss only (Eq. 4) on the composite
``φ(I, M) = I·M + A·(1 − M)`` (Eq. 1, ``optimise``): ``python -m explainers fit --explainer
dcontrol --model ID --data SOURCE [--set transformer=basic]`` (``explainers/training/dcontrol.py``);
fits are found by ``store``. Without a fitted generator (an ImageNet model and no data, say) a free
coarse map is optimised for the one image under the same controller, with Eq. 4's loss plus a
deletion term (ours, ``delete``: the image with the region replaced should lose the class; Eq. 4
alone finds a sufficient region, and on an ImageNet network deleting it often left the class, issue 24).
Fine-tuning (Section 3.3, ``finetune``) gives ``mask_finetuned``. ``method`` ties them together
and registers ``dcontrol``; ``config`` holds its knobs.

Both maps are raw: ``mask`` in the controller's units (in (0, 1) for the customised transformer,
``[0, ∞)`` standard deviations for the basic one), ``mask_finetuned`` = mask × probability.
``extras`` keep the coarse ``z`` and the per-pixel ``v``, so a page can re-apply the controller
with other η, h (:func:`masks_from_z`) without running the generator or the classifier again:
the controller is monotone, so the ranking — and with it ``v`` — does not change.

Readings of the paper (where it is loose), chosen so that the method works (details in the
modules' docstrings):

- feature taps and networks without spatial feature maps: see ``generator``;
- feature filter (A.1): the class embedding ``C`` is pretrained first (maximise
  ``mean sigmoid(Xᵀ C_c)`` for the classifier's class, minimise it for the others; ``X`` the
  deepest feature map) and frozen while the rest of the generator is trained;
- ``c`` in Eq. 4 is the requested target when explaining. While training it comes from the
  classifier's outputs only ("no ground truth"): the predicted class for 3 images in 4
  (``p_predicted``) and otherwise one of its next two classes (``targets=top-k``, issue 18), so that the mask answers
  the class asked about; fits whose card has no ``targets`` were trained on the predicted class
  only and are loaded unchanged (see ``explainers/training/dcontrol.py``);
- Eq. 1 is a blend: the mask is clipped to [0, 1] inside the composite (matters for the basic
  transformer only; unclipped, its maximum drifts to the edges just outside the object);
- background A's blur σ = side/16 and noise s.d. 0.2: see ``optimise``;
- fine-tuning's ranking, ties and interpolation: see ``finetune``.
"""
from .config import GENERATORS, DControlConfig
from .controller import (
    IN_EPS,
    TRANSFORMERS,
    apply_controller,
    check_eta_h,
    coarse_size,
    controller_cdf,
    controller_density,
    instance_normalise,
    masks_from_z,
    upsample,
)
from .finetune import finetune, ranking
from .generator import (
    Bottleneck,
    FeatureFilter,
    MaskGenerator,
    capture,
    generator_image,
    generator_z,
    init_generator,
    probe_plan,
)
from .method import fitted_mask, run
from .optimise import backgrounds, composite, deletion_loss, optimise_z
from .store import FIT_NAME, choose_generator, fit_candidates, fit_filename, load_generator

__all__ = [
    "GENERATORS", "DControlConfig", "IN_EPS", "TRANSFORMERS", "apply_controller", "check_eta_h", "coarse_size",
    "controller_cdf", "controller_density", "instance_normalise", "masks_from_z", "upsample", "finetune", "ranking",
    "Bottleneck", "FeatureFilter", "MaskGenerator", "capture", "generator_image", "generator_z", "init_generator",
    "probe_plan", "fitted_mask", "run", "backgrounds", "composite", "deletion_loss", "optimise_z", "FIT_NAME", "choose_generator",
    "fit_candidates", "fit_filename", "load_generator",
]
