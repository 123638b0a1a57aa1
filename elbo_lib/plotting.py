"""The book's one figure style, and a text summary of every figure.

Every chapter calls :func:`set_theme` once. Every cell that draws a figure ends with
:func:`show`, which prints :func:`describe_figure`: the titles, labels and rounded
key values of what the figure plots. nbval compares text but not pixels, so this
printed summary is what makes a change in a figure's data fail the tests.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.collections import Collection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Ellipse

from elbo_lib._validation import as_float_array, check_positive, check_positive_int
from elbo_lib.reporting import fmt, fmt_array

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


def _stats(values: np.ndarray, digits: int) -> str:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "no finite values"
    return (f"first {fmt(values[0], digits)}, last {fmt(values[-1], digits)}, "
            f"min {fmt(values.min(), digits)}, max {fmt(values.max(), digits)}, "
            f"mean {fmt(values.mean(), digits)}")


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
            label = line.get_label()
            label = "(unlabelled)" if label.startswith("_") else repr(label)
            out.append(f"  line {label}: {y.size} pts; y {_stats(y, digits)}; "
                       f"x {fmt(np.nanmin(x), digits)}..{fmt(np.nanmax(x), digits)}")
        for coll in ax.collections:
            if not isinstance(coll, Collection):
                continue
            offsets = np.asarray(coll.get_offsets(), float)
            label = coll.get_label()
            label = "(unlabelled)" if label.startswith("_") else repr(label)
            if hasattr(coll, "levels") and getattr(coll, "levels", None) is not None:
                lv = np.asarray(coll.levels, float)
                out.append(f"  contours {label}: {lv.size} levels "
                           f"{fmt(lv.min(), digits)}..{fmt(lv.max(), digits)}")
            elif offsets.ndim == 2 and offsets.shape[0] > 1:
                out.append(f"  points {label}: {offsets.shape[0]}, mean "
                           f"{fmt_array(offsets.mean(axis=0), digits)}")
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


def show(fig: Figure, digits: int = 4) -> None:
    """Lay out ``fig``, print :func:`describe_figure` and display it.

    Use as the last line of every figure cell so that the figure's numbers are
    compared by nbval.
    """
    fig.tight_layout()
    print(describe_figure(fig, digits))
    plt.show()


def gaussian_ellipse(ax, mean, cov, n_std: float = 2.0, **kwargs) -> Ellipse:
    """Draw the ``n_std``-standard-deviation ellipse of a 2-D Gaussian on ``ax``.

    Used for mixture components (chapters 2 and 4). Extra keyword arguments go to
    :class:`matplotlib.patches.Ellipse` (default: unfilled, line width 2).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    mean : array_like, shape (2,)
    cov : array_like, shape (2, 2)
        Symmetric positive-definite covariance.
    n_std : float
        Radius in standard deviations (Mahalanobis distance), > 0.

    Returns
    -------
    matplotlib.patches.Ellipse
    """
    mean = as_float_array(mean, "mean", ndim=1)
    cov = as_float_array(cov, "cov", ndim=2)
    if mean.shape != (2,) or cov.shape != (2, 2):
        raise ValueError(f"need mean of shape (2,) and cov (2, 2), got {mean.shape}, {cov.shape}")
    n_std = check_positive(n_std, "n_std")
    eigvals, eigvecs = np.linalg.eigh(0.5 * (cov + cov.T))
    if eigvals[0] <= 0:
        raise ValueError("cov must be positive definite")
    angle = float(np.degrees(np.arctan2(eigvecs[1, -1], eigvecs[0, -1])))
    width, height = 2 * n_std * np.sqrt(eigvals[::-1])
    kwargs = {"fill": False, "linewidth": 2, **kwargs}
    patch = Ellipse(xy=tuple(mean), width=width, height=height, angle=angle, **kwargs)
    ax.add_patch(patch)
    return patch
