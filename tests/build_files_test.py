"""BUILD files cover the tests: a py_test per test file, all in //:all_tests."""

from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bazel's sandbox holds only declared inputs, not the source tree these tests
# read; they run under pytest (README: python3 -m pytest).
pytestmark = pytest.mark.skipif(
    "TEST_SRCDIR" in os.environ,
    reason="reads the whole source tree; run with pytest")
_PY_TEST = re.compile(r'py_test\(\s*name = "([^"]+)",\s*[^)]*?srcs = \["([^"]+)"\]',
                      re.S)


def _py_tests() -> dict[str, str]:
  """//tests/...:name -> the file it runs, from every BUILD under tests/."""
  out = {}
  for folder, _, files in os.walk(os.path.join(REPO, "tests")):
    if "BUILD" not in files:
      continue
    package = os.path.relpath(folder, REPO)
    with open(os.path.join(folder, "BUILD")) as f:
      for name, src in _PY_TEST.findall(f.read()):
        out[f"//{package}:{name}"] = os.path.join(package, src)
  return out


def test_every_test_file_has_a_py_test():
  covered = set(_py_tests().values())
  files = {os.path.relpath(os.path.join(folder, name), REPO)
           for folder, _, names in os.walk(os.path.join(REPO, "tests"))
           for name in names if name.endswith("_test.py")}
  assert len(files) > 20
  assert not files - covered, (
      f"test files without a py_test in their BUILD: {sorted(files - covered)}")


def test_every_test_file_runs_pytest_as_its_main():
  # Bazel runs a py_test's file as a script: without this block its tests
  # would be defined, never run, and the target would pass.
  block = re.compile(r'^if __name__ == "__main__":\n  raise SystemExit\('
                     r'pytest\.main\(\[__file__', re.M)
  missing = []
  for test in _py_tests().values():
    with open(os.path.join(REPO, test)) as f:
      if not block.search(f.read()):
        missing.append(test)
  assert not missing, (
      "test files without `if __name__ == \"__main__\": raise SystemExit("
      f"pytest.main([__file__, ...]))`: {sorted(missing)}")


def test_root_suite_lists_every_py_test():
  with open(os.path.join(REPO, "BUILD")) as f:
    root = f.read()
  suite = set(re.findall(r'"(//tests[^"]*)"', root))
  tests = set(_py_tests())
  assert not tests - suite, (
      f"py_tests missing from //:all_tests in BUILD: {sorted(tests - suite)}")
  assert not suite - tests, f"//:all_tests names unknown tests: {sorted(suite - tests)}"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
