"""Hostile manifest CSVs (`--dataset=manifest`), as spreadsheets write them.

The reader (keras_reid/data/datasets/manifest.py, manifest_csv.py) is reached
from train, evaluate and `python -m keras_reid.data.inspect`. Guaranteed:
  * a UTF-8 BOM, CRLF line ends, header names in another case, empty cells
    beyond the header and rows with only empty cells load as the plain file
    does (the cleared rows counted in a warning);
  * Latin-1 / Windows-1252 bytes, UTF-16, NUL bytes, a row lacking a used
    cell, a non-empty cell beyond the header, an unclosed quote, an empty
    path or pid are each a ValueError naming the file, the line and the
    value (an empty pid used to turn every pid into a name, renumbering
    them all);
  * one image on rows that disagree (two pids, query and gallery, train and
    query, two camids) is an error naming both lines; rows repeating an
    earlier row exactly are used once and counted in a warning;
  * query images without gallery images (or the reverse) are an error (a run
    used to train, exit 0 and never evaluate); queries the evaluator will
    skip (no gallery image of their pid from another camera) are a counted
    warning naming their lines (when that is every query, training and
    evaluation refuse the split with the evaluator's NoValidQueryError);
  * the command line prints such an error as one line;
  * the real manifests (REID_DATA_ROOT) load exactly as a plain csv reading
    of them says, with no warning.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import subprocess
import sys

import pytest

from keras_reid.data import datasets
from keras_reid.data import records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ROWS = ["path,pid,camid,split", "a.jpg,alice,0,train", "b.jpg,bob,1,train",
        "q.jpg,alice,0,query", "g.jpg,alice,1,gallery"]


def _write(path, lines, encoding="utf-8", newline="\n"):
  path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
  return str(path)


def _load(path):
  return datasets.load_dataset("manifest", path)


def _error(path):
  """The message of the ValueError reading `path`; it names the file."""
  with pytest.raises(ValueError) as e:
    _load(path)
  message = str(e.value)
  assert repr(path) in message, message
  return message


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING]


def test_spreadsheet_export_loads_like_the_plain_file(tmp_path, caplog):
  plain = _load(_write(tmp_path / "plain.csv", ROWS))
  # Excel's "CSV UTF-8": a BOM, CRLF, its header as typed, a cleared row
  # (",,,"), the used range's empty cells written on every row.
  sheet = ["Path, PID ,CamID,Split,"] + [r + "," for r in ROWS[1:3]] + [
      ",,,,"] + [r + "," for r in ROWS[3:]] + [",,,,"]
  caplog.clear()
  ds = _load(_write(tmp_path / "sheet.csv", sheet, "utf-8-sig", "\r\n"))
  assert [(os.path.basename(r.path), r.pid, r.camid) for r in ds.train] == [
      (os.path.basename(r.path), r.pid, r.camid) for r in plain.train]
  assert [(r.pid, r.camid) for r in ds.query + ds.gallery] == [
      (r.pid, r.camid) for r in plain.query + plain.gallery]
  assert ds.pid_names == {1: "alice", 2: "bob"}
  assert any("2 row(s) with only empty cells skipped" in w
             for w in _warnings(caplog)), _warnings(caplog)


def test_latin1_bytes_name_the_line_and_the_byte(tmp_path):
  path = _write(tmp_path / "m.csv",
                ROWS[:2] + ["caf\u00e9.jpg,bob,1,train"] + ROWS[3:], "latin-1")
  message = _error(path)
  assert "line 3" in message and r"b'\xe9'" in message
  assert "UTF-8" in message and "iconv" in message


def test_utf16_is_named(tmp_path):
  message = _error(_write(tmp_path / "m.csv", ROWS, "utf-16"))
  assert "UTF-16" in message and "CSV UTF-8" in message


def test_nul_byte_names_the_line(tmp_path):
  message = _error(_write(tmp_path / "m.csv",
                          ROWS[:3] + ["q\x00.jpg,alice,0,query"] + ROWS[4:]))
  assert "line 4" in message and "NUL" in message


def test_short_row_names_the_line_and_the_missing_cells(tmp_path):
  message = _error(_write(tmp_path / "m.csv",
                          ROWS[:2] + ["b.jpg,bob"] + ROWS[3:]))
  assert "line 3" in message and "['camid', 'split']" in message


def test_a_header_column_missing_only_its_ignored_cells_is_fine(tmp_path):
  # The used cells are all there; the missing trailing "source" is ignored.
  ds = _load(_write(tmp_path / "m.csv", [
      "path,pid,camid,split,source", "a.jpg,7,0,train,x", "b.jpg,7,1,train"]))
  assert [r.pid for r in ds.train] == [7, 7]
  message = _error(_write(tmp_path / "n.csv", [
      "path,pid,camid,split,source", "a.jpg,7,0,train,x", "b.jpg,7,1"]))
  assert "line 3" in message and "['split']" in message


def test_unquoted_comma_shifting_the_columns_is_refused(tmp_path):
  # Read as path "my", pid "photo.jpg", camid 3 before.
  message = _error(_write(tmp_path / "m.csv", [
      "path,pid,camid", "a.jpg,3,0", "my,photo.jpg,3,0"]))
  assert "line 3" in message and "['0']" in message and "Quote" in message
  ds = _load(_write(tmp_path / "ok.csv", [
      "path,pid,camid", "a.jpg,3,0", '"my,photo.jpg",3,1']))
  assert ds.train[1].path.endswith("my,photo.jpg")


def test_unclosed_quote_names_the_line_it_opens_on(tmp_path):
  # Not strict, csv reads the rest of the file into one cell.
  message = _error(_write(tmp_path / "m.csv", [
      "path,pid,camid", "a.jpg,3,0", '"b.jpg,3,0', "c.jpg,4,0", "d.jpg,4,1"]))
  assert "line 3" in message and "not valid CSV" in message


def test_empty_pid_is_an_error_not_a_renumbering(tmp_path):
  # Before: "" made every pid a name, 7 and 9 became 2 and 3.
  message = _error(_write(tmp_path / "m.csv", [
      "path,pid,camid", "a.jpg,7,0", "b.jpg, ,1", "c.jpg,9,0"]))
  assert "line 3: empty pid for 'b.jpg'" in message
  message = _error(_write(tmp_path / "n.csv", [
      "path,pid,camid", "a.jpg,7,0", ",7,1"]))
  assert "line 3: empty path" in message


@pytest.mark.parametrize("second,what", [
    ("./img/a.jpg,bob,0,train", "two pids, 'alice' and 'bob'"),
    ("img/a.jpg,alice,1,train", "two camids, 0 and 1"),
    ("img/a.jpg,alice,0,query", "in 'train' and 'query'"),
])
def test_one_image_on_rows_that_disagree(tmp_path, second, what):
  message = _error(_write(tmp_path / "m.csv", [
      "path,pid,camid,split", "img/a.jpg,alice,0,train", "b.jpg,bob,1,train",
      second, "q.jpg,bob,0,query", "g.jpg,bob,1,gallery"]))
  assert "lines 2 and 4" in message and what in message, message


def test_one_image_in_query_and_gallery(tmp_path):
  # With camid -1 the query would find itself at rank 1.
  message = _error(_write(tmp_path / "m.csv", [
      "path,pid,camid,split", "a.jpg,1,-1,train", "q.jpg,2,-1,query",
      "g.jpg,2,-1,gallery", "q.jpg,2,-1,gallery"]))
  assert "lines 3 and 5" in message and "both query and gallery" in message


def test_repeated_rows_are_used_once_and_counted(tmp_path, caplog):
  caplog.clear()
  ds = _load(_write(tmp_path / "m.csv", ROWS + [
      "a.jpg,alice,0,train", " ./b.jpg , bob ,1,TRAIN", "a.jpg,alice,0,"]))
  assert len(ds.train) == 2 and len(ds.query) == len(ds.gallery) == 1
  assert any("3 row(s) repeat an earlier row" in w and "line 6 repeats line 2"
             in w for w in _warnings(caplog)), _warnings(caplog)


@pytest.mark.parametrize("split,lacks", [("query", "gallery"),
                                         ("gallery", "query")])
def test_a_test_split_without_its_other_half(tmp_path, split, lacks):
  # Before: loaded, and a run trained, exited 0 and never evaluated.
  message = _error(_write(tmp_path / "m.csv", ROWS[:3] + [
      f"t.jpg,alice,0,{split}"]))
  assert f"1 {split} image(s) and no {lacks} image" in message


def test_queries_the_evaluator_skips(tmp_path, caplog):
  rows = ["path,pid,camid,split", "a.jpg,1,0,train",
          "q1.jpg,2,0,query", "g1.jpg,2,1,gallery",      # scored
          "q2.jpg,3,0,query", "g2.jpg,3,0,gallery",      # own camera only
          "q3.jpg,4,0,query",                            # no gallery of 4
          "q4.jpg,-1,0,query"]                           # junk
  caplog.clear()
  ds = _load(_write(tmp_path / "m.csv", rows))
  assert len(ds.query) == 4
  assert any("3 of 4 query image(s) (e.g. line 5 pid 3, line 7 pid 4, line 8 "
             "pid -1)" in w and "scores the other 1" in w
             for w in _warnings(caplog)), _warnings(caplog)
  # None scorable: training and evaluation refuse it (NoValidQueryError,
  # tests/training/start_and_images_test.py); the lines are named here.
  caplog.clear()
  _load(_write(tmp_path / "none.csv", rows[:2] + rows[4:]))
  assert any("3 of 3 query image(s) (e.g. line 3 pid 3" in w and
             "no query can be scored" in w for w in _warnings(caplog)), (
                 _warnings(caplog))
  # An unknown camera keeps a same-camid match, as the evaluator does.
  caplog.clear()
  _load(_write(tmp_path / "unknown.csv", [
      "path,pid,camid,split", "q.jpg,bob,-1,query", "g.jpg,bob,-1,gallery"]))
  assert not _warnings(caplog)


def test_folder_tree_without_gallery(tmp_path):
  for folder in ("train/p1", "query/p2"):
    os.makedirs(tmp_path / folder)
    (tmp_path / folder / "0.jpg").write_bytes(b"")
  with pytest.raises(ValueError, match="1 query image.* no gallery image"):
    _load(str(tmp_path))


@pytest.mark.slow
def test_command_line_prints_one_line(tmp_path):
  path = _write(tmp_path / "m.csv",
                ROWS[:2] + ["caf\u00e9.jpg,bob,1,train"] + ROWS[3:], "cp1252")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.data.inspect", "--dataset=manifest",
       f"--root={path}"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"error: manifest {path!r} line 3: byte(s) b'\\xe9'"), proc.stderr


REAL = [("reid_pool", 3984, 1410), ("extra_pool", 7167, 272)]
DATA_ROOT = os.environ.get("REID_DATA_ROOT", "")


@pytest.mark.skipif(not DATA_ROOT, reason="REID_DATA_ROOT unset")
@pytest.mark.parametrize("name,num_images,num_ids", REAL)
def test_real_manifests_load_as_before(name, num_images, num_ids, caplog):
  folder = os.path.abspath(os.path.join(DATA_ROOT, name))
  if not os.path.isdir(folder):
    pytest.skip(f"{folder} missing")
  caplog.clear()
  ds = _load(folder)
  assert not _warnings(caplog)
  # Oracle: a plain csv reading, names numbered 1..N in sorted order.
  with open(os.path.join(folder, "manifest.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  number = {n: i + 1 for i, n in enumerate(sorted({r["pid"] for r in rows}))}
  assert ds.train == [
      records.Record(os.path.join(folder, r["path"]), number[r["pid"]],
                     int(r["camid"])) for r in rows]
  assert not ds.query and not ds.gallery
  assert (len(ds.train), len(ds.pid_names)) == (num_images, num_ids)
  assert all(re.fullmatch(r"[a-z0-9]+_\d+", n) for n in ds.pid_names.values())


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
