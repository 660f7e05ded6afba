"""Train or evaluate a model of the JMVAE family.

  python launch.py --config=configs/mnist.py --workdir=/tmp/mnist \
      [--config.objective.alpha=0.01 ...] [--mode=train|evaluate]

Running the same command again resumes from the latest checkpoint in --workdir.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # quiet TensorFlow (tf.data only)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags   # noqa: E402
from ml_collections import config_flags   # noqa: E402

config_flags.DEFINE_config_file("config", None, "A config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and figures go.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "Train (and resume), or estimate "
                  "test log-likelihoods from the latest checkpoint.")
flags.DEFINE_bool("multihost", False, "Join a multi-process run through "
                  "jax.distributed.initialize() (its coordinator and process ids come from "
                  "the cluster environment).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.ERROR)   # Orbax and tfds narrate every file they touch
  import jax
  if flags.FLAGS.multihost:
    jax.distributed.initialize()
  from jmvae_jax import cli
  cli.run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.mode)


if __name__ == "__main__":
  app.run(main)
