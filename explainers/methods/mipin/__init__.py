"""MIP-IN: the mutual-information-preserving inverse network (paper 004, Sections 3–6, Algorithm 1).

The network's output is inverted layer by layer, top-down. For a target class ``c`` the signal
starts as the logit, ``S_L = Y_c`` (Algorithm 1, line 1), and each layer's inverse ``g`` is
*learned* on data so that ``S_l = g(S_{l+1})`` reconstructs the layer's input ``X_l`` in the
least-squares sense (Eq. 5):

- dense layer: ``g(S) = W S + b`` in closed form, ridge-regularised (Eq. 6),
  ``W = Cov(X, S) (Cov(S, S) + λ I)^-1``, ``b = E X − W E S``;
- convolution: a transposed convolution with the forward layer's shape (stride, padding) whose
  kernel and bias are fitted by least squares (Eq. 7) — solved through the normal equations over
  the "transposed patches" of ``S``, not by SGD;
- max-pooling: the signal is put back where the forward maximum was (recorded switches, Eq. 8);
- global average pooling (ResNet-style heads, not in the paper's list): the inverse keeps the
  pooling's connectivity, one weight per (channel, position), with the same λ.

Forward ReLU (Section 4.2, Eq. 9): wherever the forward activation ``X_l`` of a ReLU layer is 0,
the inverted signal is set to 0 as well. It is applied while *fitting* (Algorithm 1, lines 14–15:
the signals used to fit the next inverse down are the gated ones) and while explaining.

Readings of the paper (where it is loose), chosen so that the method works:

- Eq. 6 is solved with covariances (sums divided by N), so that λ = 0.001 means the same thing
  whatever the number of samples (``lstsq``).
- Convolutions are fitted in closed form (the paper trains them for E = 20 epochs). The patches of
  ``S`` are linearly dependent, so the normal equations get a ridge term too: ``conv_lam`` (a
  fitting option, default 0.1, chosen for the completeness of the source signal, see
  ``explainers/training/mipin.py``).
- Which ``X_l`` are gated by the forward ReLU, and which part of a network is inverted: ``plan``.
- Algorithm 1 fits one inverse network per target class on *all* N samples (the logit of class c
  of every sample is S_L); explaining class c uses class c's network.
- Attribution (Algorithm 1 lines 1, 12–13, 16; Section 4.3): ``A`` starts as ``Y_c`` and is
  multiplied, layer by layer, by the linear weight of each inverse (biases ignored), then gated by
  the forward ReLU: ``A_0 = G_1 W_1 G_2 W_2 … G_{L-1} W_L · Y_c`` (``G`` = the 0/1 gates,
  max-pooling switches are linear too). ``A_0`` is the bias-free part of the source signal ``S_0``:
  it is linear in the logit and in the input neurons' space. The map is signed (positive and
  negative evidence, Fig. 5); the paper applies a ReLU for its ImageNet figures, the pages show
  the positive part where that is what they compare.

The package's modules, along the method's seams: ``config`` (:class:`MIPINConfig`), ``plan``
(which layers are inverted, the forward pass layer by layer), ``lstsq`` (streamed moments and
the closed-form solutions), ``inverse`` (Algorithm 1), ``store`` (fitted inverses on disk: pack,
load, solve at a λ, choose), ``method`` (explaining, and the registration of ``mipin``),
``completeness`` (APC and positive APC, Eq. 10–11). Importing the package registers the method.
"""
from .completeness import apc, completeness, positive_apc
from .config import MIPINConfig
from .inverse import inverse_step, invert
from .lstsq import Moments, conv_padded, conv_patches, eig_stats, ridge_inverse, solve_conv, solve_dense, solve_diag
from .method import explain_batch, run, source_image
from .plan import SUPPORTED, Plan, Record, Stage, forward_from_x0, forward_record, get_plan, net_digest
from .store import (
    FIT_NAME,
    FIT_VERSION,
    Fit,
    choose_fit,
    clear_fit_cache,
    fit_command,
    fitted_paths,
    load_fit,
    pack,
    solve_stage,
    solved_params,
    unpack,
)

__all__ = [
    "apc", "completeness", "positive_apc", "MIPINConfig", "inverse_step", "invert", "Moments", "conv_padded",
    "conv_patches", "eig_stats", "ridge_inverse", "solve_conv", "solve_dense", "solve_diag", "explain_batch", "run",
    "source_image", "SUPPORTED", "Plan", "Record", "Stage", "forward_from_x0", "forward_record", "get_plan",
    "net_digest", "FIT_NAME", "FIT_VERSION", "Fit", "choose_fit", "clear_fit_cache", "fit_command", "fitted_paths",
    "load_fit", "pack", "solve_stage", "solved_params", "unpack",
]
