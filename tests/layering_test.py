"""The package's import structure: one-way floors between its folders.

Floors, lowest first: the config floor (schema.py, losses.py with the loss
table, config.py) -> data, models -> training -> evaluation of a run ->
serving -> entry points; the metric and ranking code
(keras_reid/evaluation/) sits below training, the evaluation of a finished
run (keras_reid/run_evaluation.py) above it. Each test parses every import in
keras_reid/ (top-level and inside functions) without importing anything.
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "keras_reid")

# The lowest floors may not import these.
LOW_UNITS = ("data", "models", "losses")
HIGH_UNITS = ("training", "evaluation", "serving")
# The floor below all others: the config schema, the loss table that
# config.describe_run reads, the config helpers and the keys' valid ranges
# (TensorFlow-free, as tests/tf_free_test.py checks).
CONFIG_FLOOR = ("schema", "losses", "config", "config_ranges")


def _unit(module: str) -> str | None:
  """keras_reid.<unit>[.rest] -> unit (a folder or a top-level module)."""
  parts = module.split(".")
  if parts[0] != "keras_reid" or len(parts) < 2:
    return None
  return parts[1]


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
  if rel[-1] == "__init__":
    rel = rel[:-1]
  return ".".join(rel)


def package_imports(root: str = PACKAGE) -> list[tuple[str, str, str, int]]:
  """(importing module, imported module, file, line) for every keras_reid import."""
  out = []
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        tree = ast.parse(f.read(), path)
      importer = _module_name(path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
          # `from keras_reid.data import pipeline` names module data.pipeline;
          # `from keras_reid import config` names keras_reid.config.
          targets = [f"{node.module}.{a.name}" for a in node.names]
        else:
          continue
        for target in targets:
          if target.startswith("keras_reid."):
            out.append((importer, target, os.path.relpath(path, REPO),
                        node.lineno))
  return out


def unit_graph(imports) -> dict[tuple[str, str], list[str]]:
  """(importing unit, imported unit) -> ["file:line", ...], self-edges dropped."""
  edges: dict[tuple[str, str], list[str]] = {}
  for importer, target, path, line in imports:
    a, b = _unit(importer), _unit(target)
    if a and b and a != b:
      edges.setdefault((a, b), []).append(f"{path}:{line}")
  return edges


def cycles(edges) -> list[list[str]]:
  """Strongly connected components of more than one unit (Tarjan)."""
  graph: dict[str, list[str]] = {}
  for a, b in edges:
    graph.setdefault(a, []).append(b)
    graph.setdefault(b, [])
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_cycle_finder_finds_a_cycle_and_only_cycles():
  edges = {("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): [],
           ("d", "e"): []}
  assert cycles(edges) == [["a", "b", "c"]]
  assert cycles({("a", "b"): [], ("b", "c"): []}) == []


def test_parser_sees_the_package_imports():
  edges = unit_graph(package_imports())
  # Known one-way edges, so that an empty parse cannot pass the tests below.
  assert ("training", "evaluation") in edges
  assert ("run_evaluation", "models") in edges
  assert ("training", "runs") in edges
  assert ("training", "data") in edges


def test_no_import_cycle_between_folders():
  edges = unit_graph(package_imports())
  found = cycles(edges)
  details = [f"{a} -> {b}: {where}" for (a, b), where in sorted(edges.items())
             if any(a in c and b in c for c in found)]
  assert not found, (
      f"import cycles between keras_reid folders {found}:\n" +
      "\n".join(details) + "\nMove the shared code to the lower floor.")


def test_low_floors_do_not_import_training_evaluation_or_serving():
  bad = [f"{path}:{line}: {importer} imports {target}"
         for importer, target, path, line in package_imports()
         if _unit(importer) in LOW_UNITS and _unit(target) in HIGH_UNITS]
  assert not bad, ("data/, models/ and losses.py sit below training, "
                   "evaluation and serving:\n" + "\n".join(bad))


def test_serving_and_evaluation_do_not_import_training():
  # A finished run is read through keras_reid.runs and models.restore.
  bad = [f"{path}:{line}: {importer} imports {target}"
         for importer, target, path, line in package_imports()
         if _unit(importer) in ("serving", "evaluation", "run_evaluation")
         and _unit(target) == "training"]
  assert not bad, "\n".join(bad)


# The run directory's files and folders (keras_reid/runs.py names them).
RUN_DIRECTORY_NAMES = ("progress.json", "metrics.json", "runtime.json",
                       "checkpoints", "cotrain", "pid_names")
RUNS_MODULE = os.path.join("keras_reid", "runs.py")


def _docstring_nodes(tree) -> set[int]:
  nodes = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                         ast.AsyncFunctionDef)) and node.body:
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        nodes.add(id(first.value))
  return nodes


def run_directory_literals(paths) -> list[str]:
  """"file:line: 'name'" for each string literal (not a docstring) that is a
  run directory name, alone or as the last part of a path."""
  out = []
  for path in paths:
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    docstrings = _docstring_nodes(tree)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings):
        last = node.value.split("/")[-1]
        if last in RUN_DIRECTORY_NAMES:
          out.append(f"{os.path.relpath(path, REPO)}:{node.lineno}: "
                     f"{node.value!r}")
  return out


def _python_files(*folders: str) -> list[str]:
  return sorted(os.path.join(folder, name)
                for top in folders
                for folder, _, files in os.walk(os.path.join(REPO, top))
                for name in files if name.endswith(".py"))


def test_only_runs_module_names_the_run_directory():
  found = run_directory_literals(
      p for p in _python_files("keras_reid", "bench")
      if os.path.relpath(p, REPO) != RUNS_MODULE)
  assert not found, (
      "the run directory's layout belongs to keras_reid/runs.py; use its "
      "paths (runs.metrics_path, runs.Progress, ...) instead of:\n"
      + "\n".join(found))


def test_run_directory_check_finds_a_bypass(tmp_path):
  bypass = tmp_path / "bypass.py"
  bypass.write_text('"""Mentions metrics.json in prose."""\n'
                    'import os\n'
                    'PATH = os.path.join("run", "metrics.json")\n'
                    'OTHER = f"{1}/progress.json"\n'
                    'TAG = "eval/rank1"\n')
  found = run_directory_literals([str(bypass)])
  assert [f.split(": ", 1)[1] for f in found] == [
      "'metrics.json'", "'/progress.json'"]


def test_config_floor_imports_only_itself():
  bad = [f"{path}:{line}: {importer} imports {target}"
         for importer, target, path, line in package_imports()
         if _unit(importer) in CONFIG_FLOOR
         and _unit(target) not in CONFIG_FLOOR]
  assert not bad, ("schema.py, losses.py, config.py and config_ranges.py sit below "
                   "every other "
                   "floor:\n" + "\n".join(bad))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
