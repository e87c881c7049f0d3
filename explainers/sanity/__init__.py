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

Every step's map is made the same way as the original's (``same_way``): per-image methods with the
same parameters on every network; a method whose fitted part is in use is refitted on every
network, the original included (``network_fits``): MIP-IN always (its map *is* a fit to the
network: 2,000 images, the target class, seed ``seed``), VarSal's encoder and the distribution
controller's generator with a short fit (:data:`NETWORK_FITS` says how short) unless the method's
parameters ask for their per-image mode (VarSal ``mode=per-image``, the controller's
``generator=optimise``), which then runs on every network. The committed fits are never used by a
check: comparing the committed encoder's map with a per-image map of the randomised network
measured the mode switch (ρ 0.45 on the unchanged network, issue 19). Fits go to a temporary
directory that is removed when the check ends; nothing is written to the committed fits or the
user's cache.

An amortised map depends on the classifier only through its fit: VarSal's encoder never calls the
classifier (its committed map cannot change when the weights are randomised), the controller's
generator reads the classifier's features, MIP-IN's inverses are gated by the forward pass.

Beside each randomised figure the check reports the *reference*: the original map against a
second run on the unchanged network made the same way (seed + 1 for a stochastic per-image
method, a second fit for a fitted part: MIP-IN on the next 2,000 images, the encoder and generator
with seed + 1). A randomised ρ is a change made by the randomisation only where it is clearly
below the reference.

The package: ``randomise`` (layers and randomised copies), ``network_fits`` (on-the-spot fits),
``same_way`` (maps made the same way on any network, the reference, the evaluation's
:class:`FullRandomisation`), ``similarity``, ``checks`` (the checks).
"""
from .checks import SanityResult, cascading_randomisation, label_sensitivity
from .network_fits import FIT_SAMPLES, NETWORK_FITS, NetworkFit, NetworkFits, committed_options, needs_network_fit
from .randomise import NORMS, fully_randomised, parameter_layers, randomised_copies, reinitialise
from .same_way import FullRandomisation, SameWay, seed_of
from .similarity import similarity

__all__ = [
    "FIT_SAMPLES", "FullRandomisation", "NETWORK_FITS", "NORMS", "NetworkFit", "NetworkFits", "SameWay", "SanityResult",
    "cascading_randomisation", "committed_options", "fully_randomised", "label_sensitivity", "needs_network_fit",
    "parameter_layers", "randomised_copies", "reinitialise", "seed_of", "similarity",
]
