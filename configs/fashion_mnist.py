"""The MNIST set-up on Fashion-MNIST (x = image, w = one of 10 clothing classes).

Offline, from Debian's package ``dataset-fashion-mnist``:
  python launch.py --config=configs/fashion_mnist.py --workdir=/tmp/fmnist
"""
from configs import common, mnist


def get_config(arg: str = ""):
  common.check_arg(arg, "fashion_mnist.py")
  c = mnist.get_config(arg)
  c.data = mnist.data_config("fashion_mnist")
  c.data.source = "idx"        # /usr/share/datasets/fashion-mnist; "tfds" where it downloads
  return c
