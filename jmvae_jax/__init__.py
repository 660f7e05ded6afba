"""jmvae-jax: the Joint Multimodal VAE (Suzuki, Nakayama & Matsuo 2016) in JAX/Flax."""
import os

# Quiet TensorFlow (used for tf.data and summaries only), before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from jmvae_jax import distributions, likelihood, modalities, networks, objectives
from jmvae_jax.builder import build
from jmvae_jax.errors import ConfigError
from jmvae_jax.model import Model, ModelSpec

__all__ = ["build", "ConfigError", "Model", "ModelSpec", "distributions", "modalities",
           "networks", "objectives", "likelihood"]
__version__ = "0.1.0"
