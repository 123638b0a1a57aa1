"""Data sets of the book, with no network access (chapters 3 and 6).

Digit images for the variational autoencoder (chapter 6): the default data set is
scikit-learn's bundled ``load_digits`` (1797 greyscale 8x8 digits, pixel values 0..16),
scaled to [0, 1] and split into train / validation / test sets with the book's seeded
generator. A reader who has the standard MNIST files on disk can point the chapter at
them instead: :func:`read_idx` parses the IDX format of LeCun et al. (1998), plain or
gzip-compressed. Nothing is ever downloaded.

Natural image patches for sparse coding (chapter 3): scikit-learn's bundled
``load_sample_images`` (china.jpg and flower.jpg) in grey scale
(:func:`load_grey_sample_images`), random patches (:func:`random_patches`), their mean
(the "DC" component) removed (:func:`remove_dc`) and whitened with a regularised ZCA
transform (:class:`ZCAWhitener`; Olshausen & Field 1996 whitened their images too), so
that dictionary learning is not dominated by the large low-frequency variance of natural
images.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elbo_lib._validation import (
    _scalar_of,
    as_float_array,
    as_generator,
    check_positive,
    check_positive_int,
    power_of_two_scale,
)

__all__ = [
    "ImageSplit",
    "ZCAWhitener",
    "binarize",
    "load_digits_split",
    "load_grey_sample_images",
    "load_image_split",
    "load_mnist_split",
    "random_patches",
    "read_idx",
    "remove_dc",
    "split_indices",
]

#: IDX type codes (third byte of the magic number) and the big-endian dtypes they denote.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: File names of the standard MNIST distribution (each may also end in ``.gz``).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageSplit:
    """Flattened images in [0, 1] and their labels, split three ways.

    Attributes
    ----------
    x_train, x_val, x_test : numpy.ndarray, shape (n_*, height * width), float32
        Pixel intensities in [0, 1] (or {0, 1} after :func:`binarize`).
    y_train, y_val, y_test : numpy.ndarray, shape (n_*,), int64
        Class labels (digits 0..9), used only to colour figures.
    image_shape : tuple of int
        ``(height, width)`` of one image.
    source : str
        Where the data came from (``"sklearn load_digits"`` or the MNIST folder).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int]
    source: str

    def __post_init__(self) -> None:
        shape = self.image_shape
        if not isinstance(shape, tuple) or len(shape) != 2:
            raise TypeError(f"image_shape must be a tuple (height, width), got {shape!r}")
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
                   for v in shape):
            raise ValueError(f"image_shape must be two ints >= 1, got {shape!r}")
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a str, got {type(self.source).__name__}")
        num_pixels = int(shape[0] * shape[1])
        for part in ("train", "val", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
                raise TypeError(f"x_{part} must be a float numpy array, got "
                                f"{getattr(x, 'dtype', type(x).__name__)}")
            if x.ndim != 2 or x.shape[1] != num_pixels:
                raise ValueError(f"x_{part} must have shape (n, {num_pixels}) for images of "
                                 f"shape {shape}, got {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"x_{part} must contain only finite values (no NaN or inf)")
            if x.size and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"x_{part} must lie in [0, 1], got range "
                                 f"[{x.min()}, {x.max()}]")
            if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu":
                raise TypeError(f"y_{part} must hold integer labels, got "
                                f"{getattr(y, 'dtype', type(y).__name__)}")
            if y.shape != (len(x),):
                raise ValueError(f"y_{part} must have shape ({len(x)},) to match x_{part}, "
                                 f"got {y.shape}")

    @property
    def num_pixels(self) -> int:
        """Number of pixels of one image (the data dimension D)."""
        return int(self.image_shape[0] * self.image_shape[1])

    def sizes(self) -> dict[str, int]:
        """Number of images in each part, e.g. ``{"train": 1257, "val": 270, "test": 270}``."""
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


def _check_fraction(value, name: str) -> float:
    value = _scalar_of(value)  # a 0-d array or tensor is its number
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(value).__name__}")
    if isinstance(value, int) and abs(value) >= 2**1024:  # beyond float range: 10**400
        raise ValueError(f"{name} must be in (0, 1), got an integer of {len(str(abs(value)))} "
                         "digits")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return value


