"""elbo_lib: the shared library of the ELBO book.

One module per concept; every chapter imports what it needs from here, so that the
book and the code it runs never drift apart.

Modules
-------
reproducibility
    :func:`seed_everything`, called at the top of every chapter.
reporting
    Rounded, machine-stable printing of numbers (:func:`fmt`, :func:`fmt_array`).
plotting
    The book's one seaborn theme and :func:`describe_figure`, which prints the data
    behind a figure so that nbval notices when it changes.
bounds
    Monte Carlo ELBO estimator and closed-form Gaussian KL / entropy.
models
    Models with closed-form evidence and posterior, used as oracles.
"""

from elbo_lib.reproducibility import seed_everything

__all__ = ["seed_everything"]
__version__ = "0.1.0"
