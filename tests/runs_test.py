"""keras_reid.runs' atomic writes: whole files or none, no temporary left."""

import json
import os

import pytest

from keras_reid import runs


def test_write_json_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / "deeper" / "out.json")
  runs.write_json(path, {"a": 1})
  runs.write_json(path, {"b": 2})
  with open(path) as f:
    assert json.load(f) == {"b": 2}
  assert os.listdir(tmp_path / "deeper") == ["out.json"]


def test_a_folder_as_the_file_is_one_clear_error_and_leaves_nothing(tmp_path):
  # `inspect --pid_names_json=DIR` and `compare --csv=DIR` left a stray
  # DIR.tmp<pid> file beside the folder.
  folder = tmp_path / "a_folder"
  folder.mkdir()
  with pytest.raises(IsADirectoryError,
                     match=f"{folder} is a folder; expected the path of a "
                     "file to write"):
    runs.write_json(str(folder), {"a": 1})
  assert sorted(os.listdir(tmp_path)) == ["a_folder"]
  assert os.listdir(folder) == []


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(
    tmp_path):
  path = str(tmp_path / "out.json")
  runs.write_json(path, {"old": True})
  with pytest.raises(TypeError):
    runs.write_json(path, {"bad": object()})  # not JSON-serialisable
  with open(path) as f:
    assert json.load(f) == {"old": True}
  assert os.listdir(tmp_path) == ["out.json"]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
