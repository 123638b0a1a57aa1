import matplotlib.pyplot as plt
import numpy as np
import pytest

from elbo_lib.plotting import (
    describe_figure,
    gaussian_ellipse,
    legend_overlaps,
    plot_mixture,
    set_theme,
    show,
    tile_images,
)


@pytest.fixture(autouse=True)
def _close():
    set_theme()
    yield
    plt.close("all")


def _figure(y):
    fig, ax = plt.subplots()
    ax.plot(np.arange(len(y)), y, label="trace")
    ax.scatter([0, 1, 2], [1, 2, 3], label="pts")
    ax.set(title="T", xlabel="iteration", ylabel="value", yscale="log")
    ax.legend(loc="upper left")
    return fig


def test_describe_figure_reports_labels_and_values():
    text = describe_figure(_figure([1.0, 2.0, 4.0]))
    assert "'T'" in text and "'iteration'" in text and "(log)" in text
    assert "line 'trace': 3 pts" in text and "last 4," in text and "max 4," in text
    assert "points 'pts': 3, mean [1, 2]" in text
    assert "legend: 'trace', 'pts'" in text


def test_describe_figure_changes_when_data_changes():
    assert describe_figure(_figure([1.0, 2.0, 4.0])) != describe_figure(_figure([1.0, 2.0, 4.001]))


def test_describe_figure_is_stable_below_precision():
    assert describe_figure(_figure([1.0, 2.0, 4.0])) == describe_figure(
        _figure([1.0, 2.0, 4.0 + 1e-12]))


def test_describe_figure_images_and_contours():
    fig, (a, b) = plt.subplots(1, 2)
    a.imshow(np.arange(6.0).reshape(2, 3))
    xx, yy = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    b.contour(xx, yy, xx**2 + yy**2, levels=4)
    text = describe_figure(fig)
    assert "image (2, 3): first 0, last 5, min 0, max 5, mean 2.5" in text
    # matplotlib's MaxNLocator picks 6 levels 0, 0.4, ..., 2 for levels=4 on data in [0, 2]
    assert "contours (unlabelled): 6 levels 0..2" in text


def test_describe_figure_bad_input():
    with pytest.raises(TypeError, match="Figure"):
        describe_figure("not a figure")


def test_show_prints_description(capsys):
    assert show(_figure([1.0, 3.0])) is None  # no execute_result when it ends a cell
    assert "line 'trace': 2 pts" in capsys.readouterr().out


def test_describe_figure_prints_round_off_relative_to_the_data_scale():
    # A zero-mean image: its mean is round-off whose last bits depend on the machine.
    img = np.array([[1.0, -1.0], [0.5, -0.5 + 1e-17]])
    fig, ax = plt.subplots()
    ax.imshow(img)
    assert "mean 0" in describe_figure(fig)
    fig2, ax2 = plt.subplots()
    ax2.imshow(img + np.array([[0, 0], [0, 3e-17]]))
    assert describe_figure(fig) == describe_figure(fig2)
    # ... but a real change at the 4th significant digit of the scale shows.
    fig3, ax3 = plt.subplots()
    ax3.imshow(img + np.array([[0, 0], [0, 1e-3]]))
    assert describe_figure(fig) != describe_figure(fig3)


def test_describe_figure_log_axis_keeps_small_values():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1.0, 1e-4, 1.234e-8], label="err")
    ax.set_yscale("log")
    assert "last 1.234e-08" in describe_figure(fig)


def test_describe_figure_empty_line():
    fig, ax = plt.subplots()
    ax.plot([], [], label="empty")
    assert "line 'empty': 0 pts; y no finite values; x none" in describe_figure(fig)


def _legend_figure(loc):
    fig, ax = plt.subplots()
    x = np.linspace(0, 1, 50)
    ax.plot(x, x, label="diagonal")
    ax.legend(loc=loc)
    return fig


