"""The GAN offline: JMVAE-GAN on 64x64 ``shapes`` with the CelebA networks (x = a 64x64
RGB image through convolutions, w = its 7 binary attributes in {-1, 1}). No download:

  python launch.py --config=configs/shapes64.py --workdir=/tmp/shapes64
  python launch.py --config=configs/shapes64.py --workdir=/tmp/shapes64_kl \
      --config.objective.name=jmvae_kl          # the same model without the GAN

``get_config("smoke")`` is the tests' size.
"""
import ml_collections

from configs import common, shapes


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  common.check_arg(arg, "shapes64.py")
  c = shapes.get_config(arg)
  c.data.image_size = 64
  c.model.activation = "relu"
  filters = (32, 64, 128, 128) if arg != "smoke" else (8, 8, 16, 16)
  dense = 256 if arg != "smoke" else 32
  c.model.modalities.image = dict(likelihood="bernoulli", shape=(64, 64, 3), network="conv64",
                                  filters=filters, dense=dense)
  c.objective.name = "jmvae_gan"
  c.optim.learning_rate = 1e-4    # the authors' JMVAE-GAN Adam for every player
  c.optim.b1 = 0.5
  c.optim.eps = 1e-8
  c.optim.clip_global_norm = 0.0
  c.optim.clip_value = 0.0
  c.gan = common.gan_config(filters)
  c.gan.dense = dense
  if arg == "smoke":
    c.data.num_train, c.data.num_test = 120, 40
    c.train.batch_size = 20
    c.train.epochs = 1
  return c
