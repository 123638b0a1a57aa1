"""The book's one figure style, and a text summary of every figure.

Every chapter calls :func:`set_theme` once. Every cell that draws a figure ends with
:func:`show`, which displays the figure with :func:`describe_figure` (the titles,
labels and rounded key values of what the figure plots) as the output's ``text/plain``.
The tests compare text but not pixels, so this summary is what makes a change in a
figure's data fail them; readers see only the picture. :func:`show` also refuses a
figure whose legend covers plotted data (:func:`legend_overlaps`).

It is the only module that draws: :func:`gaussian_ellipse`, :func:`plot_mixture` (the
mixture figures of chapter 2) and :func:`tile_images` (the image mosaics of chapters 3
and 6) live here, and no other module imports matplotlib.
"""

from __future__ import annotations

import base64
import io
from numbers import Real

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import Collection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch

from elbo_lib._validation import (
    as_float_array,
    check_positive,
    check_positive_int,
    check_real,
    check_spd,
)
from elbo_lib.em import gmm_responsibilities
from elbo_lib.reporting import fmt

__all__ = [
    "COLORS",
    "PALETTE",
    "describe_figure",
    "gaussian_ellipse",
    "legend_overlaps",
    "plot_mixture",
    "set_theme",
    "show",
    "tile_images",
]

#: The book's palette (colour-blind safe) and a few named roles used across chapters.
PALETTE = "colorblind"
COLORS = dict(zip(("q", "exact", "data", "bound", "extra", "prior"),
                  sns.color_palette(PALETTE, 6), strict=True))


def set_theme() -> None:
    """Apply the book's seaborn theme (whitegrid, notebook context, colour-blind palette).

    Called once at the top of every chapter. Idempotent.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.2),
        "figure.dpi": 90,
        "savefig.dpi": 110,
        "axes.titlesize": "medium",
        "axes.titleweight": "bold",
        "legend.frameon": True,
        "legend.framealpha": 0.9,
        "image.cmap": "viridis",
    })


def _fmt_scaled(x: float, scale: float, digits: int) -> str:
    """Format ``x`` to ``digits`` significant digits *of ``scale``* (not of ``x``).

    ``x`` is rounded to a multiple of ``10**(e - digits)``, where ``10**e`` is the power
    of ten *nearest* to ``scale`` (in log terms), then printed with ``digits``
    significant digits. A value far below the data's scale (the mean of a zero-mean
    image, 1e-17 on data of scale 1) is round-off and prints as 0 on every machine.
    The quantum changes only where ``scale`` crosses ``10**(k + 1/2)`` (3.16, 31.6,
    0.316, ...), not at powers of ten, so data that saturate at 1 (probabilities) or 10
    print the same whether their maximum is ``1.0`` on one CPU or ``1 - 1e-16`` on
    another.
    """
    if not np.isfinite(x):
        return str(x)
    if scale <= 0 or not np.isfinite(scale):
        return fmt(x, digits)
    quantum = 10.0 ** (np.floor(np.log10(scale) + 0.5) - digits)
    return fmt(np.round(x / quantum) * quantum, digits)


def _stats(values: np.ndarray, digits: int, log: bool = False) -> str:
    """First, last, min, max and mean of the finite values, at the data's precision.

    On a linear axis every number is rounded relative to the largest magnitude in
    ``values`` (:func:`_fmt_scaled`); on a log axis each to its own significant digits.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "no finite values"
    if log:
        def f(v):
            return fmt(v, digits)
    else:
        scale = float(np.max(np.abs(values)))

        def f(v):
            return _fmt_scaled(float(v), scale, digits)
    return (f"first {f(values[0])}, last {f(values[-1])}, "
            f"min {f(values.min())}, max {f(values.max())}, mean {f(values.mean())}")


def _range(values: np.ndarray, digits: int) -> str:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "none"
    scale = float(np.max(np.abs(values)))
    return f"{_fmt_scaled(values.min(), scale, digits)}..{_fmt_scaled(values.max(), scale, digits)}"


