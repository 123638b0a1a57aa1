"""Natural image patches for the sparse coding experiments of chapter 3.

The images are scikit-learn's bundled ``load_sample_images`` (china.jpg and flower.jpg),
so no network is needed. Patches are taken in grey scale, their mean (the "DC"
component) is removed, and they are whitened with a regularised ZCA transform
(Olshausen & Field 1996 whitened their images too), so that
dictionary learning is not dominated by the large low-frequency variance of natural
images.
"""

from __future__ import annotations

import numpy as np

from elbo_lib._validation import as_float_array, check_positive, check_positive_int
from elbo_lib.sparse_coding import fista

__all__ = [
    "ZCAWhitener",
    "denoise_image",
    "load_grey_sample_images",
    "orientation_concentration",
    "random_patches",
    "remove_dc",
    "tile_patches",
]


def load_grey_sample_images() -> dict[str, np.ndarray]:
    """scikit-learn's two bundled sample photographs in grey scale, values in [0, 1].

    Returns
    -------
    dict
        ``{"china": array (427, 640), "flower": array (427, 640)}`` (ITU-R 601 luma).
    """
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    out = {}
    for name, img in zip(data.filenames, data.images, strict=True):
        key = name.replace("\\", "/").rsplit("/", 1)[-1].split(".")[0]
        rgb = np.asarray(img, dtype=np.float64) / 255.0
        out[key] = rgb @ np.array([0.299, 0.587, 0.114])
    return out


def random_patches(image, patch_size: int, n_patches: int, rng: np.random.Generator,
                   *, rows: tuple[int, int] | None = None,
                   cols: tuple[int, int] | None = None) -> np.ndarray:
    """Draw square patches at random positions of a 2-D image (vectorised).

    Parameters
    ----------
    image : array_like, shape (height, width)
    patch_size : int
        Side p of each patch (>= 1, <= the image sides).
    n_patches : int
        Number of patches.
    rng : numpy.random.Generator
        Source of the positions.
    rows : (int, int), optional
        Restrict patches to image rows ``rows[0] <= r < rows[1]`` (whole patch inside),
        for example to keep training and held-out regions apart.
    cols : (int, int), optional
        The same for image columns.

    Returns
    -------
    numpy.ndarray, shape (n_patches, p * p)
        One flattened patch (row-major) per row.
    """
    image = as_float_array(image, "image", ndim=2)
    p = check_positive_int(patch_size, "patch_size")
    n = check_positive_int(n_patches, "n_patches")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    r0, r1 = (0, image.shape[0]) if rows is None else rows
    c0, c1 = (0, image.shape[1]) if cols is None else cols
    if not (0 <= r0 < r1 <= image.shape[0] and 0 <= c0 < c1 <= image.shape[1]
            and r1 - r0 >= p and c1 - c0 >= p):
        raise ValueError(f"patch_size {p} does not fit in rows {r0}..{r1}, columns "
                         f"{c0}..{c1} of an image of shape {image.shape}")
    top = rng.integers(r0, r1 - p + 1, size=n)
    left = rng.integers(c0, c1 - p + 1, size=n)
    offsets = np.arange(p)
    rr = top[:, None, None] + offsets[None, :, None]
    cc = left[:, None, None] + offsets[None, None, :]
    return image[rr, cc].reshape(n, p * p)


def remove_dc(X) -> tuple[np.ndarray, np.ndarray]:
    """Subtract each row's mean; return (centred rows, means of shape (n,))."""
    X = as_float_array(X, "X", ndim=2)
    means = X.mean(axis=1)
    return X - means[:, None], means


