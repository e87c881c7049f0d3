"""Patch samplers for PMI / IG: in-fills for a K×K patch drawn given its 3K×3K neighbourhood.

The paper (Sec. III-A, Eq. 3) marginalises a patch x_r by Monte-Carlo:
p(y | x_\\r) ≈ 1/N Σ_n p(y | x_\\r, x̃_r^(n)) with x̃_r ~ p(X_r | x̂_\\r), where x̂_\\r is the
3K×3K patch centred on x_r with x_r itself hidden. Every sampler here has that signature; they
differ in the model of p(X_r | x̂_\\r):

- ``patchsampler``: the paper's PatchSampler (Appendix B.C), a conv net over the neighbourhood,
  narrower than the paper's and with one change beyond it: the patch's pixels are drawn in six
  interleaved groups, each given the ones drawn before, so one in-fill's pixels agree with each
  other (the paper draws every pixel independently, which speckles; see ``network``); one trunk
  forward per patch serves all N in-fills; drawn at temperature ``TEMPERATURE`` = 0.8 by default
  (ours, beyond the paper's T = 1: sharper mixture weights, narrower logistics; see
  ``PatchSamplerNet.sample``); fitted per dataset and per K by
  ``python -m explainers fit --explainer patchsampler --data SOURCE``;
- ``gaussian``: the conditional Gaussian of Zintgraf et al.'s PDA (the paper's "C.G." baseline):
  a Gaussian fitted on 3K×3K neighbourhoods of the same data, conditioned on the ring;
- ``blur``: a smooth in-fill from the ring (normalised Gaussian blur with the patch masked out);
- ``mean``: the ring's mean colour (the paper's "patch mean" replacement, computed from the
  neighbourhood so the patch's own pixels are not used);
- ``noise``: uniform U(0, 1) per pixel and channel (the paper's "noise");
- ``constant``: a grey level ``value`` (the paper's "black" is ``value=0``).

All work in pixel space [0, 1] on the classifier's device and draw randomness only from a
``torch.Generator``; the random numbers for all patches are drawn up front in a fixed order, so
results do not depend on how the work is batched.

Fitted samplers are per data and per K (the PatchSampler's geometry is 3K×3K in, K×K out; the
Gaussian's dimension is 3·(3K)²): ``patchsampler.safetensors`` / ``gaussian.safetensors`` for the
paper's K = 8, ``*_k{K}.safetensors`` for others (``--set K=4``), looked up in
``$EXPLAINERS_HOME/fitted/samplers/<data>/`` first, then in the committed
``assets/explainers/samplers/<data>/`` (K = 8 for ``shapes``, ``digits`` and ``photos``; K = 4 for ``shapes``). A
missing K is a one-line error naming the command that fits it; the other samplers work at any K.

Borders (the paper does not say): a neighbourhood that reaches past the image edge is zero-padded
and a mask marks its known pixels (inside the image, outside the hidden patch); every sampler reads
only those, at explanation time and, for the fitted ones, at fit time, so no pixel of the hidden
patch reaches a sampler through the padding.

The package: ``geometry`` (patch positions, neighbourhoods and their known pixels, pasting),
``network`` (the PatchSampler), ``gaussian`` (the conditional Gaussian), ``fits`` (finding and
loading fitted files), ``infill`` (the samplers behind one interface, ``make_sampler``, and the
seeded in-fill stream ``InFills``), ``evaluate`` (likelihood and roughness of a sampler on images).
"""
from .fits import COMMITTED, DEFAULT_K, data_key, find_fitted, fitted_name, load_patchsampler, sampler_key
from .gaussian import ConditionalGaussian, gaussian_from_moments, load_gaussian
from .geometry import hole_mask, known, neighbourhoods, pad_image, paste, patch_boxes, patch_positions
from .infill import (
    CHUNK,
    SAMPLERS,
    STOCHASTIC,
    TEMPERATURE,
    BlurSampler,
    ConstantSampler,
    GaussianSampler,
    InFills,
    MeanSampler,
    NoiseSampler,
    PatchSampler,
    Sampler,
    infills,
    make_sampler,
)
from .network import LEVELS, PatchSamplerNet, pixel_groups

__all__ = [
    "CHUNK", "COMMITTED", "DEFAULT_K", "LEVELS", "SAMPLERS", "STOCHASTIC", "TEMPERATURE", "BlurSampler", "ConditionalGaussian",
    "ConstantSampler", "GaussianSampler", "InFills", "MeanSampler", "NoiseSampler", "PatchSampler", "PatchSamplerNet",
    "Sampler", "find_fitted", "fitted_name", "gaussian_from_moments", "hole_mask", "infills", "known", "load_gaussian",
    "load_patchsampler", "make_sampler", "neighbourhoods", "pad_image", "paste", "patch_boxes", "patch_positions",
    "pixel_groups", "sampler_key", "data_key",
]
