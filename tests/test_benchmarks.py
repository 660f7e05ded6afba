"""The arithmetic the benchmarks report: FLOP counts by hand, the profile's graph walk."""
import jax
import jax.numpy as jnp

from benchmarks import step_profile, train_throughput
from configs import mnist
from jmvae_jax import builder


def test_step_flops_match_a_count_by_hand():
  model, _ = builder.build(mnist.get_config())
  params = model.init(jax.random.PRNGKey(0))
  x, w, h, z = 784, 10, 512, 64
  kernels = (x * h + h * h + 2 * h * z                       # q(z|x)
             + x * h + h * h + w * h + h * h + 2 * 2 * h * z  # q(z|x,w): two branches, 1024-wide heads
             + w * h + h * h + 2 * h * z                      # q(z|w)
             + z * h + h * h + h * x                          # p(x|z)
             + z * h + h * h + h * w)                         # p(w|z)
  forward = 2 * kernels
  no_input_grad = 2 * (x * h + x * h + w * h + w * h)         # first layers read the batch
  assert train_throughput.step_flops_per_image(params) == 3 * forward - no_input_grad


def test_critical_path_and_optimiser_ops_on_a_known_graph():
  graph = {"state_opt_state_mu.1": [], "a": [], "b": ["a"], "c": ["a"],
           "d": ["b", "c"], "e": ["d", "state_opt_state_mu.1"], "f": ["e"], "g": ["c"]}
  duration = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0, "e": 3.0, "f": 0.5, "g": 9.0}
  assert step_profile.critical_path(graph, duration) == 12.0     # a, c, g
  duration["g"] = 1.0
  assert step_profile.critical_path(graph, duration) == 10.5     # a, b, d, e, f
  assert step_profile.optimiser_ops(graph) == {"state_opt_state_mu.1", "e", "f"}


def test_entry_graph_reads_compiled_hlo():
  def f(a, b):
    return jnp.tanh(a @ b) @ b + jnp.sum(a)
  x = jax.device_put(jnp.ones((8, 8)), jax.devices("cpu")[0])   # XLA:CPU's HLO, on any host
  graph = step_profile.entry_graph(jax.jit(f).lower(x, x).compile().as_text())
  names = list(graph)
  for i, (op, deps) in enumerate(graph.items()):    # operands come before their users
    assert all(names.index(d) < i for d in deps), (op, deps)
  roots = [op for op in names if not any(op in deps for deps in graph.values())]
  assert len(roots) == 1
  reach, todo = set(), list(roots)                  # the root depends on both parameters
  while todo:
    op = todo.pop()
    if op not in reach:
      reach.add(op)
      todo += graph[op]
  params = [op for op in names if not graph[op] and op in reach]
  assert len(params) >= 2, graph
  # parameter -> matmul -> (tanh) -> matmul -> add: at least four ops in a chain
  assert step_profile.critical_path(graph, {op: 1.0 for op in graph}) >= 4