def test_legend_overlap_detects_a_legend_on_the_line():
    # The diagonal runs from the lower-left to the upper-right corner.
    assert legend_overlaps(_legend_figure("upper left")) == []
    problems = legend_overlaps(_legend_figure("upper right"))
    assert len(problems) == 1 and "'diagonal'" in problems[0]


def test_legend_overlap_detects_a_segment_crossing_between_points():
    # Two points only, far apart: no vertex is under the legend, the segment is.
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.9, 0.9], label="flat")
    ax.plot([0, 1], [0, 0.05], label="low")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper center")
    assert any("'flat'" in p for p in legend_overlaps(fig))


def test_legend_overlap_scatter_and_outside_legend():
    fig, ax = plt.subplots()
    ax.scatter([0.95], [0.95], label="corner point")
    ax.scatter([0.0], [0.0], label="origin")
    ax.set(xlim=(-0.1, 1.05), ylim=(-0.1, 1.05))
    ax.legend(loc="upper right")
    assert any("'corner point'" in p for p in legend_overlaps(fig))
    fig2, ax2 = plt.subplots()
    ax2.scatter([0.95], [0.95], label="corner point")
    ax2.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    assert legend_overlaps(fig2) == []


def test_legend_overlap_checks_a_figure_legend_against_every_axes():
    # fig.legend with loc="center" sits over the middle of the axes, where the diagonal
    # runs: caught (a figure legend was not checked at all before).
    fig, ax = plt.subplots()
    x = np.linspace(0, 1, 50)
    ax.plot(x, x, label="diagonal")
    fig.legend(loc="center")
    problems = legend_overlaps(fig)
    assert len(problems) == 1 and "figure's legend" in problems[0] and "'diagonal'" in problems[0]
    # Beside the axes with constrained layout: nothing covered.
    fig2, ax2 = plt.subplots(layout="constrained")
    ax2.plot(x, x, label="diagonal")
    fig2.legend(loc="outside right center")
    assert legend_overlaps(fig2) == []


def test_legend_overlap_ignores_clipped_data_outside_the_axes():
    # A filled contour on a grid wider than the axes' limits: its vertices beyond the
    # limits are not drawn, so a legend beside the axes covers nothing ...
    fig, ax = plt.subplots()
    g = np.linspace(-6, 6, 41)
    ax.contourf(g, g, np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / 8), levels=5)
    ax.plot([-1, 1], [-1, 1], label="segment")
    ax.set(xlim=(-3, 3), ylim=(-3, 3))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    assert legend_overlaps(fig) == []
    # ... while the same legend inside the axes covers drawn contour vertices.
    ax.legend(loc="upper right")
    assert any("QuadContourSet" in p or "contour" in p.lower() or "unlabelled" in p
               for p in legend_overlaps(fig))


def test_show_refuses_a_legend_over_data():
    with pytest.raises(ValueError, match="legend over data"):
        show(_legend_figure("upper right"))
    show(_legend_figure("upper right"), check_legends=False)  # an explicit opt-out works


def test_gaussian_ellipse_axes_match_eigenvectors():
    fig, ax = plt.subplots()
    cov = np.array([[4.0, 0.0], [0.0, 1.0]])
    e = gaussian_ellipse(ax, [1.0, 2.0], cov, num_std=2.0)
    assert e.center == (1.0, 2.0)
    assert np.isclose(e.width, 8.0) and np.isclose(e.height, 4.0)
    assert np.isclose(e.angle % 180, 0.0)
    rot = gaussian_ellipse(ax, [0, 0], np.array([[1.0, 0.0], [0.0, 9.0]]), num_std=1.0)
    assert np.isclose(rot.width, 6.0) and np.isclose(rot.angle % 180, 90.0)


@pytest.mark.parametrize("mean, cov, msg", [
    ([0, 0, 0], np.eye(2), "shape"), ([0, 0], np.eye(3), "shape"),
    ([0, 0], -np.eye(2), "positive definite"), ([0, np.nan], np.eye(2), "finite"),
])
def test_gaussian_ellipse_bad_input(mean, cov, msg):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=msg):
        gaussian_ellipse(ax, mean, cov)


