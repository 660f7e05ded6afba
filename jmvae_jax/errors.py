"""The one exception type for bad user input, raised before anything compiles, and the
checks every validator shares."""
import numpy as np


class ConfigError(ValueError):
  """A config field, file or batch that the library cannot use.

  The message is one line: the field (or file) and what would be valid.
  """


def allowed(field: str, value, options) -> ConfigError:
  """A ConfigError for ``field`` whose ``value`` is not among ``options``."""
  return ConfigError(
      f"{field}={value!r} is not valid; allowed: {', '.join(map(repr, options))}")


def is_int(v) -> bool:
  """An int (numpy's too), not a bool."""
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
