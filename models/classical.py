"""Classical, training-free fusion of an LR-HSI with an HR multispectral (or RGB) guide.

``gsa`` - Gram-Schmidt Adaptive component substitution (Aiazzi, Baronti, Selva, "Improving
component substitution pansharpening through multivariate regression of MS+Pan data", IEEE TGRS
45(10), 2007), adapted to a multispectral guide the way Yokoya, Grohnfeldt and Chanussot's review
("Hyperspectral and multispectral data fusion: a comparative review", IEEE GRSM 2017) adapts
pansharpening to HS-MS fusion: every HSI band is assigned to the guide band it correlates with best
(at the LR scale), and each guide band is the "pan" of its group. Per guide band j:

1. the guide band is brought to the LR grid with the acquisition's PSF (``kernel_downsample``;
   without a PSF, MATLAB ``imresize(1/s)`` as in the GSA reference implementation) and regressed,
   with an offset, on all (mean-removed) LR-HSI bands: the weights are GSA's adaptive intensity;
2. the intensity I_j is synthesised from the bicubic-upsampled HSI with those weights;
3. the guide band is equalised to I_j (mean and standard deviation) and the detail P_j - I_j is
   injected into each band of the group with the gain cov(H_k, I_j) / var(I_j).

Why per guide band rather than one intensity for all bands: with an RGB guide the blue, green
and red channels carry different edges (a red object on a green background has an edge in two
of them with opposite signs); a single intensity averages them away and injects the same detail
in the 400 nm and the 700 nm bands. Grouping keeps GSA's regression (which needs no SRF: it
estimates the spectral response) and gives each part of the spectrum the detail of its own guide
band. GSA needs no SRF and uses the PSF only for the reduced-scale regression.

``fuse`` - fast closed-form MAP fusion in a spectral subspace (Wei, Dobigeon, Tourneret, "Fast
fusion of multi-band images based on solving a Sylvester equation", IEEE TIP 24(11), 2015, the
"FUSE" solver) with the GSA result as the prior mean. With E (B x L) the leading L left singular
vectors of the LR-HSI, Z = E X, the known spatial operator D (the protocol's PSF + decimation,
``kernel_downsample``) and the known SRF R (M x B), it minimises

    1/2 ||D(E X) - Y_h||^2 + mu/2 ||R E X - Y_m||^2 + lambda/2 ||X - E^T Z_gsa||^2

exactly. With Q = mu (RE)^T(RE) + lambda I = V diag(d) V^T (L x L), the normal equation
D*D X + Q X = D* E^T Y_h + mu (RE)^T Y_m + lambda E^T Z_gsa (a Sylvester equation) decouples in
the rotated basis E V into L independent problems (D*D + d_l) x_l = D* y_l + d_l b_l, where b_l
blends the guide's and the prior's view of component l. Each has the closed-form (Woodbury)
solution x_l = b_l + D*[(d_l + D D*)^-1 (y_l - D b_l)], a back-projection whose inverse lives on
the LR grid, where D D* is diagonal in the Fourier basis: exactly ||k||^2 times the identity for
the gauss-x{s} block kernels; for wider kernels (bicubic-x{s}, mulsr-x{s}) it is circulant up to
the symmetric border, so the Fourier inverse is exact away from the image edge (``refine_steps``
adds conjugate-gradient steps on the exact operator, preconditioned by it, for an exact solve at
a cost of seconds per step on a 512 x 512 scene; it changed nothing measurable on CAVE). D* is the
exact adjoint of the shared operator, obtained by automatic differentiation, so nothing of the
degradation is re-implemented here. (Written in this form, nothing is divided by the small prior
weight, so the solve stays accurate in float64 for any lambda > 0.)

Why this method: it uses both known operators (SRF and PSF), so its output reproduces the LR-HSI
through the protocol and the guide through the SRF (within the subspace), it has no iteration for
the gauss protocols, and its cost is a handful of FFTs and operator applications on L (12) planes, so a 512 x 512 x 31
CAVE scene takes a few seconds on two CPU cores at any scale. HySure and CNMF, the other usual
choices, reach similar quality in the literature but need hundreds of ADMM / NMF iterations over
the whole image (minutes here). Taking GSA's estimate as the prior mean (instead of FUSE's naive
bicubic prior) decides the components the data leave free (the part of the subspace the guide
cannot see, inside each LR pixel's footprint) with GSA's detail injection, while the closed-form
step removes GSA's spectral and spatial inconsistencies: with a small lambda the result is (in the
weighted metric) the projection of the GSA estimate onto the images that agree with both inputs, so
its distance to the truth can only shrink when the truth lies in the subspace. (Measured on CAVE
scenes: the GSA prior gains 0.7 dB over the bicubic prior on paints x8 and superballs x32, and
loses 0.4 dB on superballs x8.)

Both run on the input tensors' device (GPU when present; on Apple MPS, which has no float64, on the
CPU) in float64 and are global methods: they
see the whole image at once (subspace, regression, Fourier solve), so they are not tiled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.baselines import bicubic_upsample
from models.degradation import bicubic_downsample, kernel_downsample
from models.errors import HsiError
from models.spec import ModelSpec, register

DEFAULT_SUBSPACE = 12     # L: spectral subspace dimension of ``fuse`` (CAVE: >99.9 % of the energy)
DEFAULT_MU = 1.0          # weight of the guide term relative to the LR-HSI term
DEFAULT_LAMBDA = 1e-4     # prior weight, relative to the mean eigenvalue of D D*


class ClassicalError(HsiError):
    """Inputs a classical fusion method cannot work with."""


def _check(lr_hsi, hr_msi, scale: int, srf=None) -> None:
    if lr_hsi is None or hr_msi is None:
        raise ClassicalError("classical fusion needs both the LR-HSI and the HR guide")
    if lr_hsi.dim() != 4 or hr_msi.dim() != 4:
        raise ClassicalError(f"expected (N, B, h, w) and (N, M, H, W) tensors, got {tuple(lr_hsi.shape)} "
                             f"and {tuple(hr_msi.shape)}")
    n, _, h, w = lr_hsi.shape
    if hr_msi.shape[0] != n or tuple(hr_msi.shape[-2:]) != (h * scale, w * scale):
        raise ClassicalError(f"the guide is {tuple(hr_msi.shape[-2:])} but an LR-HSI of {h}x{w} at x{scale} needs "
                             f"{(h * scale, w * scale)}")
    if srf is not None and tuple(srf.shape) != (hr_msi.shape[1], lr_hsi.shape[1]):
        raise ClassicalError(f"the SRF is {tuple(srf.shape)}, expected ({hr_msi.shape[1]}, {lr_hsi.shape[1]}) "
                             f"for this guide and LR-HSI")


def _spatial(scale: int, psf):
    """The LR acquisition as a function of an (N, C, H, W) tensor: the PSF at stride s, or
    MATLAB imresize(1/s) when no PSF is known."""
    if psf is None:
        return lambda z: bicubic_downsample(z, scale)
    return lambda z: kernel_downsample(z, psf, scale)


# ------------------------------------------------------------------------------ GSA
def gsa(lr_hsi: torch.Tensor, hr_msi: torch.Tensor, scale: int, psf=None, ridge: float = 1e-6) -> torch.Tensor:
    """GSA with one detail image per guide band (see the module docstring).

    Args:
        lr_hsi: (N, B, h, w); hr_msi: (N, M, h*s, w*s); psf: (k, k) PSF of the LR acquisition or None.
        ridge: Tikhonov weight (relative to the mean diagonal) of the intensity regression, which
            keeps it stable when there are fewer LR pixels than bands (tiny images at x32).
    Returns:
        (N, B, h*s, w*s) in the dtype of ``lr_hsi``.
    """
    s = int(scale)
    _check(lr_hsi, hr_msi, s)
    dtype = lr_hsi.dtype
    y = lr_hsi.to(torch.float64)
    p = hr_msi.to(torch.float64)
    k = None if psf is None else torch.as_tensor(psf).to(device=y.device, dtype=torch.float64)
    down = _spatial(s, k)
    up = bicubic_upsample(y, s)                                    # (N, B, H, W)
    p_lr = down(p)                                                 # (N, M, h, w)
    n, b = y.shape[:2]
    m = p.shape[1]
    out = torch.empty_like(up)
    for i in range(n):
        yl = y[i].reshape(b, -1)                                   # (B, h*w)
        pl = p_lr[i].reshape(m, -1)                                # (M, h*w)
        yl0 = yl - yl.mean(dim=1, keepdim=True)
        pl0 = pl - pl.mean(dim=1, keepdim=True)
        # group: each HSI band follows the guide band it correlates with best
        corr = (yl0 @ pl0.T) / (yl0.norm(dim=1, keepdim=True) * pl0.norm(dim=1)[None, :]).clamp_min(1e-12)
        group = corr.argmax(dim=1)                                 # (B,)
        # adaptive intensity weights: guide band j ~ sum_k w_jk * HSI band k (+ offset), at LR
        a = torch.cat([yl0, torch.ones_like(yl0[:1])], dim=0)      # (B + 1, h*w)
        gram = a @ a.T
        gram = gram + ridge * gram.diagonal().mean() * torch.eye(b + 1, dtype=gram.dtype, device=gram.device)
        weights = torch.linalg.solve(gram, a @ pl0.T)              # (B + 1, M)
        hu = up[i].reshape(b, -1)                                  # (B, H*W)
        hu0 = hu - hu.mean(dim=1, keepdim=True)
        intensity = weights[:b].T @ hu0 + weights[b:].T            # (M, H*W)
        intensity = intensity - intensity.mean(dim=1, keepdim=True)
        ph = p[i].reshape(m, -1)
        ph0 = ph - ph.mean(dim=1, keepdim=True)
        scale_eq = intensity.std(dim=1, keepdim=True) / ph0.std(dim=1, keepdim=True).clamp_min(1e-12)
        detail = ph0 * scale_eq - intensity                        # (M, H*W), equalised guide - intensity
        var_i = (intensity * intensity).mean(dim=1).clamp_min(1e-20)  # (M,)
        gains = (hu0 * intensity[group]).mean(dim=1) / var_i[group]   # (B,)
        out[i] = (hu + gains[:, None] * detail[group]).reshape(b, *up.shape[-2:])
    return out.to(dtype)


# ------------------------------------------------------------------------------ FUSE
def _adjoint(op, y: torch.Tensor, hr_shape) -> torch.Tensor:
    """D*(y) for a linear operator ``op`` (the exact adjoint, by automatic differentiation)."""
    with torch.inference_mode(False), torch.enable_grad():
        z = torch.zeros(hr_shape, dtype=y.dtype, device=y.device, requires_grad=True)
        out = op(z)
        (grad,) = torch.autograd.grad(out, z, grad_outputs=y.clone())
    return grad.detach()


def _ddstar_spectrum(op, lr_shape, hr_shape, dtype, device) -> torch.Tensor:
    """Eigenvalues (h, w//2+1) of D D* on the LR grid, taken as circulant: the rFFT of its response
    to an impulse in the middle of the LR grid (exact for block kernels, border effects aside else)."""
    h, w = lr_shape[-2:]
    delta = torch.zeros((1, 1, h, w), dtype=dtype, device=device)
    cy, cx = h // 2, w // 2
    delta[0, 0, cy, cx] = 1.0
    resp = op(_adjoint(op, delta, (1, 1, *hr_shape[-2:])))[0, 0]
    resp = torch.roll(resp, shifts=(-cy, -cx), dims=(0, 1))
    return torch.fft.rfft2(resp).real


def _solve_lr(op, rhs: torch.Tensor, d: torch.Tensor, gamma: torch.Tensor, hr_shape, *, exact: bool,
              tol: float = 1e-10, max_iter: int = 0) -> torch.Tensor:
    """Solve (d_l I + D D*) v_l = rhs_l on the LR grid for every channel l (rhs (1, L, h, w)).

    D D* is diagonal in the LR Fourier basis (eigenvalues ``gamma``) when the PSF is a block kernel
    (``exact``); otherwise (wider kernels, symmetric borders) the Fourier inverse is exact away from
    the border, and up to ``max_iter`` conjugate-gradient steps on the exact operator, preconditioned
    by it, refine it until the relative residual of every channel is below ``tol``."""
    h, w = rhs.shape[-2:]
    dd = d[None, :, None, None]

    def precond(x):
        return torch.fft.irfft2(torch.fft.rfft2(x) / (dd + gamma[None, None]), s=(h, w))

    v = precond(rhs)
    if exact or max_iter <= 0:
        return v

    def apply(x):
        return dd * x + op(_adjoint(op, x, hr_shape))

    dims = (0, 2, 3)
    res = rhs - apply(v)
    zr = precond(res)
    direction = zr.clone()
    rz = (res * zr).sum(dim=dims, keepdim=True)
    norm0 = rhs.pow(2).sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-300)
    for _ in range(max_iter):
        if bool((res.pow(2).sum(dim=dims, keepdim=True).sqrt() <= tol * norm0).all()):
            break
        ap = apply(direction)
        alpha = rz / (direction * ap).sum(dim=dims, keepdim=True).clamp_min(1e-300)
        v = v + alpha * direction
        res = res - alpha * ap
        zr = precond(res)
        rz_new = (res * zr).sum(dim=dims, keepdim=True)
        direction = zr + (rz_new / rz.clamp_min(1e-300)) * direction
        rz = rz_new
    return v


PRIORS = ("gsa", "guided", "bicubic")
GUIDED_RADIUS = 2      # LR px: 5x5 LR windows for the local band-from-guide regressions
GUIDED_EPS = 1e-7      # ridge (reflectance^2) of those regressions


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows, same size, replicated border."""
    k = 2 * r + 1
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), k, stride=1)


