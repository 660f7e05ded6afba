"""jmvae-jax: the Joint Multimodal VAE (Suzuki, Nakayama & Matsuo 2016) in JAX/Flax.

``build(config) -> (model, loss_fn)`` makes a model from a config; ``load(workdir) ->
(model, params, config)`` brings back a trained run; ``eval`` estimates test
log-likelihoods; ``launch.py`` trains and evaluates from the command line.
"""
import os

# Quiet TensorFlow (used for tf.data and summaries only), before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from jmvae_jax import distributions, eval, modalities, networks, objectives, schema  # noqa: E402
from jmvae_jax.builder import build  # noqa: E402
from jmvae_jax.errors import ConfigError  # noqa: E402
from jmvae_jax.model import Model, ModelSpec  # noqa: E402
from jmvae_jax.restore import load  # noqa: E402

__all__ = ["build", "load", "ConfigError", "Model", "ModelSpec", "distributions", "eval",
           "modalities", "networks", "objectives", "schema"]
__version__ = "0.1.0"
