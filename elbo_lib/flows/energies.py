"""Rezende & Mohamed's (2015) 2-D test densities and a square quadrature grid for their
normalisers and for KL(q || p) (chapter 7)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from elbo_lib._validation import as_numeric_array, check_positive, check_positive_int
from elbo_lib.flows.transforms import _check_tensor

__all__ = [
    "Grid2D",
    "log_density_u1",
    "log_density_u2",
    "log_density_u3",
    "log_density_u4",
    "square_grid",
]


# --------------------------------------------------------------------------------------
# 2-D test densities (Rezende & Mohamed 2015, table 1) and quadrature
# --------------------------------------------------------------------------------------
def _check_points(z) -> torch.Tensor:
    z = _check_tensor(z, "z", min_dim=1, check_finite=True)
    if z.shape[-1] != 2:
        raise ValueError(f"z must have last dimension 2, got shape {tuple(z.shape)}")
    return z


def _confine(z: torch.Tensor, confine: float | None) -> torch.Tensor:
    if confine is None:
        return torch.zeros_like(z[..., 0])
    confine = check_positive(confine, "confine")
    return -0.5 * (z[..., 0] / confine) ** 2


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _split_wave(z: torch.Tensor, shift: torch.Tensor, width: float,
                confine: float | None) -> torch.Tensor:
    """log(exp(-1/2 ((z2 - w1) / width)^2) + exp(-1/2 ((z2 - w1 + shift) / 0.35)^2))."""
    w1 = _w1(z)
    out = torch.logaddexp(-0.5 * ((z[..., 1] - w1) / width) ** 2,
                          -0.5 * ((z[..., 1] - w1 + shift) / 0.35) ** 2)
    return out + _confine(z, confine)


def log_density_u1(z: torch.Tensor) -> torch.Tensor:
    """-U1(z): the ring with two lobes of Rezende & Mohamed (2015, table 1), unnormalised.

    U1(z) = 1/2 ((|z| - 2) / 0.4)^2 - log(exp(-1/2 ((z1 - 2) / 0.6)^2)
    + exp(-1/2 ((z1 + 2) / 0.6)^2)). Integrable over R^2. Chapter 7.

    Parameters
    ----------
    z : torch.Tensor, shape (..., 2)

    Returns
    -------
    torch.Tensor, shape (...)
    """
    z = _check_points(z)
    ring = -0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    lobes = torch.logaddexp(-0.5 * ((z[..., 0] - 2) / 0.6) ** 2,
                            -0.5 * ((z[..., 0] + 2) / 0.6) ** 2)
    return ring + lobes


def log_density_u2(z: torch.Tensor, confine: float | None = None) -> torch.Tensor:
    """-U2(z) = -1/2 ((z2 - w1(z)) / 0.4)^2, w1(z) = sin(2 pi z1 / 4): the wave.

    Rezende & Mohamed (2015, table 1). Every vertical slice has the same mass, so the
    density is integrable only with ``confine``: a factor exp(-z1^2 / (2 confine^2)).
    Chapter 7.

    Parameters
    ----------
    z : torch.Tensor, shape (..., 2)
    confine : float, optional
        Standard deviation of the Gaussian factor in z1 (> 0), or None.
    """
    z = _check_points(z)
    return -0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2 + _confine(z, confine)


def log_density_u3(z: torch.Tensor, confine: float | None = None) -> torch.Tensor:
    """-U3(z): the wave split in two where w2(z) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2) is large.

    U3 = -log(exp(-1/2 ((z2 - w1) / 0.35)^2) + exp(-1/2 ((z2 - w1 + w2) / 0.35)^2))
    (Rezende & Mohamed 2015, table 1); ``confine`` as in :func:`log_density_u2`.
    Chapter 7.
    """
    z = _check_points(z)
    shift = 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)
    return _split_wave(z, shift, 0.35, confine)


def log_density_u4(z: torch.Tensor, confine: float | None = None) -> torch.Tensor:
    """-U4(z): the wave split by a step, w3(z) = 3 sigmoid((z1 - 1) / 0.3).

    U4 = -log(exp(-1/2 ((z2 - w1) / 0.4)^2) + exp(-1/2 ((z2 - w1 + w3) / 0.35)^2))
    (Rezende & Mohamed 2015, table 1); ``confine`` as in :func:`log_density_u2`.
    Chapter 7.
    """
    z = _check_points(z)
    return _split_wave(z, 3 * torch.sigmoid((z[..., 0] - 1) / 0.3), 0.4, confine)


@dataclass(frozen=True)
class Grid2D:
    """A square grid of m x m points for 2-D quadrature (see :func:`square_grid`).

    Attributes
    ----------
    axis : torch.Tensor, shape (m,)
        The coordinates along each axis.
    points : torch.Tensor, shape (m * m, 2)
        All points, first coordinate varying slowest (``reshape(m, m)`` gives [i, j] =
        (axis[i], axis[j])).
    cell_area : float
        h^2, the area per point.
    """

    axis: torch.Tensor
    points: torch.Tensor
    cell_area: float

    def __post_init__(self) -> None:
        axis = _check_tensor(self.axis, "axis", min_dim=1, check_finite=True)
        if axis.dim() != 1 or axis.numel() < 2:
            raise ValueError(f"axis must be 1-D with >= 2 points, got shape {tuple(axis.shape)}")
        points = _check_tensor(self.points, "points", min_dim=2, check_finite=True)
        if tuple(points.shape) != (axis.numel() ** 2, 2):
            raise ValueError(f"points must have shape ({axis.numel() ** 2}, 2), got "
                             f"{tuple(points.shape)}")
        check_positive(self.cell_area, "cell_area")

    def _values(self, values, name: str = "values", allow: str = "") -> torch.Tensor:
        """``values`` (one per point) as a float64 tensor, converted at the boundary
        (:func:`~elbo_lib._validation.as_numeric_array`), NaN refused, and -inf / +inf
        only where ``allow`` holds "-" / "+"."""
        values = torch.from_numpy(as_numeric_array(values, name)).reshape(-1)
        if values.numel() != self.points.shape[0]:
            raise ValueError(f"{name} must have {self.points.shape[0]} entries, "
                             f"got {values.numel()}")
        bad = torch.isnan(values)
        if "-" not in allow:
            bad |= values == -math.inf
        if "+" not in allow:
            bad |= values == math.inf
        if bool(bad.any()):
            allowed = {"": "finite", "-": "finite or -inf",
                       "-+": "non-NaN"}[allow]
            raise ValueError(f"{name} must be {allowed}, got {int(bad.sum())} other "
                             f"value(s), e.g. {float(values[bad][0])!r}")
        return values

    def log_integral(self, log_values: torch.Tensor) -> float:
        """log of the integral of exp(log_values) over the square (Riemann sum).

        For a smooth integrand that is negligible at the edges the sum converges very
        fast (it is then the trapezoidal rule). ``log_values`` may hold -inf (zero
        density), not NaN or +inf.
        """
        log_values = self._values(log_values, "log_values", "-")
        return float(torch.logsumexp(log_values, 0)) + math.log(self.cell_area)

    def integral(self, values: torch.Tensor) -> float:
        """The integral of ``values`` (one per point, finite) over the square (Riemann
        sum)."""
        return float(self._values(values).sum()) * self.cell_area

    def matrix(self, values: torch.Tensor) -> np.ndarray:
        """``values`` as an (m, m) array indexed [i, j] = (axis[i], axis[j]).

        The layout of ``np.meshgrid(axis, axis, indexing="ij")``, which
        :func:`elbo_lib.bounds.kl_on_grid` takes. ``values`` may hold -inf and +inf (a
        log density of zero), not NaN.
        """
        m = self.axis.numel()
        return self._values(values, "values", "-+").reshape(m, m).numpy()

    def image(self, values: torch.Tensor) -> np.ndarray:
        """``values`` as an (m, m) array indexed [row = second coordinate, column = first].

        Ready for ``imshow(..., origin="lower", extent=...)``.
        """
        return self.matrix(values).T


def square_grid(limit: float, num_points: int,
                dtype: torch.dtype = torch.float64) -> Grid2D:
    """The grid of ``num_points`` x ``num_points`` points over [-limit, limit]^2.

    Chapter 7 computes log Z of the 2-D targets, the mass of q and KL(q || p) on it.

    Parameters
    ----------
    limit : float
        Half-width of the square (> 0).
    num_points : int
        Points per axis (>= 3).
    dtype : torch.dtype
    """
    limit = check_positive(limit, "limit")
    num_points = check_positive_int(num_points, "num_points", minimum=3)
    axis = torch.linspace(-limit, limit, num_points, dtype=dtype)
    points = torch.cartesian_prod(axis, axis)
    return Grid2D(axis, points, float(axis[1] - axis[0]) ** 2)