def guided_filter_base(lr: torch.Tensor, rgb: torch.Tensor, psf: torch.Tensor, scale: int, radius: int,
                       eps: float) -> torch.Tensor:
    """Guided-filter fusion of every band: lr (N, B, h, w), rgb (N, M, H, W), psf (k, k) -> (N, B, H, W).

    The guide is taken to the LR grid with the PSF, band ~ a . guide + c is fitted by ridge least
    squares in every (2r+1)^2 LR window, the box-averaged (a, c) are bicubic-upsampled and applied
    to the HR guide. Runs in float32 whatever the input dtype."""
    dtype = lr.dtype
    lr, rgb = lr.float(), rgb.float()
    n, b, h, w = lr.shape
    m = rgb.shape[1]
    g = kernel_downsample(rgb, psf.float(), scale)[..., :h, :w]                 # (N, M, h, w)
    mg, mp = _box(g, radius), _box(lr, radius)
    gg = torch.einsum("nihw,njhw->nijhw", g, g).reshape(n, m * m, h, w)
    cov = (_box(gg, radius).reshape(n, m, m, h, w) - mg[:, :, None] * mg[:, None])
    gp = (g[:, None] * lr[:, :, None]).reshape(n, b * m, h, w)                   # (N, B*M, h, w)
    covp = _box(gp, radius).reshape(n, b, m, h, w) - mp[:, :, None] * mg[:, None]
    eye = torch.eye(m, dtype=lr.dtype, device=lr.device)
    a_mat = cov.permute(0, 3, 4, 1, 2) + eps * eye                                 # (N, h, w, M, M)
    coef = torch.linalg.solve(a_mat, covp.permute(0, 3, 4, 2, 1))                # (N, h, w, M, B)
    coef = coef.permute(0, 4, 3, 1, 2)                                            # (N, B, M, h, w)
    const = mp - (coef * mg[:, None]).sum(2)
    coef = _box(coef.reshape(n, b * m, h, w), radius)
    const = _box(const, radius)
    coef_hr = bicubic_upsample(coef, scale).reshape(n, b, m, h * scale, w * scale)
    out = (coef_hr * rgb[:, None]).sum(2) + bicubic_upsample(const, scale)
    return out.to(dtype)


