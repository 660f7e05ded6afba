"""The paper's MNIST set-up: x = 28x28 binarised image, w = digit label; JMVAE-kl.

  python launch.py --config=configs/mnist.py --workdir=/tmp/mnist \
      --config.objective.name=jmvae_zero --config.objective.alpha=0.01

``get_config("smoke")`` shrinks everything for a laptop or a test.
"""
import ml_collections


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
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = model_config()

  c.objective = ml_collections.ConfigDict()
  c.objective.name = "jmvae_kl"   # jmvae | jmvae_zero | jmvae_kl | vae | cvae | cmma | module:fn
  c.objective.alpha = 0.1         # JMVAE-kl's alpha (the paper: 0.01, 0.1, 1)
  c.objective.warmup_epochs = 200 # N_t: the prior-KL weight rises linearly to 1 over these
  c.objective.warmup_scope = "prior"  # "prior": the authors'; "all": also the alpha terms

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-4              # the authors' Adam epsilon
  c.optim.clip_global_norm = 5.0  # the authors' clipping, then ...
  c.optim.clip_value = 1.0        # ... element-wise to [-1, 1]; 0 disables either

  if arg == "smoke":
    c.model = model_config(hidden=(64,))
    c.model.latent_dim = 8
    c.objective.warmup_epochs = 1
  return c
