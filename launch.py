"""Train or evaluate a model of the JMVAE family.

  python launch.py --config=configs/mnist.py --workdir=/tmp/mnist \
      [--config.objective.alpha=0.01 ...] [--mode=train|evaluate|demo]

Running the same command again resumes from the latest checkpoint in --workdir.
"""
import os
import signal
import sys

# A first Ctrl-C during start-up is held until the imports are done (main): TensorFlow's
# import, among others, swallows a KeyboardInterrupt raised inside it, and the run went on.
# A second one interrupts at once.
_CTRL_C = []


def _hold_ctrl_c(signum, frame):
  if _CTRL_C:
    raise KeyboardInterrupt
  _CTRL_C.append(True)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # quiet TensorFlow (tf.data only)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags   # noqa: E402
from ml_collections import config_flags   # noqa: E402

config_flags.DEFINE_config_file("config", None, "A config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and figures go.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "demo"], "train (and resume); "
                  "evaluate: estimate test log-likelihoods from the latest checkpoint; demo: "
                  "train, then report cross-modal accuracies and the figures.")
flags.DEFINE_bool("multihost", False, "Join a multi-process run through "
                  "jax.distributed.initialize() (its coordinator and process ids come from "
                  "the cluster environment).")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv):
  """absl's flag parsing, plus loading the config, with a mistyped config field or
  file reported in one line (exit 2) instead of a traceback."""
  try:
    rest = flags.FLAGS(argv)
    flags.FLAGS.config.to_dict()   # a config that failed to load raises here, not in the run
  except (flags.Error, AttributeError, KeyError, OSError, SyntaxError, TypeError,
          ValueError) as e:
    from jmvae_jax.main import config_flag_error
    print(f"error: {config_flag_error(e, argv)}", file=sys.stderr)
    sys.exit(2)
  if len(rest) > 1:
    print(f"error: unexpected arguments {rest[1:]}; options are --config, --workdir, --mode, "
          "--multihost and --config.SECTION.FIELD=VALUE", file=sys.stderr)
    sys.exit(2)
  return rest


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.FATAL)   # Orbax and tfds narrate every file they touch, and
                                         # Orbax logs the errors it raises (reported here)
  from jmvae_jax import data, main as library, train  # noqa: F401  (the slow imports)
  from jmvae_jax.data import core  # noqa: F401  (TensorFlow)
  if signal.getsignal(signal.SIGINT) is _hold_ctrl_c:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  library.run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.mode,
              interrupted=bool(_CTRL_C), multihost=flags.FLAGS.multihost)


if __name__ == "__main__":
  # Only where Ctrl-C would interrupt: a run started in the background by a shell
  # ignores SIGINT, and keeps ignoring it.
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _hold_ctrl_c)
  app.run(main, flags_parser=parse_flags)
