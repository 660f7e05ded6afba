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


def test_list_schedule_on_known_graphs():
  graph = {"state_opt_state_mu.1": [], "a": [], "b": ["a"], "c": ["a"],
           "d": ["b", "c"], "e": ["d", "state_opt_state_mu.1"], "f": ["e"], "g": ["c"]}
  duration = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0, "e": 3.0, "f": 0.5, "g": 9.0}
  # Two cores suffice for the critical path (a, c, g): by hand, a 0-1, c 1-3 beside b 1-6,
  # g 3-12, d 6-7, e 7-10, f 10-10.5; on one core the ops run back to back.
  assert step_profile.list_schedule(graph, duration, cores=2) == 12.0
  assert step_profile.list_schedule(graph, duration, cores=1) == sum(duration.values())
  # Three independent ops of 2 and their join of 1 on two cores: 2 + 2 + 1; with a
  # hand-over of 1 per op: 3 + 3 + 2; and the gap that gives 8 is that hand-over.
  wide = {"x": [], "y": [], "z": [], "w": ["x", "y", "z", "x"]}
  cost = {"x": 2.0, "y": 2.0, "z": 2.0, "w": 1.0}
  assert step_profile.list_schedule(wide, cost, cores=2) == 5.0
  assert step_profile.list_schedule(wide, cost, cores=2, gap=1.0) == 8.0
  assert abs(step_profile.gap_to_match(wide, cost, 2, 8.0) - 1.0) < 1e-6
  assert step_profile.gap_to_match(wide, cost, 2, 4.0) == 0.0


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
