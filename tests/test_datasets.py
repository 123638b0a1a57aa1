"""Tests of elbo_lib.datasets: digits split, binarisation, MNIST IDX reader, image patches."""

import gzip
import struct

import numpy as np
import pytest

from elbo_lib.datasets import (
    ImageSplit,
    ZCAWhitener,
    binarize,
    load_digits_split,
    load_grey_sample_images,
    load_image_split,
    load_mnist_split,
    random_patches,
    read_idx,
    remove_dc,
    split_indices,
)

# -- IDX fixtures, written byte by byte with struct (independent of the reader) -----------


def _idx_bytes(array: np.ndarray, type_code: int, dtype: str) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(dtype).tobytes()


def _write(path, payload: bytes, compress: bool = False):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.fixture
def mnist_folder(tmp_path, rng):
    """A miniature MNIST: 12 training and 5 test images of 4x3 pixels, mixed plain / gz."""
    train_x = rng.integers(0, 256, size=(12, 4, 3), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    train_y = rng.integers(0, 10, size=12, dtype=np.uint8)
    test_y = rng.integers(0, 10, size=5, dtype=np.uint8)
    _write(tmp_path / "train-images-idx3-ubyte.gz", _idx_bytes(train_x, 0x08, ">u1"), True)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(train_y, 0x08, ">u1"))
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(test_x, 0x08, ">u1"))
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_bytes(test_y, 0x08, ">u1"), True)
    return tmp_path, train_x, train_y, test_x, test_y


# -- read_idx -------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrips_unsigned_bytes(tmp_path, rng, compress):
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    path = _write(tmp_path / "x.idx", _idx_bytes(images, 0x08, ">u1"), compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 4)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("type_code, dtype", [(0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                               (0x0D, ">f4"), (0x0E, ">f8")])
def test_read_idx_reads_every_big_endian_type(tmp_path, rng, type_code, dtype):
    values = rng.integers(-100, 100, size=(3, 2)).astype(dtype)
    out = read_idx(_write(tmp_path / "v.idx", _idx_bytes(values, type_code, dtype)))
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, values.astype(np.dtype(dtype).newbyteorder("=")))


def test_read_idx_labels_are_one_dimensional(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    out = read_idx(_write(tmp_path / "y", _idx_bytes(labels, 0x08, ">u1")))
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize("payload, message", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "type code"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header declares"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", "data bytes follow"),
    (b"\x00\x00", "too short"),
])
def test_read_idx_rejects_malformed_files(tmp_path, payload, message):
    with pytest.raises(ValueError, match=message):
        read_idx(_write(tmp_path / "bad", payload))


def test_read_idx_rejects_bad_paths(tmp_path):
    with pytest.raises(TypeError, match="path"):
        read_idx(3)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


# -- MNIST loader -----------------------------------------------------------------------------


