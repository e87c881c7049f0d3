"""The PatchSampler network: p_φ(X_r | x̂_\\r) for a K×K patch given its 3K×3K neighbourhood.

The paper (Appendix B.C) predicts an independent 256-way categorical for every pixel and channel
of the patch (conv9-256, conv9-256, maxpool2, crop, 4 × conv8-256, conv8-768). Drawn independently,
pixels of one in-fill do not agree with each other: in-fills speckle (the first fits, independent
categoricals: neighbouring pixels differed by 18.8 grey levels against 6.6 in real patches). We
keep the paper's conv stack in outline and go beyond it in two places, a linear path and the
output:

- **Trunk** (once per patch), reads only the known pixels: input (2x − 1)·known and the ``known``
  mask (``geometry.known``: 0 on the hidden patch and outside the image); a conv of kernel
  2⌊K/4⌋ + 1 (5 at K = 8; the paper's is 9) at full resolution, two 3×3 convs after a 2×
  max-pool and one after a second pool (a receptive field over the whole 3K×3K neighbourhood, as
  the paper's), a global-average context vector, a linear map from the whole masked neighbourhood
  to every pixel of the patch (the form of the conditional Gaussian's mean, which places shape
  edges well), and two 3×3 convs on the K×K centre (with a 2-pixel margin) over all of these.
  Width ``width`` (64 in the committed fits) instead of the paper's 256, so that a fit takes
  under half an hour on a shared 2-core CPU (2000 steps of 32 crops; the committed shapes fit
  was continued for 3500 more with the fitter's ``init``, its card says how).
- **Output: coherent in-fills** (beyond the paper; ``coherent=False`` is the paper's independent
  pixels, kept as an ablation). The patch's pixels are drawn in six interleaved groups, coarse to
  fine (``pixel_groups``: the centre, the rest of every 4th pixel, the centres between them, the
  rest of the even grid, the odd diagonal, the remaining half); a light head (two 3×3 convs,
  ``head`` wide) gives each group's pixels given the trunk and the pixels already drawn. Why: an
  in-fill is one joint draw, and independent pixels cannot agree on an edge or a texture phase,
  which is the speckle; with the groups each pixel sees its drawn neighbours, and the likelihood
  is still exact (the product of the six groups' terms). One trunk forward per patch serves all N
  in-fills; the head runs six times per in-fill. The measurements (held-out NLL, roughness against
  real patches, coherent vs independent at equal training) are in the README's PMI sampler tables
  (``scripts/sampler_table.py``, ``python -m explainers sampler-nll``).
- **Per-pixel distribution**: a mixture of ``mixtures`` discretised logistics over the 256 levels
  with the colour channels coupled linearly (PixelCNN++, Salimans et al. 2017) instead of three
  independent 256-way softmaxes: 10 numbers per mixture component instead of 768, smooth over
  neighbouring levels, exact probabilities of 8-bit values (the end levels take the tails).
- ``channels`` = 1 for grey-level data (digits): one channel, copied to R, G and B.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import hole_mask

LEVELS = 256  # grey levels per channel (8-bit pixels)
HALF_BIN = 1.0 / (LEVELS - 1)  # half the width of one level on the [-1, 1] scale


def pixel_groups(K: int, coherent: bool = True) -> torch.Tensor:
    """(K, K) long: the group (0 … 5) of every pixel, in drawing order, coarse to fine: the pixel
    4 in from the corner of every 8×8 block (the centre at K = 8), the rest of every 4th pixel,
    the centres between them, the rest of the even grid, the odd diagonal, the remaining half.
    No two pixels of a group are side by side, and every later pixel has drawn ones next to it.
    ``coherent=False``: one group, every pixel drawn independently (the paper's model; an ablation)."""
    if not coherent:
        return torch.zeros(K, K, dtype=torch.long)
    i = torch.arange(K)[:, None].expand(K, K)
    j = torch.arange(K)[None, :].expand(K, K)
    g = torch.full((K, K), 5, dtype=torch.long)
    g[(i % 2 == 1) & (j % 2 == 1)] = 4
    g[(i % 2 == 0) & (j % 2 == 0)] = 3
    g[(i % 4 == 2) & (j % 4 == 2)] = 2
    g[(i % 4 == 0) & (j % 4 == 0)] = 1
    g[(i % 8 == 4) & (j % 8 == 4)] = 0
    return g


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class PatchSamplerNet(nn.Module):
    """Trunk (once per patch) + autoregressive head over six pixel groups; see the module docstring."""

    def __init__(self, K: int, channels: int = 3, width: int = 64, head: int = 64, mixtures: int = 4, coherent: bool = True):
        super().__init__()
        self.K, self.channels, self.width, self.head_width, self.mixtures = K, channels, width, head, mixtures
        W, C = width, channels
        k1 = min(2 * (K // 4) + 1, 9)
        self.stem = nn.Conv2d(C + 1, W, k1, padding=k1 // 2)
        self.down1 = nn.ModuleList([nn.Conv2d(W, W, 3, padding=1), nn.Conv2d(W, W, 3, padding=1)])
        self.down2 = nn.Conv2d(W, W, 3, padding=1)
        self.context = nn.Linear(W, W)
        self.linear = nn.Linear((C + 1) * (3 * K) ** 2, C * K * K)  # PDA's linear conditional mean, learnt
        self.fuse = nn.Conv2d(4 * W + C, W, 1)
        self.dec1 = nn.Conv2d(W, W, 3)  # valid: the 2-pixel margin is used up here and below
        self.dec2 = nn.Conv2d(W, W, 3)
        self.proj = nn.Conv2d(W, head, 1)
        self.canvas = nn.Conv2d(C + 2, head, 3, padding=1)
        self.head1 = nn.Conv2d(head, head, 3, padding=1)
        self.coef = 3 if C == 3 else 0
        self.out = nn.Conv2d(head, mixtures * (1 + 2 * C + self.coef), 1)
        self.coherent = bool(coherent)
        groups = pixel_groups(K, self.coherent)
        self.group_ids = torch.unique(groups).tolist()  # the non-empty groups, in drawing order
        self.register_buffer("groups", groups, persistent=False)
        self.register_buffer("mask", hole_mask(K), persistent=False)

    def to_input(self, neigh01: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3K, 3K) RGB in [0, 1] -> (B, C, 3K, 3K) in the sampler's channels."""
        return neigh01.mean(dim=1, keepdim=True) if self.channels == 1 else neigh01

    # ---------------------------------------------------------------------------- trunk
    def trunk(self, neigh01: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """Neighbourhoods (B, C, 3K, 3K) in [0, 1] and known masks (B, 1, 3K, 3K) (default: the
        whole ring) -> features (B, head, K, K). Only known pixels are read."""
        B, K = neigh01.shape[0], self.K
        m = self.mask.to(neigh01.dtype).expand(B, 1, -1, -1) if known is None else known.to(neigh01.dtype)
        x = torch.cat([(neigh01 * 2 - 1) * m, m], dim=1)
        s = _lrelu(self.stem(x))
        d1 = F.max_pool2d(s, 2)
        for conv in self.down1:
            d1 = _lrelu(conv(d1))
        d2 = _lrelu(self.down2(F.max_pool2d(d1, 2))) if min(d1.shape[-2:]) >= 2 else d1
        g = _lrelu(self.context(d2.mean(dim=(2, 3))))
        size = s.shape[-2:]
        feats = torch.cat([s, F.interpolate(d1, size=size), F.interpolate(d2, size=size),
                           g[:, :, None, None].expand(-1, -1, *size)], dim=1)
        feats = F.pad(feats, (2, 2, 2, 2))[:, :, K : 2 * K + 4, K : 2 * K + 4]  # centre + 2-px margin
        lin = F.pad(self.linear(x.flatten(1)).view(B, self.channels, K, K), (2, 2, 2, 2))
        feats = torch.cat([feats, lin], dim=1)
        t = _lrelu(self.dec2(_lrelu(self.dec1(_lrelu(self.fuse(feats))))))
        return self.proj(t)

    # ---------------------------------------------------------------------------- head
    def params(self, t: torch.Tensor, canvas: torch.Tensor, filled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mixture parameters (B, M·(1 + 2C + coef), K, K) given trunk features, the pixels drawn so
        far (canvas in [-1, 1], 0 where not drawn), which are drawn and which are drawn now."""
        h = _lrelu(t + self.canvas(torch.cat([canvas * filled, filled, target], dim=1)))
        return self.out(_lrelu(self.head1(h)))

    def _split(self, p: torch.Tensor):
        M, C = self.mixtures, self.channels
        logit_pi = p[:, :M]
        mu = p[:, M : M + M * C].unflatten(1, (M, C))
        log_s = p[:, M + M * C : M + 2 * M * C].unflatten(1, (M, C)).clamp(min=-7.0)
        coef = torch.tanh(p[:, M + 2 * M * C :].unflatten(1, (M, 3))) if self.coef else None
        return logit_pi, mu, log_s, coef

    def _coupled_mean(self, mu: torch.Tensor, coef, x: torch.Tensor) -> torch.Tensor:
        """μ of G and B shifted by the pixel's R (and G) values (PixelCNN++); x (B, 1, C, K, K)."""
        if coef is None:
            return mu
        r, g = x[:, :, 0], x[:, :, 1]
        return torch.stack([mu[:, :, 0], mu[:, :, 1] + coef[:, :, 0] * r,
                            mu[:, :, 2] + coef[:, :, 1] * r + coef[:, :, 2] * g], dim=2)

    def log_prob(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Exact ln p(x | neighbourhood) per pixel (B, K, K), x (B, C, K, K) the true levels scaled to
        [-1, 1]; teacher forcing: each group sees the true pixels of the groups before it."""
        B = x.shape[0]
        G, gr = len(self.group_ids), self.groups
        tt = t.repeat(G, 1, 1, 1)
        canvas = x.repeat(G, 1, 1, 1)
        stage = torch.tensor(self.group_ids, device=x.device).repeat_interleave(B)[:, None, None, None]
        filled = (gr[None, None] < stage).to(x.dtype)
        target = (gr[None, None] == stage).to(x.dtype)
        logit_pi, mu, log_s, coef = self._split(self.params(tt, canvas, filled, target))
        xx = canvas[:, None]
        centred = xx - self._coupled_mean(mu, coef, xx)
        inv_s = torch.exp(-log_s)
        plus, minus = inv_s * (centred + HALF_BIN), inv_s * (centred - HALF_BIN)
        log_cdf_plus = plus - F.softplus(plus)  # log σ(plus): the bottom level takes the lower tail
        log_sf_minus = -F.softplus(minus)  # log(1 − σ(minus)): the top level takes the upper tail
        delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv_s * centred
        log_pdf_mid = mid - log_s - 2 * F.softplus(mid) + torch.log(torch.tensor(2 * HALF_BIN))
        log_mid = torch.where(delta > 1e-5, torch.log(delta.clamp_min(1e-12)), log_pdf_mid)
        lp = torch.where(xx < -1 + HALF_BIN, log_cdf_plus, torch.where(xx > 1 - HALF_BIN, log_sf_minus, log_mid))
        lp = torch.logsumexp(lp.sum(2) + F.log_softmax(logit_pi, dim=1), dim=1)  # (G·B, K, K)
        return (lp.view(G, B, *lp.shape[1:]) * target.view(G, B, *lp.shape[1:])).sum(0)

    @torch.no_grad()
    def sample(self, t: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """In-fills (B, C, K, K) as level indices 0 … 255 from trunk features t (B, head, K, K) and
        uniforms u (B, 1 + C, K, K) in (0, 1): the mixture component, then each channel in turn.

        ``temperature`` T (ours, beyond the paper, which samples at T = 1): each group's mixture
        weights are softmax(logits / T) and each logistic's scale is s·T, so T = 1 is the model
        itself (the same arithmetic, bit for bit), T < 1 draws nearer each pixel's likeliest
        component and its centre, and T = 0 is the greedy in-fill: the likeliest component's
        centre μ (colour-coupled), group by group, whatever ``u``. Our reading of "softmax(logits
        / T)" for a mixture of logistics (there are no 256-way logits): sharpen the weights and
        narrow the components, the usual form for PixelCNN++-style and flow samplers; it is not
        exactly p^(1/T) renormalised."""
        if not temperature >= 0:
            raise ValueError(f"temperature must be at least 0, got {temperature}")
        B, C, K = t.shape[0], self.channels, self.K
        u = u.clamp(1e-5, 1 - 1e-5)
        canvas = t.new_zeros(B, C, K, K)
        filled = t.new_zeros(B, 1, K, K)
        for g in self.group_ids:
            target = (self.groups == g).to(t.dtype).expand(B, 1, K, K)
            logit_pi, mu, log_s, coef = self._split(self.params(t, canvas, filled, target))
            if temperature > 0:
                cdf = torch.softmax(logit_pi / temperature, dim=1).cumsum(1)
                k = (cdf < u[:, :1] * cdf[:, -1:]).sum(1, keepdim=True).clamp_max(self.mixtures - 1)  # (B, 1, K, K)
            else:
                k = logit_pi.argmax(1, keepdim=True)
            pick = lambda a: a.gather(1, k[:, :, None].expand(-1, 1, a.shape[2], -1, -1))[:, 0]  # noqa: E731
            mu_k, s_k = pick(mu), pick(log_s).exp() * temperature
            coef_k = pick(coef) if coef is not None else None
            x = t.new_zeros(B, C, K, K)
            for c in range(C):
                m = mu_k[:, c]
                if coef_k is not None and c == 1:
                    m = m + coef_k[:, 0] * x[:, 0]
                elif coef_k is not None and c == 2:
                    m = m + coef_k[:, 1] * x[:, 0] + coef_k[:, 2] * x[:, 1]
                uc = u[:, 1 + c]
                v = m + s_k[:, c] * (torch.log(uc) - torch.log1p(-uc))
                x[:, c] = torch.round((v.clamp(-1, 1) + 1) * (LEVELS - 1) / 2) * 2 / (LEVELS - 1) - 1
            canvas = torch.where(target.bool(), x, canvas)
            filled = filled + target
        return torch.round((canvas + 1) * (LEVELS - 1) / 2).long()