def test_describe_figure_has_no_decade_jump_at_a_saturated_maximum():
    # Probabilities that reach 1 on one CPU and 1 - 1e-16 on another.
    y = np.array([0.2, 0.4444444, 0.9, 1.0])
    fig, ax = plt.subplots()
    ax.plot(y, label="p")
    fig2, ax2 = plt.subplots()
    ax2.plot(y - np.array([0, 0, 0, 1e-16]), label="p")
    assert describe_figure(fig) == describe_figure(fig2)
    assert "mean 0.6361" in describe_figure(fig)


def test_tile_images_of_square_patches_with_nan_gaps():
    P = np.arange(5 * 4, dtype=float).reshape(5, 4)  # five 2x2 patches
    mosaic = tile_images(P, None, 3, pad=1, pad_value=np.nan)
    assert mosaic.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(mosaic[:2, 3:5], P[1].reshape(2, 2))
    np.testing.assert_array_equal(mosaic[3:5, 3:5], P[4].reshape(2, 2))
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[3:5, 6:8]).all()
    normalized = tile_images(P, None, 3, pad=0, pad_value=np.nan, normalize=True)
    assert normalized.shape == (4, 6)
    assert np.nanmax(np.abs(normalized)) == pytest.approx(1.0)


def test_tile_images_places_each_image():
    images = np.arange(5 * 6, dtype=float).reshape(5, 6) / 30   # five 2x3 images
    canvas = tile_images(images, (2, 3), num_cols=3, pad_value=-1.0)
    assert canvas.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(canvas[0:2, 0:3], images[0].reshape(2, 3))
    np.testing.assert_array_equal(canvas[3:5, 4:7], images[4].reshape(2, 3))
    assert np.all(canvas[3:5, 8:11] == -1.0)          # empty sixth cell
    assert np.all(canvas[2, :] == -1.0)                # gap row


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ((np.zeros((2, 5)), (2, 3), 2), {}, ValueError, "pixels"),
    ((np.zeros((2, 6)), [2, 3], 2), {}, TypeError, "image_shape"),
    ((np.zeros(6), (2, 3), 2), {}, ValueError, "dimension"),
    ((np.zeros((2, 6)), None, 2), {}, ValueError, "p\\*p columns"),
    ((np.zeros((2, 4)), None, 0), {}, ValueError, "num_cols"),
    ((np.zeros((2, 4)), None, 2), {"pad": -1}, ValueError, "pad"),
])
def test_tile_images_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        tile_images(*args, **kwargs)


def test_plot_mixture_colours_points_by_component_and_draws_ellipses():
    X = np.array([[0.0, 0.0], [0.1, 0.2], [5.0, 5.0], [5.2, 4.9]])
    means, cov = np.array([[0.0, 0.0], [5.0, 5.0]]), np.stack([np.eye(2)] * 2)
    fig, ax = plt.subplots()
    plot_mixture(ax, X, [0.5, 0.5], means, cov, title="t")
    colours = ax.collections[0].get_facecolors()
    assert np.allclose(colours[0], colours[1]) and not np.allclose(colours[0], colours[2])
    assert len(ax.patches) == 2 and ax.get_title() == "t"
    with pytest.raises(ValueError, match="2-D data"):
        plot_mixture(ax, np.zeros((4, 3)), [1.0], np.zeros((1, 3)), np.eye(3)[None])


# ------------------------------------------------------------------ contract (issue 16)
def _fig():
    return plt.subplots()


def _empty_line_figure():
    fig, ax = plt.subplots()
    ax.plot([], [], label="empty")
    ax.plot([0.0, 1.0], [0.0, 1.0], label="diagonal")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    return fig


_MIX = (np.array([[0.0, 0.0], [1.0, 1.0]]), [1.0], np.zeros((1, 2)), np.eye(2)[None])