class ZCAWhitener:
    """Regularised ZCA whitening of patches (chapter 3).

    With the covariance C = U diag(s) U^T of the (DC-removed) training patches, the
    transform is M = U diag(1 / sqrt(s + eps)) U^T and its inverse
    M^{-1} = U diag(sqrt(s + eps)) U^T. The regulariser eps (a fraction
    ``eps_fraction`` of the mean eigenvalue) stops the transform from amplifying the
    noisiest, highest-frequency directions; ZCA (rather than PCA whitening) keeps
    the whitened patch as close as possible to the original one, so whitened patches
    still look like patches.

    Parameters
    ----------
    eps_fraction : float
        eps = eps_fraction * mean(s) (> 0).

    After the ZCA transform every output is multiplied by one constant ``scale_`` chosen so
    that the whitened training patches have mean squared entry 1 (unit variance per pixel
    on average); the penalty of the chapter is stated on that scale.

    Attributes
    ----------
    mean_ : numpy.ndarray, shape (d,)
    eigenvalues_ : numpy.ndarray, shape (d,)
        s in decreasing order.
    eigenvectors_ : numpy.ndarray, shape (d, d)
    transform_, inverse_ : numpy.ndarray, shape (d, d)
        scale_ * M and its inverse M^{-1} / scale_ (symmetric): ``transform`` is
        (x - mean_) @ transform_ and ``inverse_transform`` is z @ inverse_ + mean_.
    scale_ : float
    """

    def __init__(self, eps_fraction: float = 0.01) -> None:
        self.eps_fraction = check_positive(eps_fraction, "eps_fraction")

    def fit(self, X) -> ZCAWhitener:
        """Estimate the mean and the whitening transform from rows of ``X``."""
        X = as_float_array(X, "X", ndim=2)
        if X.shape[0] < 2:
            raise ValueError(f"need at least 2 patches to estimate a covariance, got {X.shape}")
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        s, U = np.linalg.eigh(Xc.T @ Xc / (X.shape[0] - 1))
        s, U = np.clip(s[::-1], 0.0, None), U[:, ::-1]
        eps = self.eps_fraction * s.mean()
        self.eigenvalues_, self.eigenvectors_ = s, U
        if s[0] <= 0:
            raise ValueError("X has zero variance: cannot whiten constant patches")
        # mean squared entry of the ZCA output is mean(s / (s + eps)); rescale it to 1
        self.scale_ = float(1.0 / np.sqrt(np.mean(s / (s + eps))))
        self.transform_ = (U * (self.scale_ / np.sqrt(s + eps))) @ U.T
        self.inverse_ = (U * (np.sqrt(s + eps) / self.scale_)) @ U.T
        return self

    def _check(self, X) -> np.ndarray:
        if not hasattr(self, "transform_"):
            raise ValueError("ZCAWhitener is not fitted: call fit(X) first")
        X = as_float_array(X, "X", ndim=2)
        if X.shape[1] != self.mean_.size:
            raise ValueError(f"X must have {self.mean_.size} columns, got shape {X.shape}")
        return X

    def transform(self, X) -> np.ndarray:
        """Whiten rows: (x - mean) M."""
        return (self._check(X) - self.mean_) @ self.transform_

    def inverse_transform(self, Z) -> np.ndarray:
        """Undo :meth:`transform`: z M^{-1} + mean."""
        return self._check(Z) @ self.inverse_ + self.mean_


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
        raise ValueError(f"image of shape {noisy.shape} is smaller than the patch size {p}")
    offset = np.zeros(p * p) if offset is None else as_float_array(offset, "offset", ndim=1)
    if offset.shape != (p * p,):
        raise ValueError(f"offset must have shape {(p * p,)}, got {offset.shape}")
    Y = extract_patches_2d(noisy, (p, p)).reshape(-1, p * p)
    Y, dc = remove_dc(Y)
    codes = fista(Y - offset, A, lam, max_iter=max_iter, tol=tol).codes
    estimate = codes @ A.T + offset + dc[:, None]
    return reconstruct_from_patches_2d(estimate.reshape(-1, p, p), noisy.shape)


def tile_patches(patches, n_cols: int, *, pad: int = 1, normalize: bool = True) -> np.ndarray:
    """Arrange flattened square patches (or atoms) into one mosaic image (chapter 3).

    Parameters
    ----------
    patches : array_like, shape (m, p * p)
        One flattened patch per row (for a dictionary W of shape (d, k), pass ``W.T``).
    n_cols : int
        Patches per mosaic row.
    pad : int
        Pixels of separation (filled with NaN, drawn as background by ``imshow``).
    normalize : bool
        Scale each patch by its own maximum absolute value, so that every tile spans
        [-1, 1] and zero is mid-grey (the usual way of showing atoms).

    Returns
    -------
    numpy.ndarray, shape (rows * (p + pad) - pad, n_cols * (p + pad) - pad)
    """
    P = as_float_array(patches, "patches", ndim=2)
    n_cols = check_positive_int(n_cols, "n_cols")
    pad = check_positive_int(pad, "pad", minimum=0)
    p = int(round(np.sqrt(P.shape[1])))
    if p * p != P.shape[1]:
        raise ValueError(f"patches must have p*p columns, got shape {P.shape}")
    if normalize:
        P = P / np.maximum(np.abs(P).max(axis=1, keepdims=True), np.finfo(float).tiny)
    m = P.shape[0]
    n_rows = -(-m // n_cols)
    canvas = np.full((n_rows * n_cols, p + pad, p + pad), np.nan)
    canvas[:m, :p, :p] = P.reshape(m, p, p)
    mosaic = canvas.reshape(n_rows, n_cols, p + pad, p + pad).transpose(0, 2, 1, 3)
    mosaic = mosaic.reshape(n_rows * (p + pad), n_cols * (p + pad))
    return mosaic[: mosaic.shape[0] - pad, : mosaic.shape[1] - pad]


def orientation_concentration(patches, *, n_fft: int = 32,
                              half_width_deg: float = 15.0) -> np.ndarray:
    """How oriented each square patch (or atom) is: its spectral power in one wedge.

    The power spectrum |FFT|^2 of each p x p patch (zero-padded to ``n_fft`` x ``n_fft``,
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
    n_fft : int
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
    n_fft = check_positive_int(n_fft, "n_fft", minimum=p)
    half_width = check_positive(half_width_deg, "half_width_deg")
    if half_width >= 90:
        raise ValueError(f"half_width_deg must be < 90, got {half_width}")
    power = np.abs(np.fft.fft2(P.reshape(-1, p, p), s=(n_fft, n_fft))) ** 2
    f = np.fft.fftfreq(n_fft)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    angle = np.degrees(np.arctan2(fy, fx)) % 180.0
    keep = (fx != 0) | (fy != 0)
    power, angle = power[:, keep], angle[keep]
    total = np.maximum(power.sum(axis=1), np.finfo(float).tiny)
    centres = np.arange(180.0)
    dist = np.abs((angle[None, :] - centres[:, None] + 90.0) % 180.0 - 90.0)
    wedges = (dist <= half_width).astype(float)        # (180, n_bins)
    return (power @ wedges.T).max(axis=1) / total
