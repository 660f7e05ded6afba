"""The sections every config shares: objective, optimiser, training and evaluation.

Each experiment config (mnist.py, shapes.py, ...) starts from ``get_config()`` here,
adds its data and model sections and overrides a few fields. Every field can be set
from the command line as ``--config.SECTION.FIELD=VALUE``; jmvae_jax/schema.py checks
each one before a run starts.
"""
import ml_collections

from jmvae_jax.errors import allowed

ARGS = ("", "smoke")   # --config=configs/FILE.py:ARG; "smoke": a tiny run for tests, laptops


def check_arg(arg: str, config_file: str) -> None:
  """A one-line error for an unknown --config=FILE:ARG, before any run starts."""
  if arg not in ARGS:
    raise allowed(f"--config=configs/{config_file}:ARG", arg, ARGS)


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


def eval_config() -> ml_collections.ConfigDict:
  """``launch.py --mode=evaluate`` (the authors: k = 1000 at evaluation, 5000 prior samples)."""
  e = ml_collections.ConfigDict()
  e.k = 5000               # importance samples per test example
  e.prior_samples = 5000   # N_p: prior samples for log p(w)
  e.chunk_size = 125       # samples per example per step: memory ~ batch * chunk * width
  e.batch_size = 16        # test examples per call (padded to the device count); on a
                           # CPU, batch * chunk ~ 2000 rows per step runs fastest
  e.seed = 0
  e.estimators = ()        # () = every estimator the model can compute by default
  e.figure_attributes = () # attributes whose faces are generated and edited (Figures 4,
                           # 5; --mode=evaluate); () = the dataset's first three
  e.matmul_precision = "highest"   # float32 products; "default" lets a GPU use TF32 (faster,
                           # moves log-likelihoods; BUILD_NOTES.md); no effect on a CPU
  e.inception_path = ""    # a TensorFlow SavedModel of Inception features: the standard FID
                           # of generated images (eval/inception.py); "" = none
  return e


def gan_config(filters=(64, 128, 256, 256)) -> ml_collections.ConfigDict:
  """The GAN objectives' section (jmvae_gan, vae_gan, cvae_gan, cmma_gan): the authors'
  JMVAE-GAN values. The encoder's optimiser is config.optim."""
  adam = dict(learning_rate=1e-4, b1=0.5, b2=0.999, eps=1e-8, clip_global_norm=0.0,
              clip_value=0.0)   # the authors': Adam, no clipping, for each player
  g = ml_collections.ConfigDict()
  g.gamma = 1.0                # the weight of the reconstruction in the decoder's loss
  g.prior_noise = "uniform"    # z for x_prior: "uniform" U(-1, 1) (the authors') | "normal"
                               # | "from_w": q(z|w) of the example's w (not the authors')
  g.reconstruction = "pixel"   # "pixel": x's likelihood (the authors') | "features": a
                               # Gaussian on D's features (Larsen et al. 2015)
  g.feature_layer = 2          # with "features": D's layer (0-3: its convolutions, 4: dense)
  g.filters = filters          # D: 4x4 stride-2 convolutions with leaky ReLU, ...
  g.dense = 1024               # ... then a dense layer, then one logit
  g.log_d = "plus_eps"         # log D: "plus_eps", the authors' log(D + eps), which gives the
                               # decoder almost no gradient from images D calls fake with
                               # D < eps; "exact": log_sigmoid
  g.equilibrium = 0.0          # Larsen et al.'s balance (their code: 0.68): D pauses while its
  g.margin = 0.35              # cost on real or prior images is under equilibrium - margin,
                               # the decoder while one is over equilibrium + margin; 0: off
  g.pause_d_on = "both"        # D pauses on either cost ("both", theirs), on the prior
                               # images' alone ("fake": their rule stops D for good where
                               # real images are easy to tell), or on their mean ("mean": a
                               # D that calls every image fake still trains)
  g.order = "sequential"       # "sequential": the decoder's update from the updated encoders
                               # and a z of its own (the authors'); "simultaneous": from the
                               # step's start and the encoders' z, as JMVAE's one step
  g.instance_noise = 0.0       # sigma of N(0, sigma^2) noise added to every image D judges,
                               # real or generated (Sonderby et al. 2016); 0: none (the authors')
  g.decoder_optim = dict(adam)         # the x decoder's optimiser
  g.discriminator_optim = dict(adam)   # the discriminator's
  return g


def get_config() -> ml_collections.ConfigDict:
  """The shared sections; the caller adds ``data`` and ``model``."""
  c = ml_collections.ConfigDict()
  c.seed = 0               # parameters, data order and binarisation all follow from it
  c.objective = objective_config()
  c.optim = optim_config()
  c.train = train_config()
  c.eval = eval_config()
  return c
