"""Robustness testing: corruptions, perturbations, attacks, ensembles, report.

Importing the package registers every corruption and real-world perturbation
in `registry.CORRUPTIONS` and every attack in `registry.ATTACKS`.
"""

from chameleon_jax.robustness import attacks  # noqa: F401  (registers attacks)
from chameleon_jax.robustness import corruptions  # noqa: F401
from chameleon_jax.robustness import perturbations  # noqa: F401
