"""VarSal: variational saliency maps (paper 002, Section 3, Section 4.1, Appendix C and D).

The saliency map is a random variable ``s`` (h x w) with posterior
``p(s | x, y) ∝ p(y | x, s) p(s)`` (Eq. 1), approximated by a factorised Gaussian
``q(s | x) = N(vec s; μ(x), diag ν(x))`` (Section 3.3). Maximising the ELBO means minimising (Eq. 5)

    L = E_q E_k [ KL( p_M(x) || p_M(x ⊙ τ_k(s) + x̄ ⊙ (1 − τ_k(s))) ) ]  +  β KL( q || N(0, K_h ⊗ K_w) )
            (*) likelihood, Eq. 2–3                                          (**) soft-TV prior, Eq. 4, 6, 7

- τ_k is the top-k mask, made differentiable with the SOFT operator (``soft_topk.py``);
  k ~ U(hw/10, 9hw/10) (Section 4.1); x̄ is a baseline: blurred, noise or mean (notes 1–3), one
  drawn at random (per sample: the paper draws one per training iteration; per sample has the same
  expectation and lower variance).
- The prior KL is the closed form of Appendix D through the Kronecker factors (``softtv.py``),
  weighted by β = 1/(10hw) (Section 4.1).
- ``s = μ + √ν ⊙ z`` (reparameterisation); gradients reach μ and ν through the soft top-k mask and
  the classifier, which stays frozen.

Two ways to get (μ, ν) for an image:

- amortised: the encoder of Appendix C (``Encoder``), fitted per classifier by
  ``python -m explainers fit --explainer varsal --model ID --data SOURCE`` — explaining is then one
  forward pass (the paper's point);
- per-image: with no fitted encoder (e.g. a torchvision model), or when α, β or the baseline differ
  from the ones the encoder was trained with, μ and log ν are free parameters optimised with the
  same objective for this one image, at full resolution for inputs of 128 px a side or more (the
  paper's "no upsampling"; noisier, but on ImageNet photographs its top pixels matter more than a
  coarser grid's) and on 32 cells a side, upsampled, below (``config.FULL_RES_SIDE``).
  ``meta["amortised"]`` says which was used and why.

Maps (raw, at the classifier's input size): ``mean`` = μ and ``std`` = √ν, both in units of the
prior's standard deviation (the soft-TV prior has unit marginal variance). Larger μ = kept earlier
by the top-k = more important. Only the *order* of the saliency values matters to the likelihood;
the prior fixes their scale around 0.

The package: ``config`` (:class:`VarSalConfig`), ``encoder`` (Appendix C's network and loading a
fitted one), ``objective`` (Eq. 2–7, the negative ELBO of given posteriors and the per-image
optimisation), ``method`` (the choice between them and ``run``; registers ``varsal``), ``analysis``
(the std beyond what the mean predicts).
"""
from .analysis import std_beyond_mean
from .config import BASELINES, FIT_NAME, MODES, OBJECTIVE_FIELDS, TRAINING_FIELDS, VarSalConfig
from .encoder import PAPER_CHANNELS, Encoder, EncoderConfig, encode, fitted_path, load_encoder, upsample
from .method import run
from .objective import baselines, draw_k, draw_kinds, fit_one_image, grid_size, likelihood, negative_elbo

__all__ = [
    "BASELINES", "FIT_NAME", "MODES", "OBJECTIVE_FIELDS", "PAPER_CHANNELS", "TRAINING_FIELDS", "Encoder",
    "EncoderConfig", "VarSalConfig", "baselines", "draw_k", "draw_kinds", "encode", "fit_one_image", "fitted_path",
    "grid_size", "likelihood", "load_encoder", "negative_elbo", "run", "std_beyond_mean", "upsample",
]