def guided_prior(lr_hsi: torch.Tensor, hr_msi: torch.Tensor, psf, scale: int, radius: int = GUIDED_RADIUS,
                 eps: float = GUIDED_EPS) -> torch.Tensor:
    """A guided-filter estimate (He, Sun, Tang, "Guided image filtering", TPAMI 2013, applied across
    scales as in MulSR's base, :func:`guided_filter_base`): each band is regressed, with
    an offset, on the guide bands brought to the LR grid by the PSF, in (2 radius + 1)^2 LR windows,
    and the averaged local coefficients are applied to the HR guide. As FUSE's prior mean it replaces
    GSA's one global injection gain per band by local ones. Radius and ridge were chosen on five
    CAVE training scenes at gauss-x32 (``python -m app.research.prior_sweep``; docs/benchmarks.md):
    radius 2 beats 1 and 3 at every ridge by 0.16-0.41 dB; ridges from 1e-6 to 3e-8 are within
    0.12 dB of each other (3e-7 is 0.06 dB ahead of the 1e-7 kept)."""
    k = torch.as_tensor(psf).to(device=lr_hsi.device, dtype=lr_hsi.dtype)
    return guided_filter_base(lr_hsi, hr_msi.to(lr_hsi.dtype), k, int(scale), int(radius), float(eps))


