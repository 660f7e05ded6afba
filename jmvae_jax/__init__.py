"""jmvae-jax: the Joint Multimodal VAE (Suzuki, Nakayama & Matsuo 2016) in JAX/Flax."""
from jmvae_jax import distributions, modalities, networks, objectives
from jmvae_jax.build import build
from jmvae_jax.errors import ConfigError
from jmvae_jax.model import Model, ModelSpec

__all__ = ["build", "ConfigError", "Model", "ModelSpec", "distributions", "modalities",
           "networks", "objectives"]
__version__ = "0.1.0"