def test_load_mnist_split_reads_the_fixture(mnist_folder, rng):
    folder, train_x, train_y, test_x, test_y = mnist_folder
    split = load_mnist_split(folder, rng, val_fraction=0.25)
    assert split.image_shape == (4, 3) and split.num_pixels == 12
    assert split.sizes() == {"train": 9, "val": 3, "test": 5}
    np.testing.assert_allclose(split.x_test, test_x.reshape(5, 12) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(split.y_test, test_y)
    # train and validation together are exactly the training file, scaled
    both = np.concatenate([split.x_train, split.x_val])
    ref = train_x.reshape(12, 12) / 255.0
    assert sorted(map(tuple, np.round(both * 255).astype(int))) == sorted(
        map(tuple, np.round(ref * 255).astype(int)))
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    assert 0.0 <= split.x_train.min() and split.x_train.max() <= 1.0


def test_load_mnist_split_max_train_and_dispatch(mnist_folder, rng):
    folder = mnist_folder[0]
    split = load_image_split(rng, mnist_dir=folder, max_train=4)
    assert split.sizes()["train"] == 4 and split.source.startswith("MNIST")


def test_load_mnist_split_errors(mnist_folder, tmp_path, rng):
    folder = mnist_folder[0]
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_mnist_split(folder, rng)
    _write(folder / "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(4, np.uint8), 0x08, ">u1"))
    with pytest.raises(ValueError, match="expected images"):
        load_mnist_split(folder, rng)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_split(tmp_path / "nowhere", rng)
    with pytest.raises(TypeError, match="folder"):
        load_mnist_split(None, rng)


# -- digits and splits ------------------------------------------------------------------------


def test_load_digits_split_covers_the_data_once():
    split = load_digits_split(np.random.default_rng(0))
    sizes = split.sizes()
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    assert split.image_shape == (8, 8) and split.x_train.shape[1] == 64
    everything = np.concatenate([split.x_train, split.x_val, split.x_test])
    assert everything.min() == 0.0 and everything.max() == 1.0
    assert set(np.unique(split.y_train)) == set(range(10))
    from sklearn.datasets import load_digits
    ref = load_digits().data / 16.0
    assert np.isclose(everything.sum(), ref.sum(), rtol=1e-5)


def test_digits_split_is_reproducible_and_seed_dependent():
    a = load_digits_split(np.random.default_rng(0))
    b = load_digits_split(np.random.default_rng(0))
    c = load_digits_split(np.random.default_rng(1))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, c.y_test)
    assert load_image_split(np.random.default_rng(0)).source == "sklearn load_digits"


def test_split_indices_partition(rng):
    train, val, test = split_indices(100, rng, 0.2, 0.1)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(100))


@pytest.mark.parametrize("kwargs, error", [
    ({"n": 2}, ValueError), ({"n": 10, "val_fraction": 1.2}, ValueError),
    ({"n": 10, "val_fraction": 0.6, "test_fraction": 0.5}, ValueError),
    ({"n": 4, "val_fraction": 0.4, "test_fraction": 0.4}, ValueError),
    ({"n": 10, "test_fraction": "a"}, TypeError), ({"n": 10.0}, TypeError),
])
def test_split_indices_rejects_bad_input(rng, kwargs, error):
    with pytest.raises(error):
        split_indices(rng=rng, **kwargs)


@pytest.mark.parametrize("rng", [None, "seed", 1.5, True])
def test_split_needs_a_generator_or_a_seed(rng):
    with pytest.raises(TypeError, match="Generator"):
        split_indices(10, rng)


def test_an_int_seed_is_the_generator_it_seeds():
    np.testing.assert_array_equal(np.concatenate(split_indices(20, 7)),
                                  np.concatenate(split_indices(20, np.random.default_rng(7))))


def test_binarize_is_bernoulli(rng):
    x = np.full((200, 50), 0.3)
    b = binarize(x, rng)
    assert set(np.unique(b)) <= {0.0, 1.0} and b.dtype == np.float32
    assert abs(b.mean() - 0.3) < 0.01               # 10,000 draws: standard error 0.0046
    assert binarize(np.ones((2, 3)), rng).min() == 1.0
    assert binarize(np.zeros((2, 3)), rng).max() == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(np.array([[1.5]]), rng)


# -- mosaics ------------------------------------------------------------------------------------




def test_sample_images_and_patches():
    images = load_grey_sample_images()
    assert set(images) == {"china", "flower"}
    img = images["china"]
    assert img.ndim == 2 and 0 <= img.min() and img.max() <= 1
    from sklearn.datasets import load_sample_image
    rgb = load_sample_image("china.jpg").astype(float) / 255   # ITU-R 601 luma, by hand
    np.testing.assert_allclose(img[200, 300], 0.299 * rgb[200, 300, 0] + 0.587 * rgb[200, 300, 1]
                               + 0.114 * rgb[200, 300, 2], rtol=1e-12)
    rng = np.random.default_rng(0)
    P = random_patches(img, 8, 50, rng, rows=(100, 200))
    assert P.shape == (50, 64)
    # every patch is a real 8x8 window of the image rows 100..199
    windows = np.lib.stride_tricks.sliding_window_view(img[100:200], (8, 8)).reshape(-1, 64)
    assert all(np.any(np.all(windows == p, axis=1)) for p in P[:5])
    with pytest.raises(ValueError, match="does not fit"):
        random_patches(img, 8, 5, rng, rows=(0, 4))


