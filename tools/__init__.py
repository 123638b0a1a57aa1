"""Tooling of the ELBO book (not part of the library elbo_lib)."""
