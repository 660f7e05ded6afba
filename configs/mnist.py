"""The paper's MNIST set-up: x = 28x28 binarised image, w = digit label; JMVAE-kl.

  python launch.py --config=configs/mnist.py --workdir=/tmp/mnist \
      --config.data.source=pickle --config.data.data_dir=/path/to/mnist.pkl.gz

``get_config("smoke")`` shrinks everything for a laptop or a test. Every field
below can be overridden from the command line as ``--config.SECTION.FIELD=VALUE``.
"""
import ml_collections

from configs import common


def data_config(name: str = "mnist") -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.name = name             # mnist | fashion_mnist
  d.source = "tfds"         # tfds | idx (the four IDX files) | pickle (mnist.pkl.gz, MNIST only)
  d.data_dir = ""           # tfds: its data dir ("" = tfds's default); idx: the directory of the
                            # IDX files ("" = /usr/share/datasets/fashion-mnist for fashion_mnist);
                            # pickle: mnist.pkl.gz or the directory holding it
  d.download = False        # tfds only: let tfds download a dataset it lacks (needs network)
  d.split = "paper"         # paper: the first num_train training images; authors: all 60,000
  d.num_train = 50_000      # the paper split's size
  d.binarize = "dynamic"    # dynamic: Bernoulli(intensity) per (seed, epoch, image); static:
                            # once, by binarize_seed; none: grey levels
  d.binarize_seed = 0       # the fixed seed of the test (and static) binarisation, not the run's
  return d


def model_config(hidden=(512, 512)) -> ml_collections.ConfigDict:
  """Image (Bernoulli) + label (categorical) MLPs as the paper describes them."""
  m = ml_collections.ConfigDict()
  m.latent_dim = 64            # the paper's z
  m.x = "image"                # the paper's x: the modality that VAE/CVAE/CMMA model
  m.activation = "leaky_relu"  # paper: leaky ReLU; the authors' code: "relu"
  m.variance_param = "log"     # "log": log-variance head; "softplus": the authors' variance
  m.joint_hidden = ()          # shared layers after concatenation; the authors': (512,)
  m.norm = "none"              # normalisation inside conv stacks: "none" | "layer"
  m.modalities = ml_collections.ConfigDict()
  m.modalities.image = dict(likelihood="bernoulli", shape=(28, 28, 1), network="mlp",
                            hidden=hidden, decoder_hidden=hidden)
  m.modalities.label = dict(likelihood="categorical", shape=(10,), network="mlp",
                            hidden=hidden, decoder_hidden=hidden)
  return m


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  common.check_arg(arg, "mnist.py")
  c = common.get_config()
  c.data = data_config()
  c.model = model_config()
  if arg == "smoke":
    c.model = model_config(hidden=(64,))
    c.model.latent_dim = 8
    c.objective.warmup_epochs = 1
    c.train.epochs = 1
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 50
  return c
