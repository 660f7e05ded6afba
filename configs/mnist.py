"""The paper's MNIST set-up: x = 28x28 binarised image, w = digit label; JMVAE-kl.

  python launch.py --config=configs/mnist.py --workdir=/tmp/mnist \
      --config.objective.name=jmvae_zero --config.data.source=idx \
      --config.data.data_dir=/path/to/idx/files

``get_config("smoke")`` shrinks everything for a laptop or a test. Every field
below can be overridden from the command line as ``--config.SECTION.FIELD=VALUE``.
"""
import ml_collections

from jmvae_jax import data_config, errors, likelihood

ARGS = ("", "smoke")   # --config=configs/FILE.py:ARG; "smoke": a tiny run for tests, laptops


def check_arg(arg: str, config_file: str) -> None:
  """A one-line error for an unknown --config=FILE:ARG, before any run starts."""
  if arg not in ARGS:
    raise errors.allowed(f"--config=configs/{config_file}:ARG", arg, ARGS)


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


def objective_config() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = "jmvae_kl"      # jmvae | jmvae_zero | jmvae_kl | vae | cvae | cmma | package.module:fn
  o.alpha = 0.1            # JMVAE-kl's alpha (the paper's table: 0.01, 0.1, 1)
  o.warmup_epochs = 200    # N_t: the prior-KL weight rises linearly from 0 to 1 (0: off)
  o.warmup_scope = "prior" # "prior": the authors' code; "all": the alpha terms too (MultiVae)
  return o


def optim_config() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.learning_rate = 1e-3
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-4                # the authors' Adam epsilon
  o.clip_global_norm = 5.0    # the authors' clipping: global norm, then ...
  o.clip_value = 1.0          # ... element-wise to [-1, 1]; 0 disables either
  return o


def train_config() -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.batch_size = 100            # global, over all devices and processes
  t.epochs = 500                # MultiVae's reproduction; the authors' code: 100
  t.max_steps = 0               # stop earlier than epochs allow (0: off)
  t.log_every_steps = 500
  t.eval_every_epochs = 10      # the test bound and figures (0: only at the end)
  t.checkpoint_every_steps = 5000
  t.keep_checkpoints = 3
  t.matmul_precision = "highest"   # float32 products in the train step and its test bound;
                           # "default" lets a GPU use TF32 (faster, less exact); no effect
                           # on a CPU; free to change when resuming
  return t


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  check_arg(arg, "mnist.py")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = data_config.default_config("mnist")
  c.model = model_config()
  c.objective = objective_config()
  c.optim = optim_config()
  c.train = train_config()
  c.eval = likelihood.eval_config()   # k = 5000, prior_samples = 5000, chunks, seed
  if arg == "smoke":
    c.model = model_config(hidden=(64,))
    c.model.latent_dim = 8
    c.objective.warmup_epochs = 1
    c.train.epochs = 1
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 50
  return c
