"""Normalising flows: invertible maps with cheap Jacobian determinants (chapter 7).

A flow pushes a simple base density q0 through an invertible map f = f_K o ... o f_1;
by the change of variables, the density of z_K = f(z_0) is

.. math::

    \\log q_K(z_K) = \\log q_0(z_0) - \\sum_{k=1}^K \\log \\left|\\det
    \\frac{\\partial f_k}{\\partial z_{k-1}}\\right| .

The layers here are :class:`torch.distributions.transforms.Transform` subclasses, so a
flow is a :class:`torch.distributions.TransformedDistribution` and plugs into anything
that takes a torch distribution (the book's one VI loop,
:func:`elbo_lib.variational.fit_vi`, and the VAE's encoder):

- :class:`PlanarTransform` and :class:`RadialTransform` (Rezende & Mohamed 2015), with
  the reparameterisations that keep them invertible;
- :class:`AffineCouplingTransform` (RealNVP, Dinh et al. 2017): cheap in both
  directions;
- :class:`AutoregressiveTransform` with a :class:`MADE` conditioner (Germain et al.
  2015), in the inverse-autoregressive direction of IAF (Kingma et al. 2016): sampling
  and the density of its own samples in one pass, the density of an arbitrary point in
  D passes.

:class:`FlowFamily` stacks K layers on a learnable diagonal Gaussian, as a
:class:`~elbo_lib.variational.VariationalFamily`. The module also holds Rezende &
Mohamed's 2-D test densities (:func:`log_density_u1` ... :func:`log_density_u4`), a
square quadrature grid (:func:`square_grid`) for their normalisers and for KL(q || p),
and a maximum-likelihood (forward-KL) fit of a flow to samples
(:func:`fit_maximum_likelihood`).

The package's modules, each importing only those above it:
:mod:`~elbo_lib.flows.transforms` (input checks, planar and radial layers),
:mod:`~elbo_lib.flows.coupling` (coupling and autoregressive layers and their
conditioners), :mod:`~elbo_lib.flows.family` (:class:`FlowFamily`,
:func:`fit_maximum_likelihood`) and :mod:`~elbo_lib.flows.energies` (the test densities
and the quadrature grid). Every public name is importable from ``elbo_lib.flows``. The
flow encoder of chapter 7's VAE (a planar flow per image) is an encoder family of the
VAE and lives with it, in :mod:`elbo_lib.vae.flow_encoder`.
"""


from elbo_lib.flows.coupling import (
    MADE,
    AffineCoupling,
    AffineCouplingTransform,
    Autoregressive,
    AutoregressiveTransform,
)
from elbo_lib.flows.energies import (
    Grid2D,
    log_density_u1,
    log_density_u2,
    log_density_u3,
    log_density_u4,
    square_grid,
)
from elbo_lib.flows.family import FLOW_KINDS, FlowFamily, fit_maximum_likelihood
from elbo_lib.flows.transforms import PlanarStackTransform, PlanarTransform, RadialTransform

__all__ = [
    "FLOW_KINDS",
    "MADE",
    "AffineCoupling",
    "AffineCouplingTransform",
    "Autoregressive",
    "AutoregressiveTransform",
    "FlowFamily",
    "Grid2D",
    "PlanarStackTransform",
    "PlanarTransform",
    "RadialTransform",
    "fit_maximum_likelihood",
    "log_density_u1",
    "log_density_u2",
    "log_density_u3",
    "log_density_u4",
    "square_grid",
]