def test_zca_whitener_whitens_and_inverts():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 6))
    X = rng.standard_normal((5000, 6)) @ A
    zca = ZCAWhitener(eps_fraction=1e-8).fit(X)
    Z = zca.transform(X)
    np.testing.assert_allclose(np.cov(Z.T), np.eye(6), atol=1e-4)
    np.testing.assert_allclose(zca.inverse_transform(Z), X, atol=1e-8)
    Zr = ZCAWhitener(eps_fraction=1.0).fit(X).transform(X)
    assert np.mean(Zr ** 2) == pytest.approx(1.0, rel=1e-3)
    # regularised: the output covariance has eigenvalues c s / (s + eps), eps = mean(s),
    # with c making their mean 1 (s from NumPy's covariance, independent of the class)
    s = np.linalg.eigvalsh(np.cov(X.T))
    shrunk = s / (s + s.mean())
    np.testing.assert_allclose(np.linalg.eigvalsh(np.cov(Zr.T)), shrunk / shrunk.mean(),
                               rtol=1e-8)
    centred, means = remove_dc(X)
    np.testing.assert_allclose(centred.mean(axis=1), 0, atol=1e-12)
    with pytest.raises(ValueError, match="not fitted"):
        ZCAWhitener().transform(X)


# ------------------------------------------------------------------ contract (issue 16)

_X4 = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(2, 6)
_Y2 = np.array([0, 1])


def _split(**changes):
    parts = dict(x_train=_X4, y_train=_Y2, x_val=_X4, y_val=_Y2, x_test=_X4, y_test=_Y2,
                 image_shape=(2, 3), source="test")
    return ImageSplit(**{**parts, **changes})


_PATCHES = np.random.default_rng(3).standard_normal((50, 4))
_ZCA = ZCAWhitener().fit(_PATCHES)

