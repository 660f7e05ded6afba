"""The paper's CelebA set-up: x = 64x64 face, w = 40 attributes in {-1, 1}; JMVAE-kl.

  python launch.py --config=configs/celeba.py --workdir=/tmp/celeba
  # from the release files you already have (img_align_celeba.zip or folder,
  # list_attr_celeba.txt, list_eval_partition.txt):
  python launch.py --config=configs/celeba.py --workdir=/tmp/celeba \
      --config.data.source=release --config.data.data_dir=/path/to/celeba

The default objective is the paper's JMVAE-GAN: JMVAE-kl with a discriminator on the
image decoder (config.gan; jmvae_jax/gan.py); vae_gan, cvae_gan and cmma_gan are Table 2's
baselines, jmvae_kl the model without the GAN.
"""
import ml_collections

from configs import common, mnist

FILTERS = (64, 128, 256, 256)   # the authors' four 4x4 stride-2 convolutions


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  common.check_arg(arg, "celeba.py")
  c = common.get_config()
  c.data = ml_collections.ConfigDict()
  c.data.name = "celeba"
  c.data.source = "tfds"        # tfds (celeb_a) | release (the release files in data_dir)
  c.data.data_dir = ""          # tfds: its data dir ("" = tfds's default); release: the folder
                                # holding img_align_celeba.zip (or img_align_celeba/),
                                # list_attr_celeba.txt and list_eval_partition.txt
  c.data.download = False       # tfds only: let tfds download celeb_a (needs network)
  c.data.image_size = 64        # S: faces are centre-cropped and resized to S x S
  c.data.crop = 0               # side of the centred square crop before resizing; 0: the largest
  c.data.celeba_split = "paper" # paper: a random test_fraction of all images (by split_seed);
                                # official: list_eval_partition's train (0) and test (2);
                                # authors: 1 % drawn as their code (scikit-learn's
                                # train_test_split, random_state=split_seed; theirs: 1)
  c.data.test_fraction = 0.1
  c.data.split_seed = 0
  c.data.shuffle_buffer = 20_000   # examples: the order of an epoch streamed from disk
  c.data.cache_dir = ""         # release: where the built dataset goes ("" = <data_dir>/tfds)
  c.data.normalise = "standardise"  # the authors': each pixel less its training-split mean,
                                # over its std (computed once, cached beside the built
                                # dataset); "unit": pixels in [0, 1]
  c.model = mnist.model_config()
  c.model.latent_dim = 128
  c.model.activation = "relu"          # the paper: ReLU
  c.model.norm = "batch"               # the authors': batch norm after every convolution but
                                       # the encoder's first and every attribute dense layer
                                       # but the first (running averages saved with the
                                       # parameters, used at test time); "layer", "none"
  c.model.modalities = ml_collections.ConfigDict()
  # The image: Gaussian, variance 1, its log-density reduced as the authors' code does
  # (summed over height and width, averaged over the 3 channels: Table 2's scale);
  # reduction="sum" gives the density of all 64x64x3 values (3x as many nats).
  # evaluation.json names the reduction its numbers use.
  # The authors' layout: the joint encoder concatenates the flattened convolutions with the
  # attribute branch, then one shared Dense 1024 (joint_hidden); q(z|x) has its own Dense
  # 1024; the decoder is one dense layer to 4x4x256, then four transposed convolutions.
  # layout="mirrored": every conv branch ends in its dense layer, the decoder has two.
  c.model.modalities.image = dict(likelihood="gaussian", shape=(64, 64, 3), variance=1.0,
                                  network="conv64", filters=FILTERS, dense=1024,
                                  reduction="channel_mean", layout="authors")
  c.model.joint_hidden = (1024,)
  # The attributes: -1/1, Gaussian with variance 1 (not learned) and a tanh mean, as the
  # authors; their decoder is Dense 4096 -> Dense 512 -> 40.
  c.model.modalities.attributes = dict(likelihood="gaussian", shape=(40,), variance=1.0,
                                       mean_activation="tanh", hidden=(512, 512),
                                       decoder_hidden=(4096, 512))
  c.objective.name = "jmvae_gan"
  c.objective.alpha = 0.1
  c.objective.warmup_epochs = 20
  c.optim.learning_rate = 1e-4         # the authors' Adam for the encoders, as for D and
  c.optim.b1 = 0.5                     # the decoder (config.gan): no clipping
  c.optim.eps = 1e-8
  c.optim.clip_global_norm = 0.0
  c.optim.clip_value = 0.0
  c.gan = common.gan_config(FILTERS)
  c.train.epochs = 100
  c.train.eval_every_epochs = 5
  c.train.log_every_steps = 200
  c.eval.prior_samples = 10            # the authors' CelebA value
  c.eval.figure_attributes = ("Smiling", "Eyeglasses", "Male", "Blond_Hair")
  c.eval.k = 5000
  if arg == "smoke":
    c.model.latent_dim = 16
    c.model.modalities.image.filters = (8, 8, 16, 16)
    c.model.modalities.image.dense = 64
    c.model.joint_hidden = (64,)
    c.model.modalities.attributes.hidden = (32,)
    c.model.modalities.attributes.decoder_hidden = (32,)
    c.gan.filters, c.gan.dense = (8, 8, 16, 16), 64
    c.train.epochs = 1
  return c
