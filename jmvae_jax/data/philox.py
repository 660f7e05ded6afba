"""TensorFlow's stateless Philox random numbers, in jax.numpy, bit for bit.

The MNIST pipeline binarises each image with ``tf.random.stateless_uniform`` keyed by
``tf.random.experimental.stateless_fold_in`` (``alg="philox"``). These functions compute
the same numbers on the device that trains, from 32-bit words, so the images can be
binarised there with the very draws the tf.data pipeline makes (tests compare them).

Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"): a
128-bit counter and a 64-bit key, ten rounds of multiply-high/low and xor. TensorFlow
turns a seed pair (s0, s1) into a key and a counter with one Philox block under a fixed
key (its "scramble"), then draws block after block from that counter; a float32 in
[0, 1) is 23 bits of a word as a mantissa in [1, 2), minus one; a full-range int64 is
two words, low first.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_M = (0xD2511F53, 0xCD9E8D57)          # the round multipliers
_W = (0x9E3779B9, 0xBB67AE85)          # the key's increments between rounds
_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)   # TensorFlow's 0x02461E293EC8F720, low word first


def _u32(x):
  return jnp.asarray(x, jnp.uint32)


def _mulhilo(a: int, b):
  """(low, high) 32-bit words of the 64-bit product of the constant ``a`` and ``b``."""
  b = _u32(b)
  a0, a1 = _u32(a & 0xFFFF), _u32(a >> 16)
  b0, b1 = b & 0xFFFF, b >> 16
  p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
  mid = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)
  return _u32(a) * b, p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)


def block(counter, key):
  """One Philox4x32-10 block: four uint32 words from a counter of four and a key of two
  (arrays of any matching shape)."""
  c0, c1, c2, c3 = (_u32(c) for c in counter)
  k0, k1 = (_u32(k) for k in key)
  for r in range(10):
    lo0, hi0 = _mulhilo(_M[0], c0)
    lo1, hi1 = _mulhilo(_M[1], c2)
    c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    if r < 9:
      k0, k1 = k0 + _u32(_W[0]), k1 + _u32(_W[1])
  return c0, c1, c2, c3


def _looped_block(counter, key):
  """``block`` with its ten rounds in a ``fori_loop``: the same words, but each round's
  four word arrays are materialised. Unrolled, XLA fuses the rounds into the
  interleave that ``uniform`` does after them, a loop over every output that recomputes
  its whole block in scalar code (4x the blocks; about 4 ms a batch of MNIST on a CPU)."""
  shape = jnp.broadcast_shapes(*(jnp.shape(c) for c in counter), *(jnp.shape(k) for k in key))
  state = tuple(jnp.broadcast_to(_u32(v), shape) for v in (*counter, *key))

  def one_round(_, state):
    c0, c1, c2, c3, k0, k1 = state
    lo0, hi0 = _mulhilo(_M[0], c0)
    lo1, hi1 = _mulhilo(_M[1], c2)
    return (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0, k0 + _u32(_W[0]), k1 + _u32(_W[1]))
  return jax.lax.fori_loop(0, 10, one_round, state)[:4]


def scramble(seed):
  """TensorFlow's (key, counter) for the seed pair given as four uint32 words
  (lo(s0), hi(s0), lo(s1), hi(s1)): key = the first two words of one block under the
  fixed key, counter = (0, 0, the last two)."""
  m0, m1, m2, m3 = block(seed, _SCRAMBLE_KEY)
  zero = jnp.zeros_like(m0)
  return (m0, m1), (zero, zero, m2, m3)


def _words(seed):
  """A seed pair of int64s [..., 2] (numpy) as its four uint32 words."""
  s = np.asarray(seed, np.int64).astype(np.uint64)
  return (s[..., 0] & 0xFFFFFFFF, s[..., 0] >> 32, s[..., 1] & 0xFFFFFFFF, s[..., 1] >> 32)


def draw_int64(seed) -> np.ndarray:
  """``stateless_random_uniform(shape=[], seed, dtype=int64, minval=None)``, i.e. the
  first draw of ``stateless_fold_in``; ``seed`` int64 [..., 2], computed on the host."""
  key, counter = scramble(tuple(np.asarray(w, np.uint32) for w in _words(seed)))
  w0, w1, _, _ = block(counter, key)
  lo, hi = np.asarray(w0, np.uint64), np.asarray(w1, np.uint64)
  return (lo | (hi << np.uint64(32))).astype(np.int64)


def fold_in(seed, data) -> np.ndarray:
  """``tf.random.experimental.stateless_fold_in(seed, data, alg="philox")`` for int64
  seeds [..., 2] and data (host)."""
  return np.stack([draw_int64(seed), np.broadcast_to(np.asarray(data, np.int64),
                                                     np.shape(seed)[:-1])], -1)


def uniform(seed_words, n: int):
  """``stateless_uniform(shape=[n], seed)`` (float32 in [0, 1)) for a batch of seeds given
  as four uint32 word arrays [B] (``seed_words``): [B, n], jittable."""
  key, (c0, c1, c2, c3) = scramble(seed_words)
  blocks = -(-n // 4)
  step = jnp.arange(blocks, dtype=jnp.uint32)[None, :]
  counter = (c0[:, None] + step, c1[:, None], c2[:, None], c3[:, None])   # c0 starts at 0
  words = _looped_block(counter, (key[0][:, None], key[1][:, None]))
  bits = jnp.stack(words, -1).reshape(words[0].shape[0], -1)[:, :n]
  mantissa = (bits & 0x7FFFFF) | _u32(0x3F800000)
  return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0