def describe_figure(fig: Figure, digits: int = 4) -> str:
    """Summarise what a figure plots, as stable text.

    For each axes: title, axis labels and scales; for each line its label, number of
    points and rounded statistics of its y values (and of x); for scatter and other
    collections the number of points and their mean position; for images the shape
    and value range; the legend entries.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to describe.
    digits : int
        Significant digits of every number (default 4).

    Returns
    -------
    str
        One line per artist, indented under its axes.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    digits = check_positive_int(digits, "digits")
    out = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or (ax.get_label() == "<colorbar>"):
            continue
        title = ax.get_title() or "(no title)"
        out.append(f"axes {i}: {title!r}; x: {ax.get_xlabel()!r} ({ax.get_xscale()}), "
                   f"y: {ax.get_ylabel()!r} ({ax.get_yscale()})")
        for line in ax.get_lines():
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            label = str(line.get_label() or "")
            label = "(unlabelled)" if label.startswith("_") else repr(label)
            out.append(f"  line {label}: {y.size} pts; "
                       f"y {_stats(y, digits, ax.get_yscale() == 'log')}; "
                       f"x {_range(x, digits)}")
        for coll in ax.collections:
            if not isinstance(coll, Collection):
                continue
            offsets = np.asarray(coll.get_offsets(), float)
            label = str(coll.get_label() or "")
            label = "(unlabelled)" if label.startswith("_") else repr(label)
            if hasattr(coll, "levels") and getattr(coll, "levels", None) is not None:
                lv = np.asarray(coll.levels, float)
                out.append(f"  contours {label}: {lv.size} levels {_range(lv, digits)}")
            elif offsets.ndim == 2 and offsets.shape[0] > 1:
                finite = offsets[np.isfinite(offsets).all(axis=1)]
                if finite.size == 0:
                    out.append(f"  points {label}: {offsets.shape[0]}, none finite")
                    continue
                mean = ", ".join(_fmt_scaled(m, float(np.max(np.abs(finite[:, j]),
                                                             initial=0.0)), digits)
                                 for j, m in enumerate(finite.mean(axis=0)))
                out.append(f"  points {label}: {offsets.shape[0]}, mean [{mean}]")
            else:
                out.append(f"  {type(coll).__name__} {label}: {len(coll.get_paths())} paths")
        for im in ax.get_images():
            if isinstance(im, AxesImage):
                arr = np.asarray(im.get_array(), float)
                out.append(f"  image {arr.shape}: {_stats(arr, digits)}")
        n_patches = sum(1 for p in ax.patches if p.get_visible())
        if n_patches:
            out.append(f"  patches: {n_patches}")
        legend = ax.get_legend()
        if legend is not None:
            out.append("  legend: " + ", ".join(repr(t.get_text()) for t in legend.get_texts()))
    return "\n".join(out)


def _display_points(artist, ax) -> np.ndarray:
    """Display coordinates of the data an artist draws, densified along line segments."""
    if isinstance(artist, Line2D):
        xy = np.column_stack([np.asarray(artist.get_xdata(), float),
                              np.asarray(artist.get_ydata(), float)])
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) == 0:
            return np.empty((0, 2))
        pts = artist.get_transform().transform(xy)
        if artist.get_linestyle() in ("None", "none", "", " ") or len(pts) < 2:
            return pts
        # Points every ~2 px along each segment, so that a line crossing the legend
        # between two data points is caught too.
        seg = np.diff(pts, axis=0)
        n = np.clip(np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / 2.0).astype(int), 1, 400)
        parts = [pts[i] + np.linspace(0, 1, k, endpoint=False)[:, None] * seg[i]
                 for i, k in enumerate(n)]
        return np.vstack([*parts, pts[-1:]])
    if isinstance(artist, Collection):
        offsets = np.asarray(artist.get_offsets(), float)
        if offsets.ndim == 2 and len(offsets) and len(artist.get_paths()) <= 1:
            offsets = offsets[np.isfinite(offsets).all(axis=1)]
            return artist.get_offset_transform().transform(offsets)
        trans = artist.get_transform()
        verts = [p.vertices for p in artist.get_paths() if len(p.vertices)]
        if not verts:
            return np.empty((0, 2))
        v = np.vstack(verts)
        v = v[np.isfinite(v).all(axis=1)]
        return trans.transform(v)
    if isinstance(artist, Patch):
        path = artist.get_path().interpolated(16)
        return artist.get_transform().transform(path.vertices)
    return np.empty((0, 2))


def legend_overlaps(fig: Figure, margin_px: float = 2.0) -> list[str]:
    """Describe every place where a legend covers drawn data.

    Lines (sampled every ~2 px along their segments), scatter points, the vertices of
    other collections (contours, bands) and patches (ellipses, bars) are tested against
    each legend's box shrunk by ``margin_px``: an axes' legend against that axes' data,
    a figure legend (``fig.legend``) against every axes' data. Only what is drawn counts:
    a clipped artist's points outside its axes (a contour grid wider than the limits)
    are not data a legend beside the axes covers. Images are not data a legend can avoid
    and are ignored.

    Returns
    -------
    list of str
        One message per (legend, artist) overlap; empty when no legend covers data.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    margin_px = check_real(margin_px, "margin_px")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pairs = [(ax.get_legend(), i, ax, "the legend") for i, ax in enumerate(fig.axes)]
    pairs += [(legend, i, ax, "the figure's legend") for legend in fig.legends
              for i, ax in enumerate(fig.axes)]
    problems = []
    for legend, i, ax, which in pairs:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        x0, y0 = box.x0 + margin_px, box.y0 + margin_px
        x1, y1 = box.x1 - margin_px, box.y1 - margin_px
        frame = ax.get_window_extent(renderer)
        artists = [*ax.get_lines(), *ax.collections,
                   *(p for p in ax.patches if p.get_visible())]
        for artist in artists:
            if not artist.get_visible():
                continue
            pts = _display_points(artist, ax)
            if pts.size == 0:
                continue
            inside = ((pts[:, 0] > x0) & (pts[:, 0] < x1)
                      & (pts[:, 1] > y0) & (pts[:, 1] < y1))
            if artist.get_clip_on():  # drawn only inside the axes
                inside &= ((pts[:, 0] >= frame.x0) & (pts[:, 0] <= frame.x1)
                           & (pts[:, 1] >= frame.y0) & (pts[:, 1] <= frame.y1))
            if inside.any():
                label = str(artist.get_label() or "")
                label = (repr(label) if label and not label.startswith("_")
                         else f"an unlabelled {type(artist).__name__}")
                problems.append(f"axes {i} ({ax.get_title()!r}): {which} covers "
                                f"{int(inside.sum())} drawn point(s) of {label}")
    return problems