def split_indices(n: int, rng: np.random.Generator | int, val_fraction: float = 0.15,
                  test_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``rng`` and cut it into train / validation / test indices.

    Used by chapter 6. The validation and test parts get ``round(fraction * n)`` indices
    each (at least one), the training part the rest.

    Parameters
    ----------
    n : int
        Number of items (>= 3).
    rng : numpy.random.Generator or int
        The chapter's generator.
    val_fraction, test_fraction : float
        Fractions in (0, 1) whose sum is below 1.

    Returns
    -------
    (train, val, test) : tuple of numpy.ndarray of int
        Disjoint index arrays covering ``range(n)``, each sorted.
    """
    n = check_positive_int(n, "n", minimum=3)
    rng = as_generator(rng)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, "
                         f"got {val_fraction} + {test_fraction}")
    n_val = max(1, round(val_fraction * n))
    n_test = max(1, round(test_fraction * n))
    if n_val + n_test >= n:
        raise ValueError(f"n={n} is too small to leave training data after taking "
                         f"{n_val} validation and {n_test} test items")
    perm = rng.permutation(n)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return np.sort(train), np.sort(val), np.sort(test)


def binarize(x, rng: np.random.Generator | int) -> np.ndarray:
    """Stochastic binarisation: pixel j becomes 1 with probability x_j, once and for all.

    Bernoulli likelihoods are proper (normalised) probabilities only for binary pixels,
    so chapter 6 binarises the [0, 1] images once with the seeded generator; the
    log-likelihoods it reports are then genuine log-probabilities in nats.

    Parameters
    ----------
    x : array_like
        Intensities in [0, 1].
    rng : numpy.random.Generator or int

    Returns
    -------
    numpy.ndarray of float32, same shape as ``x``, values in {0, 1}.
    """
    x = as_float_array(x, "x")
    rng = as_generator(rng)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must lie in [0, 1], got range [{x.min()}, {x.max()}]")
    return (rng.random(x.shape) < x).astype(np.float32)


def load_digits_split(rng: np.random.Generator | int, val_fraction: float = 0.15,
                      test_fraction: float = 0.15) -> ImageSplit:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1] and split with ``rng``.

    The data ship inside scikit-learn (Pedregosa et al. 2011): no download. Pixel
    values 0..16 are divided by 16. Used by chapter 6.

    Parameters
    ----------
    rng : numpy.random.Generator or int
        The chapter's generator, which fixes the split.
    val_fraction, test_fraction : float
        See :func:`split_indices`.

    Returns
    -------
    ImageSplit
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    train, val, test = split_indices(len(x), rng, val_fraction, test_fraction)
    return ImageSplit(x[train], y[train], x[val], y[val], x[test], y[test], (8, 8),
                      "sklearn load_digits")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an array stored in the IDX format of the MNIST files (plain or gzip).

    The format (LeCun et al. 1998): a 4-byte magic number ``0x00 0x00 T N`` where T is
    the type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64) and N the number of dimensions; then N big-endian
    unsigned 32-bit sizes; then the data in C order, big-endian. A file whose first two
    bytes are the gzip signature ``1f 8b`` is decompressed first. Used by chapter 6.

    Parameters
    ----------
    path : str or os.PathLike
        The file, e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        Array of the stored shape, in native byte order (uint8 for the MNIST files).

    Raises
    ------
    TypeError
        If ``path`` is not a path.
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the magic number, type code or sizes do not match the file's length.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file, magic number starts with "
                         f"{raw[0]:#04x} {raw[1]:#04x} instead of 0x00 0x00")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code {type_code:#04x}, expected one of "
                         + ", ".join(f"{c:#04x}" for c in IDX_DTYPES))
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions, expected >= 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: header declares {ndim} dimensions but the file has "
                         f"only {len(raw)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says shape {shape} of {dtype} ({expected} bytes) "
                         f"but {len(raw) - header} data bytes follow")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has neither {stem} nor {stem}.gz "
                            f"(the standard MNIST file names are expected)")


def load_mnist_split(folder: str | os.PathLike, rng: np.random.Generator | int,
                     val_fraction: float = 1 / 6, max_train: int | None = None) -> ImageSplit:
    """The standard MNIST files in ``folder``, scaled to [0, 1], with a validation split.

    Expects the four standard files (:data:`MNIST_FILES`, plain or ``.gz``). The
    official test set is the test part; ``val_fraction`` of the official training set,
    drawn with ``rng``, is the validation part. Used by chapter 6 when its ``mnist_dir``
    parameter is set; nothing is downloaded.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder holding the files.
    rng : numpy.random.Generator or int
    val_fraction : float
        Fraction in (0, 1) of the training files held out for validation.
    max_train : int or None
        Keep at most this many training images (a random subset), to fit a time budget.

    Returns
    -------
    ImageSplit
    """
    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"folder must be a str or os.PathLike, got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist")
    rng = as_generator(rng)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    if max_train is not None:
        max_train = check_positive_int(max_train, "max_train")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in MNIST_FILES.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"MNIST {part} files: expected images (n, h, w) and labels (n,), "
                             f"got {images.shape} and {labels.shape}")
    shape = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != shape:
        raise ValueError(f"train and test images differ in size: {shape} vs "
                         f"{arrays['test_images'].shape[1:]}")

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1) / 255.0).astype(np.float32)

    x, y = scale(arrays["train_images"]), arrays["train_labels"].astype(np.int64)
    perm = rng.permutation(len(x))
    n_val = max(1, round(val_fraction * len(x)))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if max_train is not None:
        train = np.sort(rng.permutation(train)[:max_train])
    return ImageSplit(x[train], y[train], x[val], y[val], scale(arrays["test_images"]),
                      arrays["test_labels"].astype(np.int64), (int(shape[0]), int(shape[1])),
                      f"MNIST IDX files in {folder.name}")


def load_image_split(rng: np.random.Generator | int, mnist_dir: str | os.PathLike | None = None,
                     max_train: int | None = None) -> ImageSplit:
    """The chapter's data: bundled digits by default, local MNIST files if ``mnist_dir``.

    Parameters
    ----------
    rng : numpy.random.Generator or int
    mnist_dir : str, os.PathLike or None
        ``None`` (default): :func:`load_digits_split`. Otherwise a folder with the
        standard MNIST files, read by :func:`load_mnist_split`.
    max_train : int or None
        Passed to :func:`load_mnist_split`.

    Returns
    -------
    ImageSplit
    """
    if mnist_dir is not None and not isinstance(mnist_dir, str | os.PathLike):
        raise TypeError(f"mnist_dir must be a str, os.PathLike or None, "
                        f"got {type(mnist_dir).__name__}")
    if max_train is not None:
        check_positive_int(max_train, "max_train")
    if mnist_dir is None:
        return load_digits_split(rng)
    return load_mnist_split(mnist_dir, rng, max_train=max_train)


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


def _check_range(span, name: str, size: int) -> tuple[int, int]:
    if span is None:
        return 0, size
    if (not isinstance(span, tuple | list) or len(span) != 2
            or not all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                       for v in span)):
        raise TypeError(f"{name} must be a pair of ints (start, stop), got {span!r}")
    start, stop = int(span[0]), int(span[1])
    if not 0 <= start < stop <= size:
        raise ValueError(f"{name} must be a pair (start, stop) with 0 <= start < stop <= "
                         f"{size}, got {tuple(span)!r}")
    return start, stop


def random_patches(image, patch_size: int, num_patches: int, rng: np.random.Generator | int,
                   *, rows: tuple[int, int] | None = None,
                   cols: tuple[int, int] | None = None) -> np.ndarray:
    """Draw square patches at random positions of a 2-D image (vectorised).

    Parameters
    ----------
    image : array_like, shape (height, width)
    patch_size : int
        Side p of each patch (>= 1, <= the image sides).
    num_patches : int
        Number of patches.
    rng : numpy.random.Generator or int
        Source of the positions.
    rows : (int, int), optional
        Restrict patches to image rows ``rows[0] <= r < rows[1]`` (whole patch inside),
        for example to keep training and held-out regions apart.
    cols : (int, int), optional
        The same for image columns.

    Returns
    -------
    numpy.ndarray, shape (num_patches, p * p)
        One flattened patch (row-major) per row.
    """
    image = as_float_array(image, "image", ndim=2)
    p = check_positive_int(patch_size, "patch_size")
    n = check_positive_int(num_patches, "num_patches")
    rng = as_generator(rng)
    r0, r1 = _check_range(rows, "rows", image.shape[0])
    c0, c1 = _check_range(cols, "cols", image.shape[1])
    if r1 - r0 < p or c1 - c0 < p:
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
    scale = power_of_two_scale(X, axis=1)   # exact; 1 unless a row is extreme (1e308)
    means = (X / scale[:, None]).mean(axis=1) * scale
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
        self.eps_fraction = eps_fraction

    def fit(self, X) -> ZCAWhitener:
        """Estimate the mean and the whitening transform from rows of ``X``."""
        eps_fraction = check_positive(self.eps_fraction, "eps_fraction")
        X = as_float_array(X, "X", ndim=2)
        if X.shape[0] < 2:
            raise ValueError(f"X must have at least 2 rows (patches) to estimate a covariance, "
                             f"got shape {X.shape}")
        # the covariance is computed on X / c (c a power of two, exact; 1 unless X's entries
        # are extreme) and scaled back: s = c^2 s_c and M = M_c / c
        c = power_of_two_scale(X)
        Xs = X / c
        mean = Xs.mean(axis=0)
        Xc = Xs - mean
        s, U = np.linalg.eigh(Xc.T @ Xc / (X.shape[0] - 1))
        s, U = np.clip(s[::-1], 0.0, None), U[:, ::-1]
        eps = eps_fraction * s.mean()
        if s[0] <= 0:
            raise ValueError("X has zero variance: cannot whiten constant patches")
        with np.errstate(over="ignore"):
            eigenvalues = s * np.float64(c) ** 2
        if not np.all(np.isfinite(eigenvalues)):
            raise ValueError(f"the covariance of X overflows float64 (entries up to "
                             f"{np.abs(X).max():.3g}); rescale X")
        self.mean_ = mean * c
        self.eigenvalues_, self.eigenvectors_ = eigenvalues, U
        # mean squared entry of the ZCA output is mean(s / (s + eps)); rescale it to 1
        self.scale_ = float(1.0 / np.sqrt(np.mean(s / (s + eps))))
        self.transform_ = (U * (self.scale_ / np.sqrt(s + eps))) @ U.T / c
        self.inverse_ = (U * (np.sqrt(s + eps) / self.scale_)) @ U.T * c
        return self

    def _check(self, X, name: str = "X") -> np.ndarray:
        if not hasattr(self, "transform_"):
            raise ValueError("ZCAWhitener is not fitted: call fit(X) first")
        X = as_float_array(X, name, ndim=2)
        if X.shape[1] != self.mean_.size:
            raise ValueError(f"{name} must have {self.mean_.size} columns, got shape {X.shape}")
        return X

    def transform(self, X) -> np.ndarray:
        """Whiten rows: (x - mean) M."""
        return (self._check(X) - self.mean_) @ self.transform_

    def inverse_transform(self, Z) -> np.ndarray:
        """Undo :meth:`transform`: z M^{-1} + mean."""
        return self._check(Z, "Z") @ self.inverse_ + self.mean_
