"""The paper's CelebA set-up: x = 64x64 face, w = 40 attributes in {-1, 1}; JMVAE-kl.

  python launch.py --config=configs/celeba.py --workdir=/tmp/celeba
  # from the release files you already have (img_align_celeba.zip or folder,
  # list_attr_celeba.txt, list_eval_partition.txt):
  python launch.py --config=configs/celeba.py --workdir=/tmp/celeba \
      --config.data.source=release --config.data.data_dir=/path/to/celeba

The GAN of JMVAE-GAN is a later addition; this config trains the JMVAE-kl part.
"""
import ml_collections

from configs import mnist
from jmvae_jax import data_config

FILTERS = (64, 128, 256, 256)   # the authors' four 4x4 stride-2 convolutions


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  mnist.check_arg(arg, "celeba.py")
  c = mnist.get_config()
  c.data = data_config.default_config("celeba")
  c.model.latent_dim = 128
  c.model.activation = "relu"          # the paper: ReLU
  c.model.norm = "none"                # the paper names none; "layer" (see BUILD_NOTES.md)
  c.model.modalities = ml_collections.ConfigDict()
  c.model.modalities.image = dict(likelihood="gaussian", shape=(64, 64, 3), variance=1.0,
                                  network="conv64", filters=FILTERS, dense=1024)
  c.model.modalities.attributes = dict(likelihood="gaussian", shape=(40,), learn_variance=True,
                                       mean_activation="tanh", hidden=(512, 512),
                                       decoder_hidden=(512, 512))
  c.objective.alpha = 0.1
  c.objective.warmup_epochs = 20
  c.optim.learning_rate = 1e-4
  c.optim.b1 = 0.5
  c.train.epochs = 100
  c.train.eval_every_epochs = 5
  c.train.log_every_steps = 200
  c.eval.prior_samples = 10            # the authors' CelebA value
  c.eval.k = 5000
  if arg == "smoke":
    c.model.latent_dim = 16
    c.model.modalities.image.filters = (8, 8, 16, 16)
    c.model.modalities.image.dense = 64
    c.model.modalities.attributes.hidden = (32,)
    c.model.modalities.attributes.decoder_hidden = (32,)
    c.train.epochs = 1
  return c
