"""VAE (chapter 6): epoch time vs a PyTorch-example training loop, and IWAE throughput.

Epoch time. Ours is ``elbo_lib.vae.train_vae`` on ``elbo_lib.vae.VAE``. The reference is
written the way the official PyTorch VAE example is (pytorch/examples, ``vae/main.py``):
a separate ``nn.Module`` with ``fc1, fc21, fc22, fc3, fc4`` layers, sigmoid outputs and
``F.binary_cross_entropy(..., reduction="sum")`` plus the analytic KL, a ``DataLoader``
with ``shuffle=True``, Adam, ``loss.item()`` bookkeeping, and a ``torch.no_grad()`` test
pass after every epoch. Equal work: same architecture (D -> 128 tanh -> 2 x latent,
latent -> 128 tanh -> D), same binarised digits, batch size 64, learning rate 1e-3, the
same number of epochs, a validation pass per epoch on both sides, and one torch thread
for both (``elbo_lib.seed_everything``). Agreement: the validation ELBO after the timed
epochs (different random initialisations, so close but not identical).

IWAE throughput. ``elbo_lib.vae.iwae_bound(model, x, k=1000)`` vs a reference written
with ``torch.distributions`` (``Normal.rsample``, ``Bernoulli(logits=...).log_prob``,
``torch.logsumexp``) on the same trained model, same test images and the same chunking
(``max_batch // k`` points at a time, with ``iwae_bound``'s default ``max_batch``);
agreement is |mean IWAE difference| in nats (different random draws: Monte Carlo error).

The machine's limit. The floating-point work of an epoch and of the IWAE evaluation is
counted from the layer shapes: 2 m k n FLOPs for every (m x k) @ (k x n) product of the
forward pass (and of the backward pass in training: the weight gradient of every layer
and the input gradient of every layer but the first). Two limits are measured in the
same run, in float32 with torch's thread setting as used (one thread,
``seed_everything``): (a) the same list of products, at the same shapes, run back to back
with ``torch.mm`` on preallocated tensors (everything but the matrix products removed:
the best any implementation of these layers could do), and (b) a 1024 x 1024 x 1024
product (the CPU core's GEMM peak). A fraction is the time of (a) over the measured
time, or the achieved FLOP rate over (b).

When the epoch becomes arithmetic-bound. The same fraction (a) is measured for one epoch
of ``train_vae`` over a grid of batch sizes and hidden widths (synthetic binary data of
the digits' size, ``SWEEP_N`` images, so every cell does the same number of examples):
the fraction rises towards 1 as the matrix products grow and the per-step framework
overhead (autograd, Adam, the per-batch Python) is amortised.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Normal
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._common import Config, measure, row
from elbo_lib import seed_everything
from elbo_lib.datasets import binarize, load_digits_split
from elbo_lib.vae import VAE, as_tensor, iwae_bound, train_vae

TITLE = "VAE: training epoch vs a PyTorch-example loop; IWAE evaluation throughput"
EQUALITY = (
    r"Epoch: the same architecture ($64 \to 128$ tanh $\to 2 \times 2$ for the encoder, "
    r"$2 \to 128$ tanh $\to 64$ for the decoder), the same binarised digits, batch 64, Adam "
    "with learning rate $10^{-3}$, the same epochs, a validation pass per epoch on both "
    "sides, one torch thread for both (`seed_everything`). The reference is written in the "
    "style of the official PyTorch example (a separate module, sigmoid outputs with a "
    "summed binary cross-entropy, a `DataLoader`, `.item()`). Agreement: the difference of "
    "the validation ELBOs after the timed epochs (different initialisations). IWAE: the same "
    "trained model, test points and chunking, the reference written with "
    "`torch.distributions`; agreement: the difference of the mean bounds (nats). Limit: "
    "FLOPs counted from the layer shapes; the same float32 matrix products alone, back to "
    r"back (`torch.mm`, one thread), and a $1024^3$ product for the core's peak.")
LATENT, HIDDEN, BATCH, LR = 2, 128, 64, 1e-3
#: The arithmetic-bound sweep: images per epoch, batch sizes and hidden widths.
SWEEP_N, SWEEP_BATCHES, SWEEP_HIDDEN = 8192, (16, 64, 256, 1024), (32, 128, 512, 2048)


class ReferenceVAE(nn.Module):
    """The PyTorch-example VAE, with the book's sizes and tanh activations."""

    def __init__(self, num_pixels: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.num_pixels = num_pixels
        self.fc1 = nn.Linear(num_pixels, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, num_pixels)

    def encode(self, x):
        h1 = torch.tanh(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = torch.tanh(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, self.num_pixels))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    """Negative ELBO summed over the batch, as in the PyTorch example."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, recon_x.shape[-1]), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def reference_training(x_train, x_val, epochs: int) -> float:
    """The example's train / test loop; returns the last validation ELBO (nats per image)."""
    seed_everything(0)
    model = ReferenceVAE(x_train.shape[1], LATENT, HIDDEN)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    train_loader = DataLoader(TensorDataset(x_train), batch_size=BATCH, shuffle=True)
    test_loader = DataLoader(TensorDataset(x_val), batch_size=BATCH, shuffle=False)
    test_loss = 0.0
    for _ in range(epochs):
        model.train()
        train_loss = 0.0
        for (data,) in train_loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for (data,) in test_loader:
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
    return -test_loss / len(x_val)


def our_training(x_train, x_val, epochs: int):
    seed_everything(0)
    model = VAE(x_train.shape[1], latent_dim=LATENT, hidden=HIDDEN)
    history = train_vae(model, x_train, x_val, epochs, batch_size=BATCH, lr=LR)
    return model, history.val_elbo[-1]


#: ``iwae_bound``'s own chunk size (samples per decoder call), read from its signature so
#: that the reference always does the same chunking (cache behaviour depends on it).
IWAE_MAX_BATCH = inspect.signature(iwae_bound).parameters["max_batch"].default


@torch.no_grad()
def reference_iwae(model: VAE, x, k: int, max_batch: int = IWAE_MAX_BATCH):
    """IWAE_k per point with torch.distributions, chunked like ``iwae_bound``."""
    out = []
    for xs in x.split(max(1, max_batch // k)):
        posterior = model.encode(xs)
        q = Normal(posterior.mean, torch.exp(0.5 * posterior.logvar))
        z = q.rsample((k,))
        log_px = Bernoulli(logits=model.decode(z)).log_prob(xs).sum(-1)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        out.append(torch.logsumexp(log_px + log_pz - q.log_prob(z).sum(-1), dim=0)
                   - math.log(k))
    return torch.cat(out)


def _layers(model: VAE) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(in, out) of every linear layer of the encoder and of the decoder."""
    def shapes(seq):
        return [(m.in_features, m.out_features) for m in seq if isinstance(m, nn.Linear)]
    return shapes(model.encoder), shapes(model.decoder)


def epoch_products(model: VAE, n_train: int, n_val: int, batch: int):
    """Every (m, k, n) matrix product of one training epoch and its validation pass."""
    encoder, decoder = _layers(model)
    layers = encoder + decoder
    out = []
    for start in range(0, n_train, batch):
        b = min(batch, n_train - start)
        for i, (fan_in, fan_out) in enumerate(layers):
            out.append((b, fan_in, fan_out))          # forward
            out.append((fan_out, b, fan_in))          # weight gradient
            if i > 0:
                out.append((b, fan_out, fan_in))      # input gradient
    out += [(n_val, fan_in, fan_out) for fan_in, fan_out in layers]  # validation pass
    return out


def iwae_products(model: VAE, n: int, k: int, max_batch: int = IWAE_MAX_BATCH):
    """Every (m, k, n) product of ``iwae_bound``: encoder on each chunk, decoder on k x it."""
    encoder, decoder = _layers(model)
    chunk = max(1, max_batch // k)
    out = []
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        out += [(c, a, b) for a, b in encoder] + [(k * c, a, b) for a, b in decoder]
    return out


def flops(products) -> int:
    return int(sum(2 * m * k * n for m, k, n in products))


def gemm_runner(products):
    """A function that runs exactly these float32 products with torch.mm (preallocated)."""
    gen = torch.Generator().manual_seed(0)
    cache = {}
    for m, k, n in products:
        if (m, k, n) not in cache:
            cache[m, k, n] = (torch.rand(m, k, generator=gen), torch.rand(k, n, generator=gen),
                              torch.empty(m, n))
    calls = [cache[p] for p in products]

    def go():
        for a, b, c in calls:
            torch.mm(a, b, out=c)
    return go


def machine_limit(model: VAE, n_train: int, n_val: int, n_test: int, k: int,
                  epoch_s: dict[str, float], iwae_s: dict[str, float],
                  config: Config) -> dict:
    """FLOPs, the GEMM-only times at the same shapes, the 1024^3 peak, and the fractions."""
    epoch = epoch_products(model, n_train, n_val, BATCH)
    iwae = iwae_products(model, n_test, k)
    size = 256 if config.smoke else 1024
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(size, size, generator=gen), torch.rand(size, size, generator=gen)
    c = torch.empty(size, size)
    t = measure({"epoch_gemms": gemm_runner(epoch), "iwae_gemms": gemm_runner(iwae),
                 "peak": lambda: torch.mm(a, b, out=c)}, config)
    peak = 2 * size**3 / t["peak"].median
    out = {"torch_threads": torch.get_num_threads(), "dtype": "float32",
           "peak_shape": size, "peak_gflops": peak / 1e9}
    for name, products, measured in (("epoch", epoch, epoch_s), ("iwae", iwae, iwae_s)):
        f = flops(products)
        gemm_s = t[f"{name}_gemms"].median
        out[name] = {"flops": f, "products": len(products), "gemm_only_s": gemm_s,
                     "gemm_only_gflops": f / gemm_s / 1e9,
                     "sides": {side: {"seconds": s, "gflops": f / s / 1e9,
                                      "fraction_of_gemm_at_shapes": gemm_s / s,
                                      "fraction_of_peak": f / s / peak}
                               for side, s in measured.items()}}
    return out


def limit_sweep(config: Config) -> list[dict]:
    """The fraction of one epoch's time spent in its matrix products, by batch and width.

    For each (batch size, hidden width) one epoch of :func:`train_vae` on ``SWEEP_N``
    synthetic binary 64-pixel images (plus a 64-image validation pass) is timed against
    the same products run alone (:func:`gemm_runner`); both interleaved, median of
    ``config.repeats``.
    """
    n, batches, widths = ((512, (16, 64), (32, 128)) if config.smoke
                          else (SWEEP_N, SWEEP_BATCHES, SWEEP_HIDDEN))
    gen = torch.Generator().manual_seed(config.seed)
    x = (torch.rand(n, 64, generator=gen) < 0.3).float()
    x_val = x[:64]
    out = []
    for hidden in widths:
        for batch in batches:
            seed_everything(config.seed)
            model = VAE(64, latent_dim=LATENT, hidden=hidden)
            products = epoch_products(model, n, len(x_val), batch)
            t = measure({"epoch": lambda m=model, b=batch: train_vae(m, x, x_val, 1,
                                                                    batch_size=b),
                         "gemms": gemm_runner(products)}, config)
            f = flops(products)
            out.append({"hidden": hidden, "batch": batch, "flops": f,
                        "epoch_s": t["epoch"].median, "gemm_only_s": t["gemms"].median,
                        "epoch_gflops": f / t["epoch"].median / 1e9,
                        "fraction": t["gemms"].median / t["epoch"].median})
    return out


def run(config: Config) -> dict:
    rng = seed_everything(config.seed)
    data = load_digits_split(rng)
    x_train, x_val, x_test = (as_tensor(binarize(x, rng))
                              for x in (data.x_train, data.x_val, data.x_test))
    epochs, k = (1, 50) if config.smoke else (10, 1000)
    if config.smoke:
        x_train, x_val, x_test = x_train[:256], x_val[:64], x_test[:32]
    t = measure({"ours": lambda: our_training(x_train, x_val, epochs),
                 "reference": lambda: reference_training(x_train, x_val, epochs)}, config)
    model, val_ours = t["ours"].result
    val_ref = t["reference"].result
    rows = [row("vae", "training epoch", {"n_train": len(x_train), "batch": BATCH,
                                          "epochs": epochs},
                ours=t["ours"].median / epochs, reference_name="PyTorch-example loop",
                reference=t["reference"].median / epochs,
                agreement="|val ELBO diff| (nats/image)",
                agreement_value=abs(val_ours - val_ref),
                notes=f"seconds per epoch (median of {config.repeats} runs of {epochs} "
                      f"epochs / {epochs}); val ELBO ours {val_ours:.2f}, "
                      f"reference {val_ref:.2f}")]

    def ours_iwae():
        torch.manual_seed(1)
        return iwae_bound(model, x_test, k)[0]

    def ref_iwae():
        torch.manual_seed(1)
        return reference_iwae(model, x_test, k)

    seed_everything(config.seed)
    t = measure({"ours": ours_iwae, "reference": ref_iwae}, config)
    diff = abs(float(t["ours"].result.mean() - t["reference"].result.mean()))
    n = len(x_test)
    rows.append(row("vae", f"IWAE k={k} evaluation", {"n_test": n, "k": k},
                    ours=t["ours"], reference_name="torch.distributions IWAE",
                    reference=t["reference"], agreement="|mean IWAE diff| (nats)",
                    agreement_value=diff,
                    notes=f"throughput ours {n / t['ours'].median:,.0f} points/s, "
                          f"reference {n / t['reference'].median:,.0f} points/s"))
    limit = machine_limit(model, len(x_train), len(x_val), n, k,
                          {"ours": rows[0]["ours_s"], "reference": rows[0]["ref_s"]},
                          {"ours": rows[1]["ours_s"], "reference": rows[1]["ref_s"]}, config)
    return {"name": "vae", "title": TITLE, "equality": EQUALITY, "rows": rows,
            "extra": {"iwae_points_per_s_ours": n / t["ours"].median,
                      "iwae_points_per_s_reference": n / t["reference"].median,
                      "torch_threads": torch.get_num_threads(), "limit": limit,
                      "limit_sweep": limit_sweep(config)}}
