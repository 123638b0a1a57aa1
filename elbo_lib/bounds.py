"""The evidence lower bound: Monte Carlo estimation and closed-form Gaussian pieces.

For any density q(z),

.. math::

    \\log p(x) = \\mathrm{ELBO}(q) + \\mathrm{KL}(q(z) \\,\\|\\, p(z \\mid x)),
    \\qquad \\mathrm{ELBO}(q) = \\mathbb{E}_q[\\log p(x, z)] - \\mathbb{E}_q[\\log q(z)].

Used by chapter 1 (the ELBO) and every later chapter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.distributions import Distribution

from elbo_lib._validation import check_positive_int

__all__ = ["gaussian_entropy", "gaussian_kl", "monte_carlo_elbo"]


def monte_carlo_elbo(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    q: Distribution,
    num_samples: int,
    *,
    reparameterize: bool = True,
    return_std_error: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo estimate of ELBO(q) = E_q[log p(x, z) - log q(z)].

    Draws ``num_samples`` samples z_s from q and averages log p(x, z_s) - log q(z_s).
    The estimate is unbiased for the ELBO. With ``reparameterize=True`` the samples
    come from ``q.rsample`` so the estimate can be differentiated with respect to q's
    parameters (the pathwise gradient of chapter 5).

    Parameters
    ----------
    log_joint : callable
        Maps a tensor of samples of shape ``(S, *q.event_shape)`` to the log-joint
        log p(x, z) of each sample, shape ``(S,)``.
    q : torch.distributions.Distribution
        The approximate posterior; its ``batch_shape`` must be empty (one q).
    num_samples : int
        Number of samples S (>= 1).
    reparameterize : bool
        Sample with ``rsample`` (differentiable) rather than ``sample``.
    return_std_error : bool
        Also return the standard error of the estimate (needs S >= 2).

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        The scalar estimate, and its standard error if asked for.

    Raises
    ------
    TypeError
        If ``q`` is not a torch Distribution or ``log_joint`` is not callable.
    ValueError
        If q has a batch shape, cannot be reparameterised when asked to, ``log_joint``
        returns the wrong shape or non-finite values, or S is too small.

    Examples
    --------
    >>> import torch
    >>> from torch.distributions import Normal
    >>> q = Normal(torch.tensor(0.0), torch.tensor(1.0))
    >>> log_joint = lambda z: Normal(0.0, 1.0).log_prob(z)   # p(x, z) = q(z): ELBO = 0
    >>> float(monte_carlo_elbo(log_joint, q, 10))
    0.0
    """
    if not isinstance(q, Distribution):
        raise TypeError(f"q must be a torch.distributions.Distribution, got {type(q).__name__}")
    if not callable(log_joint):
        raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
    num_samples = check_positive_int(num_samples, "num_samples", 2 if return_std_error else 1)
    if q.batch_shape != torch.Size([]):
        raise ValueError(f"q must be a single distribution (empty batch_shape), "
                         f"got batch_shape {tuple(q.batch_shape)}; wrap it in Independent")
    if reparameterize and not q.has_rsample:
        raise ValueError(f"{type(q).__name__} has no rsample: use reparameterize=False "
                         "(score-function gradients, chapter 5)")
    z = q.rsample((num_samples,)) if reparameterize else q.sample((num_samples,))
    log_p = log_joint(z)
    if not isinstance(log_p, torch.Tensor) or log_p.shape != (num_samples,):
        shape = tuple(log_p.shape) if isinstance(log_p, torch.Tensor) else type(log_p).__name__
        raise ValueError(f"log_joint must return a tensor of shape ({num_samples},), got {shape}")
    terms = log_p - q.log_prob(z)
    if not torch.all(torch.isfinite(terms)):
        raise ValueError("log p(x, z) - log q(z) is not finite for some samples")
    estimate = terms.mean()
    if return_std_error:
        return estimate, terms.detach().std(unbiased=True) / num_samples**0.5
    return estimate


def _xp(*arrays):
    return torch if any(isinstance(a, torch.Tensor) for a in arrays) else np


def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """KL(N(mean_q, var_q) || N(mean_p, var_p)), elementwise, in closed form.

    .. math::

        \\mathrm{KL} = \\tfrac12\\Big(\\log\\frac{v_p}{v_q}
        + \\frac{v_q + (m_q - m_p)^2}{v_p} - 1\\Big)

    Works on NumPy arrays or torch tensors (differentiably), broadcasting; sum over the
    last axis yourself for a diagonal multivariate Gaussian. Derived in chapter 6.

    Raises
    ------
    ValueError
        If a variance is not strictly positive.
    """
    xp = _xp(mean_q, var_q, mean_p, var_p)
    for name, v in (("var_q", var_q), ("var_p", var_p)):
        if bool(xp.any(xp.asarray(v) <= 0)) if xp is np else bool((torch.as_tensor(v) <= 0).any()):
            raise ValueError(f"{name} must be > 0 everywhere")
    if xp is np:
        mean_q, var_q, mean_p, var_p = (np.asarray(a, dtype=np.float64)
                                        for a in (mean_q, var_q, mean_p, var_p))
    else:
        mean_q, var_q, mean_p, var_p = (torch.as_tensor(a) for a in (mean_q, var_q, mean_p, var_p))
    return 0.5 * (xp.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)


def gaussian_entropy(var):
    """Differential entropy of N(m, var): 0.5 * log(2 * pi * e * var), elementwise."""
    xp = _xp(var)
    v = np.asarray(var, dtype=np.float64) if xp is np else torch.as_tensor(var)
    if bool((v <= 0).any()):
        raise ValueError("var must be > 0 everywhere")
    return 0.5 * (xp.log(v) + np.log(2 * np.pi) + 1.0)
