import matplotlib.pyplot as plt
import numpy as np
import pytest

from elbo_lib.plotting import describe_figure, gaussian_ellipse, set_theme, show


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
    ax.legend()
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
    assert "image (2, 3): first 0, last 5" in text
    assert "contours" in text and "levels" in text


def test_describe_figure_bad_input():
    with pytest.raises(TypeError, match="Figure"):
        describe_figure("not a figure")


def test_show_prints_description(capsys):
    show(_figure([1.0, 3.0]))
    assert "line 'trace': 2 pts" in capsys.readouterr().out


def test_gaussian_ellipse_axes_match_eigenvectors():
    fig, ax = plt.subplots()
    cov = np.array([[4.0, 0.0], [0.0, 1.0]])
    e = gaussian_ellipse(ax, [1.0, 2.0], cov, n_std=2.0)
    assert e.center == (1.0, 2.0)
    assert np.isclose(e.width, 8.0) and np.isclose(e.height, 4.0)
    assert np.isclose(e.angle % 180, 0.0)
    rot = gaussian_ellipse(ax, [0, 0], np.array([[1.0, 0.0], [0.0, 9.0]]), n_std=1.0)
    assert np.isclose(rot.width, 6.0) and np.isclose(rot.angle % 180, 90.0)


@pytest.mark.parametrize("mean, cov, msg", [
    ([0, 0, 0], np.eye(2), "shape"), ([0, 0], np.eye(3), "shape"),
    ([0, 0], -np.eye(2), "positive definite"), ([0, np.nan], np.eye(2), "finite"),
])
def test_gaussian_ellipse_bad_input(mean, cov, msg):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=msg):
        gaussian_ellipse(ax, mean, cov)