def fuse(lr_hsi: torch.Tensor, hr_msi: torch.Tensor, srf, psf, scale: int, *, subspace: int = DEFAULT_SUBSPACE,
         mu: float = DEFAULT_MU, lam: float = DEFAULT_LAMBDA, prior: torch.Tensor | str = "gsa",
         refine_steps: int = 0) -> torch.Tensor:
    """Closed-form MAP fusion in a subspace (FUSE, Wei et al. 2015) with a GSA prior mean.

    Args:
        lr_hsi: (N, B, h, w) LR-HSI; hr_msi: (N, M, h*s, w*s) guide; srf: (M, B) spectral response
            of the guide; psf: (k, k) PSF of the LR acquisition (``models.degradation.psf_kernel``),
            applied at stride ``scale`` by ``kernel_downsample``.
        subspace: L, the number of leading singular vectors of the LR-HSI kept (capped at B and at
            the number of LR pixels).
        mu: weight of the guide term relative to the LR-HSI term.
        lam: prior weight relative to the mean eigenvalue of D D* (small: the data decide wherever
            they can, the prior fills in the rest).
        prior: 'gsa' (default), 'guided' (``guided_prior``: local regressions on the guide),
            'bicubic' (FUSE's original naive prior) or an (N, B, H, W) tensor.
        refine_steps: conjugate-gradient steps that make the LR-grid solve exact for PSFs wider than
            one block (default 0: Fourier solve, exact for the gauss protocols).
    Returns:
        (N, B, h*s, w*s) in the dtype of ``lr_hsi``.
    """
    s = int(scale)
    if srf is None or psf is None:
        raise ClassicalError("fuse needs the SRF of the guide and the PSF of the LR-HSI")
    _check(lr_hsi, hr_msi, s, srf)
    dtype, dev = lr_hsi.dtype, lr_hsi.device
    f64 = torch.float64
    y = lr_hsi.to(f64)
    g = hr_msi.to(f64)
    r = torch.as_tensor(srf).to(device=dev, dtype=f64)
    k = torch.as_tensor(psf).to(device=dev, dtype=f64)
    # k.clone(): a kernel made under inference_mode must not be saved by _adjoint's autograd pass
    op = lambda z: kernel_downsample(z, k.clone(), s)  # noqa: E731
    n, b, h, w = y.shape
    hr_shape = (1, b, h * s, w * s)
    if isinstance(prior, str):
        if prior == "gsa":
            prior_t = gsa(y, g, s, k)
        elif prior == "guided":
            prior_t = guided_prior(y, g, k, s)
        elif prior == "bicubic":
            prior_t = bicubic_upsample(y, s)
        else:
            raise ClassicalError(f"unknown prior '{prior}' (use {', '.join(repr(p) for p in PRIORS)})")
    else:
        prior_t = prior.to(device=dev, dtype=f64)
    gamma = _ddstar_spectrum(op, (h, w), hr_shape, f64, dev)              # (h, w//2+1)
    # block kernels (gauss-x{s}) make D D* exactly ||k||^2 I: the Fourier solve is then exact
    exact = tuple(k.shape) == (s, s)
    gamma_mean = float(gamma.mean())
    lam_abs = float(lam) * gamma_mean
    mu_abs = float(mu) * gamma_mean
    out = torch.empty((n, b, h * s, w * s), dtype=f64, device=dev)
    for i in range(n):
        yl = y[i].reshape(b, -1)
        u, sv, _ = torch.linalg.svd(yl, full_matrices=False)
        keep = int(min(subspace, b, yl.shape[1], int((sv > sv[0] * 1e-10).sum())))
        e = u[:, :keep]                                                    # (B, L) orthonormal
        re = r @ e                                                         # (M, L)
        qmat = mu_abs * (re.T @ re) + lam_abs * torch.eye(keep, dtype=f64, device=dev)
        d, v = torch.linalg.eigh(qmat)                                     # Q = V diag(d) V^T
        ev = e @ v                                                         # rotated basis (B, L)
        # per rotated component l the normal equation reads (D*D + d_l) x_l = D* y_l + d_l b_l, with
        # b_l = (mu m_l + lam p_l) / d_l the data-weighted blend of the guide's and the prior's view
        # of that component (a component the guide cannot see has m_l = 0, so b_l = p_l). Its
        # solution, by the Woodbury identity, is x_l = b_l + D*[(d_l + D D*)^-1 (y_l - D b_l)]:
        # stable for any d_l > 0 (nothing is divided by the small prior weight).
        y_rot = torch.einsum("bl,bhw->lhw", ev, y[i])[None]                # (1, L, h, w)
        m_rot = mu_abs * torch.einsum("ml,mhw->lhw", r @ ev, g[i])[None]   # (1, L, H, W)
        p_rot = lam_abs * torch.einsum("bl,bhw->lhw", ev, prior_t[i])[None]
        blend = (m_rot + p_rot) / d[None, :, None, None]
        resid = y_rot - op(blend)
        inner = _solve_lr(op, resid, d, gamma, (1, keep, h * s, w * s), exact=exact, max_iter=refine_steps)
        x = blend + _adjoint(op, inner, blend.shape)
        out[i] = torch.einsum("bl,lhw->bhw", ev, x[0])
    return out.to(dtype)


