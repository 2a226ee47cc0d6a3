"""A manifest CSV as spreadsheets write it: its bytes, its rows, their checks.

`read_rows(csv_path)` turns a manifest CSV (columns `path,pid,camid` and
optionally `split`; other columns ignored) into `Row`s, one per image, or
raises a ValueError naming the file, the line, the value, what was expected
and the fix. Nothing is guessed, so nothing changes meaning silently:

  * decoding: UTF-8, with or without the BOM a spreadsheet's "CSV UTF-8"
    writes; other bytes (Latin-1 / Windows-1252, UTF-16) and NUL bytes are
    errors naming the line;
  * parsing: Python's csv module in strict mode (a quote opened and never
    closed is an error, not the rest of the file read as one cell); header
    names are matched without case or surrounding spaces;
  * a row lacking a cell of a column the reader uses, or with a non-empty
    cell beyond the header (an unquoted comma), is an error; an empty path
    or pid is an error (an empty pid would otherwise turn every pid into a
    name and renumber them all); an empty camid is -1 (unknown), an empty
    split is train;
  * one image (the same path after normalisation) on several rows: rows
    saying the same (pid, camid, split) are a counted warning and kept once;
    rows disagreeing (two pids, query and gallery, train and a test split)
    are an error naming both lines;
  * rows whose cells are all empty (what a spreadsheet writes for cleared
    rows) are skipped and counted in a warning.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os

from absl import logging

SPLITS = ("train", "query", "gallery")
# The columns the reader uses; every other column is ignored.
REQUIRED_COLUMNS = ("path", "pid", "camid")
OPTIONAL_COLUMNS = ("split",)
_UTF8_FIX = ("Save it as 'CSV UTF-8' from the spreadsheet, or convert it, "
             "e.g. `iconv -f latin1 -t utf-8 IN.csv > OUT.csv` if it is "
             "Latin-1.")


@dataclasses.dataclass(frozen=True)
class Row:
  """One image of a manifest CSV.

  Attributes:
    line: the line of the file its record starts on (1 = the header).
    path: the image path, joined to the CSV's folder (not normalised).
    pid: the pid cell, stripped, never empty.
    camid: the camera, -1 when the cell is empty.
    split: one of SPLITS.
  """
  line: int
  path: str
  pid: str
  camid: int
  split: str


def _decode(csv_path: str, data: bytes) -> str:
  """The text of a manifest: UTF-8, a leading BOM dropped, no NUL."""
  if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
    raise ValueError(
        f"manifest {csv_path!r} is UTF-16 (a spreadsheet's 'Unicode text'); "
        "expected UTF-8 CSV. " + _UTF8_FIX)
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    start = data.rfind(b"\n", 0, e.start) + 1
    end = data.find(b"\n", e.start)
    shown = data[start:end if end >= 0 else len(data)].rstrip(b"\r")
    raise ValueError(
        f"manifest {csv_path!r} line {line}: byte(s) "
        f"{data[e.start:e.end]!r} are not UTF-8 (in {shown!r}); the file "
        "seems written in another encoding, e.g. Latin-1 / Windows-1252, a "
        "spreadsheet's plain 'CSV'. Expected UTF-8. " + _UTF8_FIX) from None
  nul = text.find("\x00")
  if nul >= 0:
    line = text.count("\n", 0, nul) + 1
    raise ValueError(
        f"manifest {csv_path!r} line {line}: a NUL byte; a CSV holds "
        "none (the file is damaged, or UTF-16 without its BOM). Expected "
        "UTF-8 CSV text. " + _UTF8_FIX)
  return text


def _columns(csv_path: str, line: int, header: list[str]) -> dict[str, int]:
  """Column name -> index of the columns the reader uses."""
  names = [h.strip().lower() for h in header]
  columns = {}
  for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
    where = [i for i, n in enumerate(names) if n == name]
    if len(where) > 1:
      raise ValueError(
          f"manifest {csv_path!r} line {line}: column {name!r} appears "
          f"{len(where)} times (columns {[i + 1 for i in where]}); expected "
          "once. Delete or rename the extra column(s).")
    if where:
      columns[name] = where[0]
  missing = [n for n in REQUIRED_COLUMNS if n not in columns]
  if missing:
    hint = ""
    joined = ",".join(header)
    for sep, what in ((";", "semicolons"), ("\t", "tabs")):
      if sep in joined:
        hint = (f" The header seems separated by {what}: save the file with "
                "commas as separator.")
    raise ValueError(
        f"manifest {csv_path!r} lacks column(s) {missing}; its header (line "
        f"{line}) is {header!r}, expected a header `path,pid,camid[,split]`."
        + hint)
  return columns


def _cells(csv_path: str, line: int, row: list[str], header: list[str],
           columns: dict[str, int]) -> dict[str, str]:
  """The stripped cells of the used columns of one row."""
  needed = max(columns.values()) + 1
  if len(row) < needed:
    lacking = [n for n, i in columns.items() if i >= len(row)]
    raise ValueError(
        f"manifest {csv_path!r} line {line}: {len(row)} cell(s) {row!r}, "
        f"lacking {lacking}; expected {len(header)} cells like the header "
        f"{header!r}. Fill in the missing cells (an empty camid is -1, "
        "unknown).")
  extra = [c for c in row[len(header):] if c.strip()]
  if extra:
    raise ValueError(
        f"manifest {csv_path!r} line {line}: {len(row)} cells {row!r}, "
        f"expected {len(header)} like the header {header!r}; the extra "
        f"{extra!r} would shift the columns. Quote a path or name holding a "
        "comma (\"a,b.jpg\"), or add the column to the header.")
  return {n: row[i].strip() for n, i in columns.items()}


def _row(csv_path: str, base: str, line: int, cells: dict[str, str]) -> Row:
  """Checks one row's cells."""
  where = f"manifest {csv_path!r} line {line}"
  if not cells["path"]:
    raise ValueError(f"{where}: empty path; expected an image path relative "
                     "to the CSV. Fill it in or delete the row.")
  if not cells["pid"]:
    raise ValueError(
        f"{where}: empty pid for {cells['path']!r}; expected the person's "
        "identity, an integer or a name (-1 = junk, 0 = distractor). Fill it "
        "in or delete the row.")
  try:
    camid = int(cells["camid"]) if cells["camid"] else -1
  except ValueError:
    raise ValueError(f"{where}: camid {cells['camid']!r} is not an integer "
                     "(-1 = unknown).") from None
  split = cells.get("split", "").lower() or "train"
  if split not in SPLITS:
    raise ValueError(f"{where}: split {cells['split']!r} is not one of "
                     f"{list(SPLITS)} (empty = train).")
  return Row(line, os.path.join(base, cells["path"]), cells["pid"], camid,
             split)