# Contract cases (issue 16): every public name of elbo_lib.plotting has bad-input cases.
BAD_INPUTS = {
    "describe_figure": [
        (lambda: describe_figure("not a figure"), TypeError, r"fig must be a matplotlib Figure"),
        (lambda: describe_figure(_fig()[1]), TypeError, r"fig must be a matplotlib Figure, got"),
        (lambda: describe_figure(_fig()[0], digits=0), ValueError, r"digits must be >= 1"),
    ],
    "legend_overlaps": [
        (lambda: legend_overlaps(None), TypeError, r"fig must be a matplotlib Figure"),
        (lambda: legend_overlaps(_fig()[0], margin_px=np.nan), ValueError, r"margin_px must be"),
        (lambda: legend_overlaps(_fig()[0], margin_px="2"), TypeError, r"margin_px must be"),
    ],
    "show": [
        (lambda: show(None), TypeError, r"fig must be a matplotlib Figure, got NoneType"),
        (lambda: show(_fig()[1]), TypeError, r"fig must be a matplotlib Figure, got Axes"),
        (lambda: show(_fig()[0], digits=1.5), TypeError, r"digits must be an integer"),
    ],
    "gaussian_ellipse": [
        (lambda: gaussian_ellipse("ax", [0, 0], np.eye(2)), TypeError,
         r"ax must be a matplotlib Axes, got str"),
        (lambda: gaussian_ellipse(_fig()[0], [0, 0], np.eye(2)), TypeError,
         r"ax must be a matplotlib Axes, got Figure"),
        (lambda: gaussian_ellipse(_fig()[1], [0, 0, 0], np.eye(2)), ValueError,
         r"mean of shape \(2,\)"),
        (lambda: gaussian_ellipse(_fig()[1], [0, 0], np.eye(3)), ValueError, r"cov \(2, 2\)"),
        (lambda: gaussian_ellipse(_fig()[1], [0, 0], -np.eye(2)), ValueError,
         r"cov must be positive definite"),
        (lambda: gaussian_ellipse(_fig()[1], [0, 0], [[1.0, 0.5], [-0.5, 1.0]]), ValueError,
         r"cov must be symmetric"),
        (lambda: gaussian_ellipse(_fig()[1], [0, np.nan], np.eye(2)), ValueError,
         r"mean must contain only finite"),
        (lambda: gaussian_ellipse(_fig()[1], [0, 0], np.eye(2), num_std=0.0), ValueError,
         r"num_std must be a finite number > 0"),
    ],
    "plot_mixture": [
        (lambda: plot_mixture(None, *_MIX), TypeError, r"ax must be a matplotlib Axes, got None"),
        (lambda: plot_mixture(_fig()[0], *_MIX), TypeError, r"ax must be a matplotlib Axes"),
        (lambda: plot_mixture(_fig()[1], np.zeros((4, 3)), [1.0], np.zeros((1, 3)),
                              np.eye(3)[None]), ValueError, r"X must have 2 columns"),
        (lambda: plot_mixture(_fig()[1], *_MIX, labels=("x",)), ValueError,
         r"labels must be two axis labels"),
        (lambda: plot_mixture(_fig()[1], *_MIX, num_std=-1.0), ValueError, r"num_std must be"),
        (lambda: plot_mixture(_fig()[1], np.full((2, 2), np.nan), *_MIX[1:]), ValueError,
         r"X must contain only finite"),
    ],
    "tile_images": [
        (lambda: tile_images(np.zeros((2, 5)), (2, 3), 2), ValueError,
         r"images have 5 pixels, image_shape \(2, 3\) needs 6"),
        (lambda: tile_images(np.zeros((2, 6)), [2, 3], 2), TypeError, r"image_shape must be a"),
        (lambda: tile_images(np.zeros((2, 6)), (0, 6), 2), ValueError, r"image_shape\[0\] must"),
        (lambda: tile_images(np.zeros((2, 4)), None, 0), ValueError, r"num_cols must be >= 1"),
        (lambda: tile_images(np.zeros((2, 4)), None, 2, pad=-1), ValueError, r"pad must be >= 0"),
        (lambda: tile_images(np.zeros((2, 4)), None, 2, pad_value="grey"), TypeError,
         r"pad_value must be a real number"),
        (lambda: tile_images(np.full((2, 4), np.inf), None, 2), ValueError, r"images must"),
    ],
}