# Contract cases (issue 16): every public name of elbo_lib.datasets has bad-input cases.
BAD_INPUTS = {
    "ImageSplit": [
        (lambda: _split(image_shape=(-2, 3)), ValueError, r"image_shape must be .*got \(-2, 3\)"),
        (lambda: _split(image_shape=[2, 3]), TypeError, r"image_shape must be a tuple"),
        (lambda: _split(x_train=_X4[:, :5]), ValueError,
         r"x_train must have shape \(n, 6\) .*got \(2, 5\)"),
        (lambda: _split(y_val=_Y2[:1]), ValueError, r"y_val must have shape \(2,\)"),
        (lambda: _split(x_test=np.full((2, 6), np.nan)), ValueError, r"x_test must contain only"),
        (lambda: _split(x_train=_X4 * 3), ValueError, r"x_train must lie in \[0, 1\]"),
        (lambda: _split(y_train=np.array([0.5, 1.0])), TypeError, r"y_train must hold integer"),
        (lambda: _split(source=3), TypeError, r"source must be a str"),
    ],
    "ZCAWhitener": [
        (lambda: ZCAWhitener(eps_fraction=-1.0).fit(_PATCHES), ValueError, r"eps_fraction must"),
        (lambda: ZCAWhitener(eps_fraction="a").fit(_PATCHES), TypeError, r"eps_fraction must"),
    ],
    "ZCAWhitener.fit": [
        (lambda: ZCAWhitener().fit(_PATCHES[:1]), ValueError,
         r"X must have at least 2 rows .*got shape \(1, 4\)"),
        (lambda: ZCAWhitener().fit(np.ones((5, 3))), ValueError, r"X has zero variance"),
        (lambda: ZCAWhitener().fit(np.full((5, 3), np.nan)), ValueError, r"X must contain only"),
        (lambda: ZCAWhitener().fit(np.ones(5)), ValueError, r"X must have 2 dimension"),
        (lambda: ZCAWhitener().fit(_PATCHES * 1e200), ValueError, r"X .*overflows float64"),
    ],
    "ZCAWhitener.transform": [
        (lambda: ZCAWhitener().transform(_PATCHES), ValueError, r"not fitted: call fit\(X\)"),
        (lambda: _ZCA.transform(_PATCHES[:, :3]), ValueError, r"X must have 4 columns"),
        (lambda: _ZCA.transform(np.full((2, 4), np.inf)), ValueError, r"X must contain only"),
    ],
    "ZCAWhitener.inverse_transform": [
        (lambda: _ZCA.inverse_transform(_PATCHES[:, :3]), ValueError, r"Z must have 4 columns"),
        (lambda: _ZCA.inverse_transform(np.full((2, 4), np.nan)), ValueError,
         r"Z must contain only"),
    ],
    "binarize": [
        (lambda: binarize(np.array([0.5, np.nan]), 0), ValueError, r"x must contain only"),
        (lambda: binarize(np.array([1.5]), 0), ValueError, r"x must lie in \[0, 1\]"),
        (lambda: binarize(np.array([0.5]), None), TypeError, r"rng must be"),
        (lambda: binarize("abc", 0), TypeError, r"x must be numeric"),
    ],
    "split_indices": [
        (lambda: split_indices(2, 0), ValueError, r"n must be >= 3"),
        (lambda: split_indices(10.0, 0), TypeError, r"n must be an integer"),
        (lambda: split_indices(10, 0, val_fraction=np.nan), ValueError, r"val_fraction must be"),
        (lambda: split_indices(10, 0, test_fraction="a"), TypeError, r"test_fraction must be"),
        (lambda: split_indices(10, 0, 0.6, 0.5), ValueError, r"val_fraction \+ test_fraction"),
        (lambda: split_indices(4, 0, 0.4, 0.4), ValueError, r"n=4 is too small"),
    ],
    "load_digits_split": [
        (lambda: load_digits_split(None), TypeError, r"rng must be"),
        (lambda: load_digits_split(0, val_fraction=1.2), ValueError, r"val_fraction must be"),
    ],
    "load_image_split": [
        (lambda: load_image_split(None), TypeError, r"rng must be"),
        (lambda: load_image_split(0, mnist_dir=3), TypeError, r"mnist_dir must be a str"),
        (lambda: load_image_split(0, max_train=0), ValueError, r"max_train must be >= 1"),
        (lambda: load_image_split(0, max_train=2.5), TypeError, r"max_train must be an int"),
    ],
    "load_mnist_split": [
        (lambda: load_mnist_split(None, 0), TypeError, r"folder must be a str"),
        (lambda: load_mnist_split(".", 0, val_fraction="a"), TypeError, r"val_fraction must"),
        (lambda: load_mnist_split(".", 0, val_fraction=0.0), ValueError, r"val_fraction must"),
        (lambda: load_mnist_split(".", 0, max_train=-1), ValueError, r"max_train must be >= 1"),
        (lambda: load_mnist_split(".", "seed"), TypeError, r"rng must be"),
    ],
    "read_idx": [
        (lambda: read_idx(3), TypeError, r"path must be a str"),
        (lambda: read_idx(None), TypeError, r"path must be a str"),
    ],
    "random_patches": [
        (lambda: random_patches(np.ones((8, 8)), 0, 3, 0), ValueError, r"patch_size must be >= 1"),
        (lambda: random_patches(np.ones((8, 8)), 2, 0, 0), ValueError, r"num_patches must be >= 1"),
        (lambda: random_patches(np.ones((8, 8)), 9, 3, 0), ValueError, r"patch_size 9 does not"),
        (lambda: random_patches(np.ones((8, 8)), 2, 3, 0, rows=(5, 2)), ValueError,
         r"rows must be a pair \(start, stop\) with 0 <= start < stop <= 8, got \(5, 2\)"),
        (lambda: random_patches(np.ones((8, 8)), 2, 3, 0, rows=5), TypeError,
         r"rows must be a pair of ints"),
        (lambda: random_patches(np.ones((8, 8)), 2, 3, 0, cols=("a", 3)), TypeError,
         r"cols must be a pair of ints"),
        (lambda: random_patches(np.full((8, 8), np.nan), 2, 3, 0), ValueError, r"image must"),
        (lambda: random_patches(np.ones(8), 2, 3, 0), ValueError, r"image must have 2 dim"),
        (lambda: random_patches(np.ones((8, 8)), 2, 3, None), TypeError, r"rng must be"),
    ],
    "remove_dc": [
        (lambda: remove_dc(np.ones(3)), ValueError, r"X must have 2 dimension"),
        (lambda: remove_dc([[1.0, np.nan]]), ValueError, r"X must contain only finite"),
        (lambda: remove_dc("X"), TypeError, r"X must be numeric"),
    ],
}

