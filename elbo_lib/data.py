"""Image data for the variational autoencoder (chapter 6), with no network access.

The default data set is scikit-learn's bundled ``load_digits`` (1797 greyscale 8x8
digits, pixel values 0..16), scaled to [0, 1] and split into train / validation / test
sets with the book's seeded generator. A reader who has the standard MNIST files on disk
can point the chapter at them instead: :func:`read_idx` parses the IDX format of
LeCun et al. (1998), plain or gzip-compressed. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elbo_lib._validation import as_float_array, check_positive_int

__all__ = [
    "ImageSplit",
    "binarize",
    "load_digits_split",
    "load_image_split",
    "load_mnist_split",
    "read_idx",
    "split_indices",
    "tile_images",
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

    @property
    def num_pixels(self) -> int:
        """Number of pixels of one image (the data dimension D)."""
        return int(self.image_shape[0] * self.image_shape[1])

    def sizes(self) -> dict[str, int]:
        """Number of images in each part, e.g. ``{"train": 1257, "val": 270, "test": 270}``."""
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (from seed_everything), "
                        f"got {type(rng).__name__}")
    return rng


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(value).__name__}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return value


def split_indices(n: int, rng: np.random.Generator, val_fraction: float = 0.15,
                  test_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``rng`` and cut it into train / validation / test indices.

    Used by chapter 6. The validation and test parts get ``round(fraction * n)`` indices
    each (at least one), the training part the rest.

    Parameters
    ----------
    n : int
        Number of items (>= 3).
    rng : numpy.random.Generator
        The chapter's generator.
    val_fraction, test_fraction : float
        Fractions in (0, 1) whose sum is below 1.

    Returns
    -------
    (train, val, test) : tuple of numpy.ndarray of int
        Disjoint index arrays covering ``range(n)``, each sorted.
    """
    n = check_positive_int(n, "n", minimum=3)
    rng = _check_rng(rng)
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


def binarize(x, rng: np.random.Generator) -> np.ndarray:
    """Stochastic binarisation: pixel j becomes 1 with probability x_j, once and for all.

    Bernoulli likelihoods are proper (normalised) probabilities only for binary pixels,
    so chapter 6 binarises the [0, 1] images once with the seeded generator; the
    log-likelihoods it reports are then genuine log-probabilities in nats.

    Parameters
    ----------
    x : array_like
        Intensities in [0, 1].
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of float32, same shape as ``x``, values in {0, 1}.
    """
    x = as_float_array(x, "x")
    rng = _check_rng(rng)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must lie in [0, 1], got range [{x.min()}, {x.max()}]")
    return (rng.random(x.shape) < x).astype(np.float32)


def load_digits_split(rng: np.random.Generator, val_fraction: float = 0.15,
                      test_fraction: float = 0.15) -> ImageSplit:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1] and split with ``rng``.

    The data ship inside scikit-learn (Pedregosa et al. 2011): no download. Pixel
    values 0..16 are divided by 16. Used by chapter 6.

    Parameters
    ----------
    rng : numpy.random.Generator
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


def load_mnist_split(folder: str | os.PathLike, rng: np.random.Generator,
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
    rng : numpy.random.Generator
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
    rng = _check_rng(rng)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
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
        max_train = check_positive_int(max_train, "max_train")
        train = np.sort(rng.permutation(train)[:max_train])
    return ImageSplit(x[train], y[train], x[val], y[val], scale(arrays["test_images"]),
                      arrays["test_labels"].astype(np.int64), (int(shape[0]), int(shape[1])),
                      f"MNIST IDX files in {folder.name}")


def load_image_split(rng: np.random.Generator, mnist_dir: str | os.PathLike | None = None,
                     max_train: int | None = None) -> ImageSplit:
    """The chapter's data: bundled digits by default, local MNIST files if ``mnist_dir``.

    Parameters
    ----------
    rng : numpy.random.Generator
    mnist_dir : str, os.PathLike or None
        ``None`` (default): :func:`load_digits_split`. Otherwise a folder with the
        standard MNIST files, read by :func:`load_mnist_split`.
    max_train : int or None
        Passed to :func:`load_mnist_split`.

    Returns
    -------
    ImageSplit
    """
    if mnist_dir is None:
        return load_digits_split(rng)
    return load_mnist_split(mnist_dir, rng, max_train=max_train)


def tile_images(images, image_shape: tuple[int, int], n_cols: int,
                pad_value: float = 0.3) -> np.ndarray:
    """Arrange flattened images in one 2-D array, ``n_cols`` per row, 1-pixel gaps.

    One mosaic is one ``imshow`` (and one line of :func:`~elbo_lib.plotting.describe_figure`)
    rather than dozens of tiny axes. Used by chapter 6 for reconstructions, samples,
    the learned manifold and interpolations.

    Parameters
    ----------
    images : array_like, shape (n, height * width)
    image_shape : (int, int)
    n_cols : int
        Images per row; the last row is padded with ``pad_value``.
    pad_value : float
        Value of the gaps and of empty cells (0.3: light grey under the reversed grey
        colour map the chapter uses, so gaps are visible next to both ink and paper).

    Returns
    -------
    numpy.ndarray, shape (rows * (height + 1) - 1, n_cols * (width + 1) - 1)
    """
    images = as_float_array(images, "images", ndim=2)
    if (not isinstance(image_shape, tuple) or len(image_shape) != 2):
        raise TypeError(f"image_shape must be a tuple (height, width), got {image_shape!r}")
    h = check_positive_int(image_shape[0], "image_shape[0]")
    w = check_positive_int(image_shape[1], "image_shape[1]")
    if images.shape[1] != h * w:
        raise ValueError(f"images have {images.shape[1]} pixels, image_shape {image_shape} "
                         f"needs {h * w}")
    n_cols = check_positive_int(n_cols, "n_cols")
    n = len(images)
    n_rows = -(-n // n_cols)
    cells = np.full((n_rows * n_cols, h, w), pad_value)
    cells[:n] = images.reshape(n, h, w)
    canvas = np.full((n_rows, h + 1, n_cols, w + 1), pad_value)
    canvas[:, :h, :, :w] = cells.reshape(n_rows, n_cols, h, w).transpose(0, 2, 1, 3)
    return canvas.reshape(n_rows * (h + 1), n_cols * (w + 1))[:-1, :-1]