def _in_ipython_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the book's kernel
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def show(fig: Figure, digits: int = 4, *, check_legends: bool = True) -> None:
    """Lay out ``fig``, check it, and display it with its data summary attached.

    Use as the last line of every figure cell. In a notebook the figure is displayed as
    one output whose ``image/png`` (rendered at twice the screen resolution, shown at
    its natural size) is what readers see and whose ``text/plain`` is
    :func:`describe_figure`: the tests compare that text, readers never see it.
    Outside a notebook the summary is printed.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    digits : int
        Significant digits of the summary's numbers.
    check_legends : bool
        Raise if a legend covers plotted data (:func:`legend_overlaps`).

    Returns nothing, so that ``show(fig)`` as a cell's last line adds no second output
    (use :func:`describe_figure` for the summary as a string).

    Raises
    ------
    ValueError
        If ``check_legends`` and a legend covers data; the message says where.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not fig.get_constrained_layout():
        fig.tight_layout()
    summary = describe_figure(fig, digits)
    if check_legends:
        problems = legend_overlaps(fig)
        if problems:
            plt.close(fig)
            raise ValueError("legend over data; move it (loc=..., bbox_to_anchor=...):\n"
                             + "\n".join(problems))
    if _in_ipython_kernel():
        from IPython.display import display

        buf = io.BytesIO()
        dpi = float(mpl.rcParams["figure.dpi"])
        # the tight box grows to every artist: a title or legend past the figure's
        # edge is kept in the image instead of being cut off at the save
        fig.savefig(buf, format="png", dpi=2 * dpi, bbox_inches="tight", pad_inches=0.04)
        width = int(round(_png_width(buf.getvalue()) / 2))
        display({"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
                 "text/plain": summary},
                raw=True, metadata={"image/png": {"width": width}})
    else:
        print(summary)
    plt.close(fig)


def _png_width(png: bytes) -> int:
    """Pixel width of a PNG image, read from its IHDR chunk."""
    return int.from_bytes(png[16:20], "big")


def _check_axes(ax) -> None:
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")


def gaussian_ellipse(ax, mean, cov, num_std: float = 2.0, **kwargs) -> Ellipse:
    """Draw the ``num_std``-standard-deviation ellipse of a 2-D Gaussian on ``ax``.

    Used for mixture components (chapters 2 and 4). Extra keyword arguments go to
    :class:`matplotlib.patches.Ellipse` (default: unfilled, line width 2).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    mean : array_like, shape (2,)
    cov : array_like, shape (2, 2)
        Symmetric positive-definite covariance.
    num_std : float
        Radius in standard deviations (Mahalanobis distance), > 0.

    Returns
    -------
    matplotlib.patches.Ellipse
    """
    _check_axes(ax)
    mean = as_float_array(mean, "mean", ndim=1)
    cov = as_float_array(cov, "cov", ndim=2)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"need mean of shape (2,) and cov (2, 2), got {mean.shape}, {cov.shape}")
    num_std = check_positive(num_std, "num_std")
    cov, _ = check_spd(cov, "cov")
    eigvals, eigvecs = np.linalg.eigh(cov)
    if eigvals[0] <= 0:
        raise ValueError("cov must be positive definite")
    angle = float(np.degrees(np.arctan2(eigvecs[1, -1], eigvecs[0, -1])))
    width, height = 2 * num_std * np.sqrt(eigvals[::-1])
    kwargs = {"fill": False, "linewidth": 2, **kwargs}
    patch = Ellipse(xy=tuple(mean), width=width, height=height, angle=angle, **kwargs)
    ax.add_patch(patch)
    return patch


def plot_mixture(ax, X, weights, means, covariances, *, title: str = "",
                 labels=("x1", "x2"), num_std: float = 2.0):
    """Scatter 2-D data coloured by their most probable component, with 2-sd ellipses.

    Used for the figures of chapter 2 (the clustering as EM runs). Points take the
    colour of argmax_k r_ik (:func:`elbo_lib.em.gmm_responsibilities`); each component
    is drawn as the ellipse of :func:`gaussian_ellipse` and a cross at its mean.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    X : array_like, shape (n, 2)
    weights, means, covariances
        A 2-D mixture (K,), (K, 2), (K, 2, 2).
    title : str
    labels : tuple of str
        Axis labels.
    num_std : float
        Ellipse radius in standard deviations.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If the data are not 2-D or the mixture is malformed.
    """
    _check_axes(ax)
    X = as_float_array(X, "X", ndim=2)
    if X.shape[1] != 2:
        raise ValueError(f"X must have 2 columns (plot_mixture draws 2-D data), "
                         f"got shape {X.shape}")
    if (not isinstance(labels, tuple | list) or len(labels) != 2
            or not all(isinstance(v, str) for v in labels)):
        raise ValueError(f"labels must be two axis labels (str, str), got {labels!r}")
    hard = gmm_responsibilities(X, weights, means, covariances).argmax(axis=1)
    means = as_float_array(means, "means", ndim=2)
    cov = as_float_array(covariances, "covariances", ndim=3)
    colors = sns.color_palette(PALETTE, len(means))
    ax.scatter(X[:, 0], X[:, 1], c=[colors[k] for k in hard], s=14, alpha=0.6,
               edgecolors="none", label="data (colour = argmax r)")
    for k in range(len(means)):
        gaussian_ellipse(ax, means[k], cov[k], num_std=num_std, color=colors[k])
    ax.scatter(means[:, 0], means[:, 1], marker="x", s=80, c="black", label="means")
    ax.set(title=title, xlabel=labels[0], ylabel=labels[1])
    return ax


def tile_images(images, image_shape: tuple[int, int] | None, num_cols: int, *, pad: int = 1,
                pad_value: float = 0.3, normalize: bool = False) -> np.ndarray:
    """Arrange flattened images (or patches, or dictionary atoms) in one mosaic array.

    One mosaic is one ``imshow`` (and one line of :func:`describe_figure`) rather than
    dozens of tiny axes. Used by chapter 3 for patches and atoms and by chapter 6 for
    reconstructions, samples, the learned manifold and interpolations.

    Parameters
    ----------
    images : array_like, shape (n, height * width)
        One flattened image (row-major) per row; for a dictionary W of shape (d, k) pass
        ``W.T``.
    image_shape : (int, int) or None
        ``(height, width)``; None means square images.
    num_cols : int
        Images per row; the last row is padded with ``pad_value``.
    pad : int
        Pixels of separation between images (>= 0).
    pad_value : float
        Value of the gaps and of empty cells. 0.3 is light grey under the reversed grey
        colour map of chapter 6, so gaps are visible next to both ink and paper;
        ``numpy.nan`` is drawn as background by ``imshow`` (chapter 3).
    normalize : bool
        Scale each image by its own maximum absolute value, so that every tile spans
        [-1, 1] and zero is mid-grey (the usual way of showing atoms).

    Returns
    -------
    numpy.ndarray, shape (rows * (height + pad) - pad, num_cols * (width + pad) - pad)

    Raises
    ------
    TypeError
        If ``image_shape`` is not a tuple of two ints (or None).
    ValueError
        If the images do not have ``height * width`` pixels (a square number when
        ``image_shape`` is None).
    """
    images = as_float_array(images, "images", ndim=2)
    if image_shape is None:
        side = int(round(np.sqrt(images.shape[1])))
        if side * side != images.shape[1]:
            raise ValueError(f"images must have p*p columns when image_shape is None, "
                             f"got shape {images.shape}")
        image_shape = (side, side)
    if not isinstance(image_shape, tuple) or len(image_shape) != 2:
        raise TypeError(f"image_shape must be a tuple (height, width), got {image_shape!r}")
    h = check_positive_int(image_shape[0], "image_shape[0]")
    w = check_positive_int(image_shape[1], "image_shape[1]")
    if images.shape[1] != h * w:
        raise ValueError(f"images have {images.shape[1]} pixels, image_shape {image_shape} "
                         f"needs {h * w}")
    num_cols = check_positive_int(num_cols, "num_cols")
    pad = check_positive_int(pad, "pad", minimum=0)
    if isinstance(pad_value, bool) or not isinstance(pad_value, Real | np.floating):
        raise TypeError(f"pad_value must be a real number (NaN allowed), "
                        f"got {type(pad_value).__name__}")
    if normalize:
        images = images / np.maximum(np.abs(images).max(axis=1, keepdims=True),
                                     np.finfo(float).tiny)
    n = len(images)
    n_rows = -(-n // num_cols)
    cells = np.full((n_rows * num_cols, h, w), pad_value)
    cells[:n] = images.reshape(n, h, w)
    canvas = np.full((n_rows, h + pad, num_cols, w + pad), pad_value)
    canvas[:, :h, :, :w] = cells.reshape(n_rows, num_cols, h, w).transpose(0, 2, 1, 3)
    canvas = canvas.reshape(n_rows * (h + pad), num_cols * (w + pad))
    return canvas[: canvas.shape[0] - pad, : canvas.shape[1] - pad]