EXTREME_INPUTS = {
    "describe_figure": [
        (lambda: describe_figure(_empty_line_figure()),
         lambda out: (_assert_in("line 'empty': 0 pts; y no finite values; x none", out),
                      _assert_in("line 'diagonal': 2 pts", out))),
    ],
    "show": [
        (lambda: show(_empty_line_figure()), lambda out: _assert_is_none(out)),
    ],
    "gaussian_ellipse": [
        (lambda: gaussian_ellipse(_fig()[1], [1e-150, 0.0], np.diag([4e-300, 1e-300])),
         lambda e: np.testing.assert_allclose([e.width, e.height], [8e-150, 4e-150])),
        (lambda: gaussian_ellipse(_fig()[1], [1e150, 0.0], np.diag([1e300, 4e300])),
         lambda e: (np.testing.assert_allclose([e.width, e.height], [8e150, 4e150]),
                    np.testing.assert_allclose(e.angle % 180, 90.0))),
    ],
    "tile_images": [
        (lambda: tile_images(np.array([[1e300, -2e300, 0.0, 4e300]]), None, 1, normalize=True),
         lambda out: np.testing.assert_allclose(out, [[0.25, -0.5], [0.0, 1.0]])),
    ],
}


def _assert_in(needle, text):
    assert needle in text, f"{needle!r} not in {text!r}"


def _assert_is_none(value):
    assert value is None, value


def test_show_keeps_an_outside_legend_in_the_image(monkeypatch):
    """A figure legend placed past the figure's right edge (tight_layout does not move
    figure-level artists) must not be cropped at the save (issue 26): the image grows
    past the figure's own width instead (the old save cut it off at 4 in)."""
    import base64

    import matplotlib as mpl
    from IPython import display as ipy_display

    from elbo_lib import plotting

    shown = []
    monkeypatch.setattr(plotting, "_in_ipython_kernel", lambda: True)
    monkeypatch.setattr(ipy_display, "display",
                        lambda data, raw, metadata: shown.append((data, metadata)))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], label="a rather long legend entry")
    ax.set_title("a title")
    fig.legend(loc="center left", bbox_to_anchor=(0.98, 0.5))
    plotting.show(fig)
    data, metadata = shown[0]
    png = base64.b64decode(data["image/png"])
    dpi = float(mpl.rcParams["figure.dpi"])
    pixel_width = plotting._png_width(png)
    assert pixel_width > 4 * 2 * dpi + 50   # the legend is in the image
    assert metadata["image/png"]["width"] == round(pixel_width / 2)


def test_show_keeps_a_title_wider_than_the_figure_in_the_image(monkeypatch):
    """A title that runs past both edges of the figure (issue 33: the first letters of
    Figs. 1.1, 1.6 and 2.4 were cut off) is in the saved image whole: the image is at
    least as wide as the title's own extent at the save's resolution (a save that crops
    to the figure's 4 in would be narrower)."""
    import base64

    import matplotlib as mpl
    from IPython import display as ipy_display

    from elbo_lib import plotting

    shown = []
    monkeypatch.setattr(plotting, "_in_ipython_kernel", lambda: True)
    monkeypatch.setattr(ipy_display, "display",
                        lambda data, raw, metadata: shown.append((data, metadata)))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    title = ax.set_title("W" * 60)   # centred on the axes: past the left and right edges
    dpi = float(mpl.rcParams["figure.dpi"])
    fig.set_dpi(2 * dpi)             # measure the title at the save's resolution
    title_width = title.get_window_extent(fig.canvas.get_renderer()).width
    fig.set_dpi(dpi)
    assert title_width > 4 * 2 * dpi    # the test's premise: wider than the figure
    plotting.show(fig, check_legends=False)
    png = base64.b64decode(shown[0][0]["image/png"])
    assert plotting._png_width(png) >= title_width
