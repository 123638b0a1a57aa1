"""MAP sparse coding of image patches (chapter 3): denoising and the atoms' orientation.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import (
    as_float_array,
    check_positive,
    check_positive_int,
    power_of_two_scale,
)
from elbo_lib.datasets import remove_dc
from elbo_lib.sparse_coding.lasso import _blas_threads
from elbo_lib.sparse_coding.proximal_gradient import fista


# ------------------------------------------------------------ image patches (MAP)
def denoise_image(noisy, atoms, lam, *, offset=None, max_iter: int = 500,
                  tol: float = 1e-6) -> np.ndarray:
    """Denoise a grey image by MAP sparse coding of all its overlapping patches (chapter 3).

    Every p x p patch y (p from ``atoms``) loses its mean (DC), then ``offset``; its code is
    the lasso solution h = argmin 0.5 ||y - A h||^2 + lam ||h||_1 (:func:`fista`), the
    MAP estimate under Gaussian pixel noise of variance sigma^2 and a Laplace(b) prior
    when lam = sigma^2 / b; the patch estimate A h + offset + DC is then averaged over
    the overlapping patches that cover each pixel.

    Parameters
    ----------
    noisy : array_like, shape (height, width)
    atoms : array_like, shape (p * p, k)
        Dictionary A in pixel space (for patches with their DC removed).
    lam : float
        Penalty (> 0).
    offset : array_like, shape (p * p,), optional
        Mean patch subtracted before coding (default zero).
    max_iter, tol
        Passed to :func:`fista`.

    Returns
    -------
    numpy.ndarray, shape (height, width)
    """
    from sklearn.feature_extraction.image import extract_patches_2d, reconstruct_from_patches_2d

    noisy = as_float_array(noisy, "noisy", ndim=2)
    A = as_float_array(atoms, "atoms", ndim=2)
    p = int(round(np.sqrt(A.shape[0])))
    if p * p != A.shape[0]:
        raise ValueError(f"atoms must have p*p rows for square patches, got shape {A.shape}")
    if min(noisy.shape) < p:
        raise ValueError(f"noisy of shape {noisy.shape} is smaller than the patch size {p}")
    offset = np.zeros(p * p) if offset is None else as_float_array(offset, "offset", ndim=1)
    if offset.shape != (p * p,):
        raise ValueError(f"offset must have shape {(p * p,)}, got {offset.shape}")
    Y = extract_patches_2d(noisy, (p, p)).reshape(-1, p * p)
    Y, dc = remove_dc(Y)
    codes = fista(Y - offset, A, lam, max_iter=max_iter, tol=tol).codes
    with _blas_threads(codes.size * A.shape[0]):
        estimate = codes @ A.T + offset + dc[:, None]
    return reconstruct_from_patches_2d(estimate.reshape(-1, p, p), noisy.shape)


def orientation_concentration(patches, *, fft_size: int = 32,
                              half_width_deg: float = 15.0) -> np.ndarray:
    """How oriented each square patch (or atom) is: its spectral power in one wedge.

    The power spectrum |FFT|^2 of each p x p patch (zero-padded to ``fft_size`` x ``fft_size``,
    DC bin excluded) is split by orientation, angle(f_x, f_y) modulo 180 degrees. The
    result is the largest fraction of the power that falls within +-``half_width_deg``
    of any one orientation (searched in 1-degree steps). A grating or an edge gives a
    value near 1; a patch whose power is spread evenly over orientations gives about
    2 * half_width_deg / 180 (1/6 for the default). Chapter 3 uses it to check that the
    learned atoms are oriented.

    Parameters
    ----------
    patches : array_like, shape (m, p * p)
        One flattened patch per row (for a dictionary W of shape (d, k), pass ``W.T``).
    fft_size : int
        FFT size (>= p).
    half_width_deg : float
        Half-width of the orientation wedge in degrees, in (0, 90).

    Returns
    -------
    numpy.ndarray, shape (m,)
        Values in [0, 1].
    """
    P = as_float_array(patches, "patches", ndim=2)
    p = int(round(np.sqrt(P.shape[1])))
    if p * p != P.shape[1]:
        raise ValueError(f"patches must have p*p columns, got shape {P.shape}")
    fft_size = check_positive_int(fft_size, "fft_size", minimum=p)
    half_width = check_positive(half_width_deg, "half_width_deg")
    if half_width >= 90:
        raise ValueError(f"half_width_deg must be < 90, got {half_width}")
    P = P / power_of_two_scale(P, axis=1, keepdims=True)  # a ratio: per-patch scale is free
    power = np.abs(np.fft.fft2(P.reshape(-1, p, p), s=(fft_size, fft_size))) ** 2
    f = np.fft.fftfreq(fft_size)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    angle = np.degrees(np.arctan2(fy, fx)) % 180.0
    keep = (fx != 0) | (fy != 0)
    power, angle = power[:, keep], angle[keep]
    total = np.maximum(power.sum(axis=1), np.finfo(float).tiny)
    centres = np.arange(180.0)
    dist = np.abs((angle[None, :] - centres[:, None] + 90.0) % 180.0 - 90.0)
    wedges = (dist <= half_width).astype(float)        # (180, n_bins)
    with _blas_threads(power.size * wedges.shape[0]):
        return (power @ wedges.T).max(axis=1) / total