# ------------------------------------------------------------------------------ modules
def on_float64_device(fn, lr_hsi, hr_msi, srf, psf):
    """Run ``fn(lr_hsi, hr_msi, srf, psf)`` where float64 exists: MPS has none, so the work goes to
    the CPU and the result comes back to the inputs' device. Every model that starts from a
    classical estimate (hsr_diff, umsft) goes through here."""
    if lr_hsi is None or lr_hsi.device.type != "mps":
        return fn(lr_hsi, hr_msi, srf, psf)
    cpu = [None if t is None else torch.as_tensor(t).cpu() for t in (lr_hsi, hr_msi, srf, psf)]
    return fn(*cpu).to(lr_hsi.device)


class GSA(nn.Module):
    """GSA fusion (no parameters). forward(lr_hsi, hr_msi, srf=None, psf=None)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = int(scale)

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor | None = None, srf=None, psf=None, **_) -> torch.Tensor:
        return on_float64_device(lambda *a: gsa(a[0], a[1], self.scale, a[3]), lr_hsi, hr_msi, srf, psf)


class FUSE(nn.Module):
    """Closed-form subspace MAP fusion, GSA prior by default (``prior``: see ``fuse``); no parameters.
    forward(lr_hsi, hr_msi, srf, psf)."""

    def __init__(self, scale: int, subspace: int = DEFAULT_SUBSPACE, prior: str = "gsa"):
        super().__init__()
        self.scale = int(scale)
        self.subspace = int(subspace)
        if prior not in PRIORS:
            raise ClassicalError(f"unknown FUSE prior '{prior}' (use {', '.join(PRIORS)})")
        self.prior = prior

    def forward(self, lr_hsi: torch.Tensor, hr_msi: torch.Tensor | None = None, srf=None, psf=None, **_) -> torch.Tensor:
        return on_float64_device(lambda *a: fuse(*a, self.scale, subspace=self.subspace, prior=self.prior),
                                  lr_hsi, hr_msi, srf, psf)


register(ModelSpec(
    name="gsa",
    title="GSA (Gram-Schmidt adaptive, one detail per guide band)",
    paper="Aiazzi, Baronti, Selva, Improving component substitution pansharpening through multivariate regression "
          "of MS+Pan data, IEEE TGRS 45(10), 2007; HS-MS grouping as in Yokoya et al., IEEE GRSM 2017",
    task="fusion",
    inputs=("lr_hsi", "hr_msi"),  # the SRF is estimated by the regression
    optional_inputs=("psf",),  # the LR-grid guide is made with the PSF when there is one
    factory=lambda scale, bands, **_: GSA(scale),
    tileable=False,  # global regression and statistics over the whole image
    memory_per_hr_px_bytes=2048,
    description="Training-free component substitution: each HSI band receives the equalised detail of the guide "
                "band it correlates with best. Needs no SRF.",
))


register(ModelSpec(
    name="fuse",
    title="FUSE (closed-form subspace MAP fusion; GSA or guided prior)",
    paper="Wei, Dobigeon, Tourneret, Fast fusion of multi-band images based on solving a Sylvester equation, "
          "IEEE TIP 24(11), 2015",
    task="fusion",
    inputs=("lr_hsi", "hr_msi", "srf", "psf"),
    factory=lambda scale, bands, prior="gsa", **_: FUSE(scale, prior=prior),
    tileable=False,  # global subspace and Fourier-domain solve over the whole image
    options=("prior",),  # prior=gsa (default), guided (local guided-filter regressions) or bicubic
    memory_per_hr_px_bytes=4096,
    description="Training-free: exact MAP solution with the known SRF and PSF in a 12-dim spectral subspace, "
                "GSA as the prior mean (--option prior=guided: local guided-filter regressions); reproduces both "
                "inputs through the protocol. Seconds per CAVE scene.",
))