def _conflict(csv_path: str, first: Row, row: Row) -> str:
  """Why two rows of one image disagree."""
  both = f"lines {first.line} and {row.line}"
  if first.pid != row.pid:
    return (f"{both} give image {row.path!r} two pids, {first.pid!r} and "
            f"{row.pid!r}; expected one identity per image. Keep the right "
            "row and delete the other.")
  if {first.split, row.split} == {"query", "gallery"}:
    return (f"{both} put image {row.path!r} in both query and gallery; it "
            "would match itself. Keep it in one of them.")
  if first.split != row.split:
    return (f"{both} put image {row.path!r} in {first.split!r} and "
            f"{row.split!r}; a test image must not be trained on. Keep one "
            "row.")
  return (f"{both} give image {row.path!r} two camids, {first.camid} and "
          f"{row.camid}; expected one. Keep the right row and delete the "
          "other.")


def read_rows(csv_path: str) -> list[Row]:
  """The images of a manifest CSV, checked (see the module docstring).

  Args:
    csv_path: the CSV file; image paths in it are relative to its folder.

  Returns:
    One Row per image, in file order, repeated rows left out.

  Raises:
    ValueError: naming the file, the line, the value, what was expected and
      the fix.
  """
  with open(csv_path, "rb") as f:
    text = _decode(csv_path, f.read())
  base = os.path.dirname(csv_path)
  reader = csv.reader(io.StringIO(text, newline=""), strict=True)
  header, columns = None, None
  rows: list[Row] = []
  seen: dict[str, Row] = {}  # normalised path -> its first row
  repeated, cleared = [], 0
  start = 1
  while True:
    try:
      record = next(reader, None)
    except csv.Error as e:
      raise ValueError(
          f"manifest {csv_path!r} line {start}: not valid CSV ({e}, by line "
          f"{reader.line_num}); a quote opened in a cell must close it, and "
          "a quote inside a quoted cell is written twice (\"\"). Fix the "
          "quoting from line "
          f"{start}.") from None
    if record is None:
      break
    line, start = start, reader.line_num + 1
    if not any(cell.strip() for cell in record):
      cleared += bool(record) and header is not None  # not blank lines
      continue
    if header is None:
      header = record
      columns = _columns(csv_path, line, header)
      continue
    row = _row(csv_path, base, line,
               _cells(csv_path, line, record, header, columns))
    key = os.path.normpath(row.path)
    first = seen.setdefault(key, row)
    if first is row:
      rows.append(row)
    elif (first.pid, first.camid, first.split) == (row.pid, row.camid,
                                                   row.split):
      repeated.append((row.line, first.line))
    else:
      raise ValueError(f"manifest {csv_path!r}: "
                       + _conflict(csv_path, first, row))
  if header is None:
    raise ValueError(f"manifest {csv_path!r} is empty; expected a header "
                     "`path,pid,camid[,split]` and one row per image.")
  if repeated:
    logging.warning(
        "manifest %r: %d row(s) repeat an earlier row of the same image "
        "(e.g. line %d repeats line %d); each image is used once. Delete the "
        "repeated rows to silence this.", csv_path, len(repeated), *repeated[0])
  if cleared:
    logging.warning("manifest %r: %d row(s) with only empty cells skipped.",
                    csv_path, cleared)
  return rows
