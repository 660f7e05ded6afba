"""The offline demo: JMVAE-kl on ``shapes``, procedurally generated coloured shapes
(x = 32x32 RGB image, w = 7 binary attributes in {-1, 1}: square, big, right,
bottom, red, green, blue). Runs anywhere with no download, in minutes on 2 cores:

  python launch.py --config=configs/shapes.py --workdir=/tmp/shapes
"""
import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  common.check_arg(arg, "shapes.py")
  c = common.get_config()
  c.data = ml_collections.ConfigDict()
  c.data.name = "shapes"
  c.data.source = "generated"   # drawn with numpy, written once as a tfds dataset
  c.data.data_dir = ""          # where that dataset goes ("" = <tmp>/jmvae_jax_tfds)
  c.data.download = False       # unused: nothing to download
  c.data.num_train = 20_000
  c.data.num_test = 2_000
  c.data.image_size = 32        # S: S x S RGB images
  c.data.data_seed = 0          # the generation seed: the same data in every run
  c.data.variation = "narrow"   # what the attributes leave free: "narrow", a little jitter
                                # (128 tight clusters), or "wide", most of each class's range
                                # of size, place and colour (classes blend, as faces do)
  c.model = ml_collections.ConfigDict()
  c.model.latent_dim = 16
  c.model.x = "image"
  c.model.activation = "leaky_relu"
  c.model.variance_param = "log"
  c.model.joint_hidden = ()
  c.model.norm = "none"
  c.model.modalities = ml_collections.ConfigDict()
  c.model.modalities.image = dict(likelihood="bernoulli", shape=(32, 32, 3),
                                  hidden=(512, 512), decoder_hidden=(512, 512))
  # A Gaussian on +-1 attributes, its mean through tanh as in the authors' CelebA code.
  c.model.modalities.attributes = dict(likelihood="gaussian", shape=(7,), variance=0.1,
                                       mean_activation="tanh", hidden=(64, 64),
                                       decoder_hidden=(64, 64))
  c.objective.alpha = 1.0
  c.objective.warmup_epochs = 2
  c.train.batch_size = 100
  c.train.epochs = 10
  c.train.log_every_steps = 200
  c.train.eval_every_epochs = 5
  c.train.checkpoint_every_steps = 1000
  c.eval.k = 100
  c.eval.prior_samples = 100
  if arg == "smoke":    # the tests' size
    c.data.num_train, c.data.num_test = 400, 100
    c.model.modalities.image.hidden = c.model.modalities.image.decoder_hidden = (32,)
    c.model.modalities.attributes.hidden = (16,)
    c.model.modalities.attributes.decoder_hidden = (16,)
    c.model.latent_dim = 4
    c.train.batch_size = 40
    c.train.epochs = 2
    c.train.log_every_steps = 5
    c.train.eval_every_epochs = 1
    c.train.checkpoint_every_steps = 5
  return c
