"""`python -m keras_reid.gallery build|add|remove|search`, in process.

The model is a stand-in (`_PixelModel`: an image's 8x4 thumbnail as its
embedding) so that the commands' plumbing (listing, resumable chunks,
corrupt images, metadata, updates, model checks, thresholds) is tested in
seconds; the files' decoding is the package's own (`validate_images`).
"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from keras_reid.gallery import commands
from keras_reid.gallery import embedding_model
from keras_reid.gallery import index as index_lib
from keras_reid.gallery import ingestion

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class _PixelModel:
  """Embeds an image as its 8x4 RGB thumbnail (96-d), L2-normalised."""
  calls: list = []
  fail_after = None  # raise on this call (a killed build)
  cosine = None  # the Embedder's threshold

  def __init__(self, identity, batch_size=64):
    self.identity = identity
    self.cosine_threshold = _PixelModel.cosine

  def embed(self, paths):
    _PixelModel.calls.append(list(paths))
    if _PixelModel.fail_after is not None and \
        len(_PixelModel.calls) > _PixelModel.fail_after:
      raise KeyboardInterrupt("killed")
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((4, 8)),
                             np.float32).reshape(-1) + 1 for p in paths])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def _model(monkeypatch):
  monkeypatch.setattr(embedding_model, "Model", _PixelModel)
  _PixelModel.calls = []
  _PixelModel.fail_after = None
  _PixelModel.cosine = None


def _saved_model(path, weights=b"weights-a"):
  os.makedirs(os.path.join(path, "variables"), exist_ok=True)
  with open(os.path.join(path, "saved_model.pb"), "wb") as f:
    f.write(b"graph")
  with open(os.path.join(path, "variables", "variables.index"), "wb") as f:
    f.write(weights)
  return str(path)


def _images(folder, n, seed=0, corrupt=()):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(n):
    path = os.path.join(folder, f"im{i:02d}.png")
    if i in corrupt:
      with open(path, "wb") as f:
        f.write(b"\x89PNG not really")
    else:
      Image.fromarray(rng.integers(0, 255, (16, 8, 3), np.uint8)).save(path)
    paths.append(path)
  return paths


def _run(capsys, command, *args, **settings):
  """`python -m keras_reid.gallery COMMAND ARGS --key=value ...`, in process:
  the command with the settings its flags would give."""
  settings = {k: str(v) if isinstance(v, os.PathLike) else v
              for k, v in settings.items()}
  commands.run(command, commands.Settings(**settings), [str(a) for a in args])
  return capsys.readouterr()


def test_build_skips_corrupt_images_and_search_finds_each_image(
    tmp_path, capsys):
  model = _saved_model(tmp_path / "export" / "1")
  paths = _images(str(tmp_path / "gallery"), 7, corrupt=(3,))
  index = str(tmp_path / "index")
  out = _run(capsys, "build", embedder=model, images=tmp_path / "gallery",
             index=index)
  assert "indexed 6 images (1 skipped)" in out.out
  assert "skipped 1 unreadable image(s):" in out.err and paths[3] in out.err
  assert not os.path.exists(os.path.join(index, "pending"))
  manifest = index_lib.read_manifest(index)
  assert manifest["counts"]["images"] == 6
  assert manifest["model"] == {"source": model, "kind": "saved_model"}
  out = _run(capsys, "search", paths[0], paths[5], index=index, k=3)
  lines = out.out.splitlines()
  assert "distances only" in lines[0]
  assert lines[1] == f"{paths[0]}:"
  assert lines[2].split() == ["1", "0.0000", paths[0]]
  assert lines[5] == f"{paths[5]}:"
  assert lines[6].split() == ["1", "0.0000", paths[5]]
  # Building into an existing index is refused.
  with pytest.raises(ValueError, match="already holds an index"):
    _run(capsys, "build", embedder=model, images=tmp_path / "gallery",
         index=index)


def test_a_killed_build_resumes_and_equals_an_uninterrupted_one(
    tmp_path, capsys):
  model = _saved_model(tmp_path / "export" / "1")
  _images(str(tmp_path / "gallery"), 9, corrupt=(4,))
  killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
  _PixelModel.fail_after = 2
  with pytest.raises(KeyboardInterrupt):
    _run(capsys, "build", embedder=model, images=tmp_path / "gallery",
         index=killed, chunk_size=2)
  assert sorted(os.listdir(os.path.join(killed, "pending"))) == [
      "chunk-000000.npz", "chunk-000001.npz", ingestion.PLAN_FILE]
  _PixelModel.fail_after, _PixelModel.calls = None, []
  _run(capsys, "build", embedder=model, images=tmp_path / "gallery",
       index=killed, chunk_size=2)
  # Only the chunks not finished before the kill were embedded again.
  embedded = [p for call in _PixelModel.calls for p in call]
  assert [os.path.basename(p) for p in embedded] == [
      "im05.png", "im06.png", "im07.png", "im08.png"]
  _run(capsys, "build", embedder=model, images=tmp_path / "gallery",
       index=whole, chunk_size=2)
  a, b = index_lib.Gallery.open(killed), index_lib.Gallery.open(whole)
  assert a.metadata.column("path").to_pylist() == \
      b.metadata.column("path").to_pylist()
  np.testing.assert_array_equal(a.embeddings, b.embeddings)
  assert len(a) == 8


def test_pending_build_of_other_images_is_refused(tmp_path, capsys):
  model = _saved_model(tmp_path / "export" / "1")
  _images(str(tmp_path / "gallery"), 5)
  index = str(tmp_path / "index")
  _PixelModel.fail_after = 1
  with pytest.raises(KeyboardInterrupt):
    _run(capsys, "build", embedder=model, images=tmp_path / "gallery",
         index=index, chunk_size=2)
  _PixelModel.fail_after = None
  _images(str(tmp_path / "other"), 3, seed=1)
  with pytest.raises(ValueError, match="unfinished build of other images"):
    _run(capsys, "build", embedder=model, images=tmp_path / "other",
         index=index, chunk_size=2)


def test_manifest_metadata_add_remove(tmp_path, capsys):
  model = _saved_model(tmp_path / "export" / "1")
  paths = _images(str(tmp_path / "imgs"), 6)
  csv_path = tmp_path / "imgs" / "gallery.csv"
  csv_path.write_text("path,pid,camid,time\n"
                      "im00.png,7,2,2026-01-01T10:00\n"
                      "im01.png,,-1,\n"
                      "im02.png,8,1,\n")
  index = str(tmp_path / "index")
  _run(capsys, "build", embedder=model, images=csv_path, index=index)
  out = _run(capsys, "search", paths[0], index=index, k=1)
  assert out.out.splitlines()[2].split() == [
      "1", "0.0000", paths[0], "pid=7", "camid=2", "time=2026-01-01T10:00"]
  out = _run(capsys, "search", paths[1], index=index, k=1)
  assert out.out.splitlines()[2].split() == ["1", "0.0000", paths[1]]

  extra = tmp_path / "extra.csv"
  extra.write_text("path,pid\nimgs/im03.png,9\nimgs/im04.png,9\n"
                   "imgs/im00.png,70\n")
  out = _run(capsys, "add", index=index, images=extra)
  assert "added 2 images, replaced 1" in out.out
  gallery = index_lib.Gallery.open(index)
  assert len(gallery) == 5
  rows = {r["path"]: r["pid"] for r in gallery.metadata.to_pylist()}
  assert rows[paths[0]] == 70 and rows[paths[3]] == 9

  out = _run(capsys, "remove", paths[1], str(tmp_path / "nope.png"),
             index=index)
  assert "removed 1 images; the index holds 4" in out.out
  assert "not in the index: " + str(tmp_path / "nope.png") in out.err
  out = _run(capsys, "search", paths[1], index=index, k=10)
  assert paths[1] not in out.out.split(f"{paths[1]}:")[1]
  with pytest.raises(ValueError, match="nothing removed"):
    _run(capsys, "remove", paths[1], index=index)
  _run(capsys, "remove", index=index, images=extra)
  _run(capsys, "remove", paths[2], index=index)
  with pytest.raises(index_lib.EmptyIndexError, match="holds no images"):
    _run(capsys, "search", paths[0], index=index)


def test_another_model_is_refused_naming_both(tmp_path, capsys):
  model_a = _saved_model(tmp_path / "a" / "1", b"weights-a")
  model_b = _saved_model(tmp_path / "b" / "1", b"weights-b")
  paths = _images(str(tmp_path / "gallery"), 3)
  index = str(tmp_path / "index")
  _run(capsys, "build", embedder=model_a, images=tmp_path / "gallery",
       index=index)
  id_a = embedding_model.identify(model_a).model_id
  id_b = embedding_model.identify(model_b).model_id
  assert id_a != id_b
  for command, args in (("search", [paths[0]]), ("add", [])):
    extra = {"images": tmp_path / "gallery"} if command == "add" else {}
    with pytest.raises(index_lib.ModelMismatchError) as e:
      _run(capsys, command, *args, index=index, embedder=model_b, **extra)
    assert id_a in str(e.value) and id_b in str(e.value)
  assert _PixelModel.calls == [paths]  # only the build embedded


def test_same_person_decision_from_a_saved_model_report(tmp_path, capsys):
  model = _saved_model(tmp_path / "export" / "1")
  paths = _images(str(tmp_path / "gallery"), 4)
  index = str(tmp_path / "index")
  _run(capsys, "build", embedder=model, images=tmp_path / "gallery", index=index)
  gallery = index_lib.Gallery.open(index)
  dist = np.sort(gallery.search(gallery.embeddings[:1], 4).distances[0])
  threshold = float((dist[1] + dist[2]) / 2)  # two "same", two "different"
  report = tmp_path / "eval.json"
  report.write_text(json.dumps({
      "saved_model": model, "verification": {"sir_distance": {
          "threshold": threshold, "eer": 0.1}}}))
  out = _run(capsys, "search", paths[0], index=index, k=4,
             eval_report=report)
  lines = out.out.splitlines()
  assert f"same person if distance <= {threshold:.4f}" in lines[0]
  assert "EER 10.0%" in lines[0]
  assert [line.split()[2] for line in lines[2:6]] == [
      "same", "same", "different", "different"]
  # A run's report ranks raw features: its threshold is not used.
  report.write_text(json.dumps({
      "workdir": str(tmp_path), "verification": {"sir_distance": {
          "threshold": threshold}}}))
  out = _run(capsys, "search", paths[0], index=index, k=4,
             eval_report=report)
  assert "raw embeddings" in out.out.splitlines()[0]
  assert out.out.splitlines()[2].split() == ["1", "0.0000", paths[0]]
  # A cosine threshold applies to any features: d = sqrt(2 - 2 cos).
  cosine = 1 - threshold ** 2 / 2
  for source in ("report", "model"):
    if source == "report":
      report.write_text(json.dumps({"verification": {
          "sir_cosine": {"threshold": cosine},
          "sir_distance": {"threshold": 123.0}}}))
      out = _run(capsys, "search", paths[0], index=index, k=4,
                 eval_report=report)
    else:
      _PixelModel.cosine = cosine
      out = _run(capsys, "search", paths[0], index=index, k=4)
    lines = out.out.splitlines()
    assert f"same person if distance <= {threshold:.4f}" in lines[0], source
    assert f"cosine similarity >= {cosine:.4f}" in lines[0]
    assert [line.split()[2] for line in lines[2:6]] == [
        "same", "same", "different", "different"]


def _subprocess(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "keras_reid.gallery", *args],
                         cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)


def test_command_line_errors_are_one_line(tmp_path):
  proc = _subprocess("search", f"--index={tmp_path / 'none'}", "a.jpg")
  assert proc.returncode == 1
  assert proc.stderr.startswith("error: ") and "has no manifest.json" in \
      proc.stderr and "Traceback" not in proc.stderr
  proc = _subprocess("frobnicate", "--index=x")
  assert proc.returncode != 0 and "one of build, add, remove, search" in \
      proc.stderr


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
