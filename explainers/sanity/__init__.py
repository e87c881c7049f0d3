"""Sanity checks for saliency maps (Adebayo et al. 2018), as the PMI (000, Fig. 15 / 24) and
VarSal (002, Sec. 4.3, Fig. 4) papers run them.

- :func:`cascading_randomisation` — the model-parameter test: the classifier's layers are
  re-initialised one more at a time *from the top (logits) down*, and the map of each
  randomised network is compared with the original map by Spearman rank correlation
  (``scipy.stats.spearmanr``) and SSIM (``skimage.metrics.structural_similarity``). A method
  that explains the model must lose its map as the model loses its weights (both measures
  falling towards 0); one that stays near 1 (Guided Backprop, say) only redraws the image.
- :func:`label_sensitivity` — the map for another class against the target's map (MIP-IN's
  Sec. 6.4 test, with its mean l2 distance): a class-sensitive method gives a different map.

The randomisation works on a *copy* of the network (``copy.deepcopy``) wrapped in its own
:class:`~explainers.classifiers.base.Classifier` with a new id; the shared, cached model is never
touched. A "layer" is a module with its own parameters (convolution, linear, ...), found in
forward order by running the copy once with hooks; a normalisation layer (BatchNorm and the
like) goes with the layer it follows. Re-initialisation draws from one seeded
``torch.Generator``: Kaiming-normal weights (fan-in), biases uniform in ±1/√fan-in, a
normalisation layer reset to the identity (weight 1, bias 0, running mean 0, variance 1).

Amortised methods (a fitted encoder, generator or inverse) see a new classifier id, so they use
their per-image mode (VarSal, the distribution controller) or report that the randomised network
has no fit; each step's error is raised as an ``ExplainerError`` naming the step.

Methods with no per-image mode, whose map *is* a fit to the network (MIP-IN: Algorithm 1 fits one
ridge-regression inverse per target class on data samples), are listed in :data:`NETWORK_FITS`.
For them the check fits the method on the spot on every network of the cascade — for the target
class only, on the first ``fit_samples`` images of the classifier's own dataset (train split,
``fit_data`` to use another), seeded with ``seed`` — through the method's registered fitter
(``python -m explainers fit``'s code path), into a temporary directory that is removed when the
check ends (:class:`NetworkFits`; nothing is written to the committed fits or the user's cache).
The *original* map is made with a fit made the same way on the original network, not with the
classifier's committed fit (6,000 images for the embedded models): the only thing that changes
along the cascade is then the network's weights, not the fit's sample size. Such a check is
slower by one fit per step (MIP-IN on shapes-resnet, 300 images, one CPU thread: about 0.4 s a
step, 5 s for the whole 10-layer cascade).

The package: ``randomise`` (layers and randomised copies), ``network_fits`` (on-the-spot fits),
``checks`` (the checks and :func:`similarity`).
"""
from .checks import SanityResult, cascading_randomisation, label_sensitivity, similarity
from .network_fits import FIT_SAMPLES, NETWORK_FITS, NetworkFit, NetworkFits, needs_network_fit
from .randomise import NORMS, fully_randomised, parameter_layers, randomised_copies, reinitialise

__all__ = [
    "FIT_SAMPLES", "NETWORK_FITS", "NORMS", "NetworkFit", "NetworkFits", "SanityResult", "cascading_randomisation",
    "fully_randomised", "label_sensitivity", "needs_network_fit", "parameter_layers", "randomised_copies",
    "reinitialise", "similarity",
]
