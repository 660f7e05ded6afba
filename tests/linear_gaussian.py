"""A JMVAE whose likelihoods are known exactly: linear-Gaussian decoders.

z ~ N(0, I); x = A z + b + N(0, s_x I); w = C z + e + N(0, s_w I). Every decoder is
one Dense layer (``decoder_hidden=()``) and every encoder is linear
(``hidden=()``), so log p(x), log p(x, w), log p(x | w) and the exact posterior
p(z | x, w) have closed forms, computed here in float64 numpy.
"""
import ml_collections
import numpy as np

VARIANCES = {"w": 0.3, "x": 0.5}


def config(objective="jmvae_kl", latent_dim=2, dims=(("x", 3), ("w", 2))):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict()
  c.model.latent_dim = latent_dim
  c.model.x = "x"
  c.model.modalities = ml_collections.ConfigDict()
  for name, d in dims:
    c.model.modalities[name] = dict(likelihood="gaussian", shape=(d,), variance=VARIANCES[name],
                                    hidden=(), decoder_hidden=())
  c.objective = ml_collections.ConfigDict(dict(name=objective, alpha=0.5))
  return c


def decoder_affine(params, name):
  """(A, b) of the decoder of ``name``: mean = A z + b."""
  p = params["decoder"][name]["out"]
  return np.asarray(p["kernel"], np.float64).T, np.asarray(p["bias"], np.float64)


def joint_gaussian(params, names):
  """Mean, covariance and loading matrix H of the stacked observation [x; w]."""
  parts = [decoder_affine(params, n) for n in names]
  H = np.concatenate([a for a, _ in parts], 0)
  mu = np.concatenate([b for _, b in parts], 0)
  noise = np.concatenate([np.full(len(b), VARIANCES[n]) for n, (_, b) in zip(names, parts)])
  return mu, H @ H.T + np.diag(noise), H, noise


def log_normal(y, mu, cov):
  d = y - mu
  _, logdet = np.linalg.slogdet(cov)
  return -0.5 * (len(mu) * np.log(2 * np.pi) + logdet + d @ np.linalg.solve(cov, d))


def log_marginal(params, names, data):
  """Exact log p of the modalities ``names`` for one example ``data`` (dict of vectors)."""
  mu, cov, _, _ = joint_gaussian(params, names)
  y = np.concatenate([np.asarray(data[n], np.float64) for n in names])
  return log_normal(y, mu, cov)


def exact_posterior(params, names, data):
  """Mean and covariance of p(z | modalities ``names``)."""
  mu, _, H, noise = joint_gaussian(params, names)
  y = np.concatenate([np.asarray(data[n], np.float64) for n in names])
  prec = np.eye(H.shape[1]) + H.T @ (H / noise[:, None])
  cov = np.linalg.inv(prec)
  return cov @ H.T @ ((y - mu) / noise), cov


def kl_diag_to_full(mq, varq, mp, covp):
  """KL(N(mq, diag varq) || N(mp, covp)) in float64."""
  prec = np.linalg.inv(covp)
  d = mp - mq
  _, logdet_p = np.linalg.slogdet(covp)
  return 0.5 * (np.trace(prec * varq[None, :]) + d @ prec @ d - len(mq) + logdet_p
                - np.sum(np.log(varq)))


def sample_data(params, names, n, seed=0):
  """n draws of every modality from the model itself."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, params["decoder"][names[0]]["out"]["kernel"].shape[0]))
  out = {}
  for name in names:
    a, b = decoder_affine(params, name)
    out[name] = (z @ a.T + b + rng.normal(size=(n, len(b))) * np.sqrt(VARIANCES[name])
                 ).astype(np.float32)
  return out