EXTREME_INPUTS = {
    "remove_dc": [
        (lambda: remove_dc(np.array([[1e308, 1.5e308], [-1e308, -1.5e308]])),
         lambda out: (np.testing.assert_allclose(out[1], [1.25e308, -1.25e308]),
                      np.testing.assert_allclose(out[0], [[-0.25e308, 0.25e308],
                                                          [0.25e308, -0.25e308]]))),
    ],
    "ZCAWhitener.transform": [
        # whitening does not depend on the data's scale: c X whitens to the same Z
        (lambda: ZCAWhitener().fit(_PATCHES * 1e-200).transform(_PATCHES * 1e-200),
         lambda out: np.testing.assert_allclose(out, _ZCA.transform(_PATCHES), rtol=1e-8,
                                                atol=1e-10)),
        (lambda: ZCAWhitener().fit(_PATCHES * 1e150).transform(_PATCHES * 1e150),
         lambda out: np.testing.assert_allclose(out, _ZCA.transform(_PATCHES), rtol=1e-8,
                                                atol=1e-10)),
    ],
    "split_indices": [
        (lambda: split_indices(10**6, 0),
         lambda out: np.testing.assert_array_equal(np.sort(np.concatenate(out)),
                                                   np.arange(10**6))),
    ],
    "random_patches": [
        (lambda: random_patches(np.arange(12.0).reshape(3, 4) * 1e300, 3, 2, 0, cols=(1, 4)),
         lambda out: np.testing.assert_array_equal(
             out, np.tile(np.arange(12.0).reshape(3, 4)[:, 1:].ravel() * 1e300, (2, 1)))),
    ],
}


# ---------------------------------------------------------------------------------------
# issue 34: the second round of bad input
# ---------------------------------------------------------------------------------------
BAD_INPUTS["split_indices"] += [
    # 2**63 items returned three empty arrays
    (lambda: split_indices(2**63, 0), ValueError, r"n must be <= 2\*\*32 - 1"),
    (lambda: split_indices(10, -1), ValueError, r"rng must be .*>= 0, got -1"),
    (lambda: split_indices(10, 0, val_fraction=10**400), ValueError,
     r"val_fraction must be in \(0, 1\), got an integer of 401 digits"),
    (lambda: split_indices(10, 0, test_fraction=True), TypeError, r"test_fraction must be"),
]
BAD_INPUTS["binarize"] += [
    (lambda: binarize(np.array([0.5 + 0.1j]), 0), TypeError, r"x must be real"),
    (lambda: binarize(np.array([0.5]), -2), ValueError, r"rng must be .*>= 0"),
]
BAD_INPUTS["random_patches"] += [
    (lambda: random_patches(np.zeros((8, 8)), 2, 2**63, 0), ValueError,
     r"num_patches must be <= 2\*\*32 - 1"),
]
EXTREME_INPUTS["split_indices"] += [
    # NumPy integers are ints: the same split as the Python ints
    (lambda: (split_indices(np.int64(50), np.int64(3)), split_indices(50, 3)),
     lambda out: [np.testing.assert_array_equal(a, b) for a, b in zip(*out, strict=True)]),
]
