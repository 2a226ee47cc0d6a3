"""Manifest pids: names are numbered, -1 junk and 0 distractor keep meaning."""

import json
import os

import pytest

from keras_reid.data import datasets
from keras_reid.data import inspection
from keras_reid.data import records


def _write(path, rows):
  with open(path, "w") as f:
    f.write("path,pid,camid,split\n")
    for row in rows:
      f.write(",".join(str(x) for x in row) + "\n")


def test_string_pids_keep_junk_and_distractor(tmp_path):
  _write(tmp_path / "m.csv", [
      ("a.jpg", "alice", 0, "train"), ("b.jpg", "bob", 1, "train"),
      ("j.jpg", "-1", 0, "train"),           # junk: not a training class
      ("q.jpg", "alice", 0, "query"), ("g.jpg", "alice", 1, "gallery"),
      ("d.jpg", "0", 1, "gallery"),          # distractor
      ("k.jpg", "-1", 1, "gallery")])        # junk
  ds = datasets.load_dataset("manifest", str(tmp_path / "m.csv"))
  assert sorted(r.pid for r in ds.train) == [1, 2]
  assert ds.pid_names == {1: "alice", 2: "bob"}
  assert [r.pid for r in ds.gallery] == [1, records.DISTRACTOR_PID,
                                         records.JUNK_PID]
  assert ds.query[0].pid == 1
  text, counts = inspection.describe(ds)
  assert counts["num_named_pids"] == 2
  assert counts["num_junk_images"] == 1
  assert counts["num_distractor_images"] == 1
  assert "'alice' -> 1" in text


def test_integer_pids_keep_values(tmp_path):
  _write(tmp_path / "m.csv", [("a.jpg", 7, 0, "train"),
                              ("b.jpg", 0, 1, "gallery"),
                              ("c.jpg", 7, 1, "gallery"),
                              ("d.jpg", 7, 0, "query")])
  ds = datasets.load_dataset("manifest", str(tmp_path / "m.csv"))
  assert [r.pid for r in ds.gallery] == [0, 7] and not ds.pid_names


def test_mixed_pids_reported(tmp_path, caplog):
  _write(tmp_path / "m.csv", [("a.jpg", "7", 0, "train"),
                              ("b.jpg", "alice", 1, "train"),
                              ("c.jpg", "0", 1, "gallery"),
                              ("q.jpg", "alice", 0, "query"),
                              ("g.jpg", "alice", 1, "gallery")])
  ds = datasets.load_dataset("manifest", str(tmp_path / "m.csv"))
  assert ds.pid_names == {1: "7", 2: "alice"}
  assert ds.gallery[0].pid == 0
  assert any("mix integers" in r.getMessage() and "'7'" in r.getMessage()
             for r in caplog.records)
  out = inspection.inspect_dataset(
      "manifest", str(tmp_path / "m.csv"),
      pid_names_json=str(tmp_path / "names.json"))
  assert "integer-like name(s) numbered as names" in out
  assert json.loads((tmp_path / "names.json").read_text()) == {
      "1": "7", "2": "alice"}
  assert json.loads(out.splitlines()[-1])["num_named_pids"] == 2


REID_POOL = os.path.join(os.environ.get("REID_DATA_ROOT", ""), "reid_pool")


@pytest.mark.skipif(not os.path.isdir(REID_POOL),
                    reason="REID_DATA_ROOT/reid_pool missing")
def test_reid_pool_string_pids():
  ds = datasets.load_dataset("manifest", REID_POOL)
  assert len(ds.pid_names) == len({r.pid for r in ds.train}) == 1410
  assert min(ds.pid_names) == 1
  assert ds.pid_names[1] == "3dpes_0001"  # sorted names, numbered from 1


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
