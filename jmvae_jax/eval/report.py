"""The paper's Table 1 layout in markdown."""
from __future__ import annotations


_ROWS = (("log p(x)", "marginal_multiple", "marginal_single"),
         ("log p(x\\|w)", "conditional_multiple", "conditional_single"),
         ("log p(x,w)", "joint", None))


def _cell(est, name):
  if name is None or name not in est:
    return ""
  e = est[name]
  return f"{e['mean']:.2f} ± {e['stderr']:.2f}"


def markdown_table(result) -> str:
  """Table 1's layout: rows log p(x), log p(x|w), log p(x,w); columns multiple / single.

  ``result`` is one ``estimate`` result, or {row label: result} for one table per
  quantity with a row per model, as in the paper."""
  if "estimates" in result:
    lines = ["| | multiple | single |", "| --- | --- | --- |"]
    est = result["estimates"]
    lines += [f"| {row} | {_cell(est, a)} | {_cell(est, b)} |" for row, a, b in _ROWS]
    return "\n".join(lines)
  blocks = []
  for row, a, b in _ROWS:
    lines = [f"| {row} | multiple | single |", "| --- | --- | --- |"]
    for label, res in result.items():
      est = res["estimates"]
      if _cell(est, a) or _cell(est, b):
        lines.append(f"| {label} | {_cell(est, a)} | {_cell(est, b)} |")
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks)
