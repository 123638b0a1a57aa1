"""Shared fixtures: a seeded rng, and one warnings-as-errors build of the whole book."""

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# One torch thread, as the chapters use (elbo_lib.reproducibility.TORCH_THREADS): `make test`
# runs these tests beside nbval on two cores, where a second intra-op thread only waits.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def gaussian_target():
    """A Gaussian 'posterior' N(m, C) in 3-D with log p(x, z) = log N(z; m, C) + log_z.

    Returns ``(m, C, log_joint, log_z)``: the oracle of the gradient, VI and
    importance-sampling tests (every ELBO is at most log_z, with equality at q = p).
    """
    gen = np.random.default_rng(3)
    a = gen.normal(size=(3, 3))
    cov = a @ a.T / 3 + 0.5 * np.eye(3)
    m = gen.normal(size=3)
    target = torch.distributions.MultivariateNormal(torch.tensor(m),
                                                    covariance_matrix=torch.tensor(cov))
    log_z = 1.7

    def log_joint(z):
        return target.log_prob(z) + log_z

    return m, cov, log_joint, log_z


@pytest.fixture(scope="session")
def built_html(tmp_path_factory) -> Path:
    """Build the book exactly as `make book` does (-W --keep-going) into a temporary folder.

    Built once per test session and shared by the book and browser tests.
    """
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W",
                           "--keep-going"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out / "_build" / "html"


@pytest.fixture
def bsc_problem():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 6))
    w[:, 1] = w[:, 0] + 0.3 * rng.normal(size=8)
    b = np.full(6, -1.0)
    v = w @ np.array([1, 0, 0, 1, 0, 0.0]) + rng.normal(size=8) / 2
    return v, w, b, 4.0
