"""chameleon_jax: real-world image data to tested, served JAX/Flax models."""

__version__ = "0.1.0"
