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
- global average pooling (ResNet-style heads, not in the paper's list): the signal is put back in
  proportion to the forward activations, ``g(S)[c, i, j] = S[c] · X[c, i, j] / mean X[c]`` — read
  off the forward pass like max-pooling's switches, and exact where the pooling's input is
  non-negative (a fitted inverse cannot place anything: the pooled vector has no position).

Forward ReLU (Section 4.2, Eq. 9): wherever the forward activation ``X_l`` of a ReLU layer is 0,
the inverted signal is set to 0 as well. It is applied while *fitting* (Algorithm 1, lines 14–15:
the signals used to fit the next inverse down are the gated ones) and while explaining.

Readings of the paper (where it is loose), chosen so that the method works:

- Eq. 6 is solved with covariances (sums divided by N), so that λ = 0.001 means the same thing
  whatever the number of samples (``lstsq``).
- Convolutions are fitted in closed form. The paper trains them for E = 20 epochs of SGD, which
  converges towards the unregularised least-squares solution (digits-cnn's second convolution:
  held-out R² 0.805 after 20 epochs of Adam, 0.806 in closed form at the best ridge). The
  patches of ``S`` are linearly dependent, so the normal equations get a ridge term (``conv_lam``,
  a fitting option).
  Its default, 0.1, is not the value that reconstructs each layer best on held-out images
  (1e-5–1e-3, 0.04–0.14 of R² more): those inverses give a less complete source signal and a
  less faithful map (measured, ``explainers/training/mipin.py``).
- Which ``X_l`` are gated by the forward ReLU, and which part of a network is inverted: ``plan``.
- Algorithm 1 fits one inverse network per target class on *all* N samples (the logit of class c
  of every sample is S_L); explaining class c uses class c's network.
- Attribution (Algorithm 1 lines 1, 12–13, 16; Section 4.3): ``A`` starts as ``Y_c`` and is
  multiplied, layer by layer, by the linear weight of each inverse (biases ignored), then gated by
  the forward ReLU: ``A_0 = G_1 W_1 G_2 W_2 … G_{L-1} W_L · Y_c`` (``G`` = the 0/1 gates,
  pooling switches and shares are linear too). ``A_0`` is the bias-free part of the source
  signal ``S_0``: linear in the logit, in the space of ``X_0``.
- The map (``method``): when the whole network is inverted, ``A_0`` is a part of a
  *reconstruction of the input pixels*, so its sign says in which direction the class evidence
  moves a pixel's value in each colour channel, not whether the pixel speaks for the class (the
  map summed over R, G, B was as faithful as its own reversal on shapes-vgg and digits-mlp,
  ``scripts/mipin_faithfulness.py``). The map is the length of ``A_0`` over the input channels:
  how much of the class's source signal sits at each pixel. It is faithful (M_F 89–95 against
  11–23 for its reversal) but less class-selective than the signed sum: the maps for an image's
  top-1 and top-2 classes correlate (Spearman 0.74–0.80 against −0.12–0.20), both finding the
  object. When only the classifier module is inverted, ``X_0`` is non-negative features, whose
  reconstruction's sign does mean more or less of a feature: the map is the signed channel mean,
  resized bilinearly to the image, like Grad-CAM (Section 6.1; the paper applies a ReLU there,
  the pages show the positive part where that is what they compare; a ReLU before the channel
  mean would make the map nearly class-blind, top-1 vs top-2 Spearman 0.84).

The package's modules, along the method's seams: ``config`` (:class:`MIPINConfig`), ``plan``
(which layers are inverted, the forward pass layer by layer), ``lstsq`` (streamed moments and
the closed-form solutions), ``inverse`` (Algorithm 1), ``store`` (fitted inverses on disk: pack,
load, solve at a λ, choose), ``method`` (explaining, and the registration of ``mipin``),
``completeness`` (APC and positive APC, Eq. 10–11), ``quality`` (the inverses' R²). Importing the
package registers the method.
"""
from .completeness import apc, completeness, positive_apc
from .config import MIPINConfig
from .inverse import inverse_step, invert
from .lstsq import (
    Moments, conv_kernel, conv_padded, conv_patches, eig_stats, explained, ridge_inverse, solve_conv, solve_dense, solve_diag,
)
from .method import explain_batch, run, source_image
from .quality import CONV_LAM_FALLBACK, CONV_LAMS, ConvMoments, Entries, Residuals, pooled_r2, residual_r2, solve_layer, summary
from .plan import SUPPORTED, Plan, Record, Stage, forward_from_x0, forward_record, get_plan, net_digest
from .store import (
    FIT_NAME,
    FIT_VERSION,
    Fit,
    choose_fit,
    clear_fit_cache,
    data_free_eligible,
    data_free_params,
    fit_command,
    fitted_paths,
    load_fit,
    pack,
    solve_stage,
    solved_params,
    unpack,
)

__all__ = [
    "apc", "completeness", "positive_apc", "MIPINConfig", "inverse_step", "invert", "Moments", "conv_kernel", "conv_padded",
    "conv_patches", "eig_stats", "explained", "ridge_inverse", "solve_conv", "solve_dense", "solve_diag", "explain_batch", "run",
    "source_image", "SUPPORTED", "Plan", "Record", "Stage", "forward_from_x0", "forward_record", "get_plan",
    "net_digest", "FIT_NAME", "FIT_VERSION", "Fit", "choose_fit", "clear_fit_cache", "data_free_eligible", "data_free_params", "fit_command", "fitted_paths",
    "load_fit", "pack", "solve_stage", "solved_params", "unpack", "CONV_LAM_FALLBACK", "CONV_LAMS", "ConvMoments", "Entries",
    "Residuals", "pooled_r2", "residual_r2", "solve_layer", "summary",
]
