"""Tests of the dataset readers on small generated folders in each layout."""

import csv
import json
import os

import h5py
import numpy as np
from PIL import Image
import pytest
import scipy.io

from keras_reid.data import datasets
from keras_reid.data import inspection

_PIXEL = Image.fromarray(np.zeros((8, 4, 3), np.uint8))


def _load(name, root, **kwargs):
  """load_dataset on a tiny fake copy, which lacks the published counts."""
  return datasets.load_dataset(name, root, allow_incomplete=True, **kwargs)


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  _PIXEL.save(path)


def test_registry_and_unknown_name():
  assert set(datasets.DATASETS) == {
      "market1501", "dukemtmcreid", "msmt17", "cuhk03", "viper", "prid2011",
      "cuhk01", "manifest", "synthetic"}
  with pytest.raises(ValueError, match="market1501"):
    datasets.load_dataset("market", "/nowhere")


def test_market1501(tmp_path):
  root = tmp_path / "Market-1501-v15.09.15"
  for n in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
            "0007_c3s2_010101_02.jpg"):
    _touch(str(root / "bounding_box_train" / n))
  for n in ("0004_c2s1_000001_01.jpg", "0000_c1s1_000002_01.jpg",
            "-1_c6s1_000003_01.jpg"):
    _touch(str(root / "bounding_box_test" / n))
  _touch(str(root / "query" / "0004_c1s1_000004_01.jpg"))
  (root / "query" / "Thumbs.db").write_text("")
  ds = _load("market1501", str(tmp_path))  # folder above
  assert [(r.pid, r.camid) for r in ds.train] == [(2, 0), (2, 1), (7, 2)]
  assert sorted(r.pid for r in ds.gallery) == [-1, 0, 4]  # kept as-is
  assert ds.query[0].camid == 0
  _touch(str(root / "query" / "frame12.jpg"))
  with pytest.raises(ValueError, match=r"frame12\.jpg.*0002_c1s1"):
    _load("market1501", str(root))
  with pytest.raises(FileNotFoundError, match="bounding_box_train"):
    _load("market1501", str(tmp_path / "nothing"))


def test_market_empty_split(tmp_path):
  for sub in ("bounding_box_train", "bounding_box_test", "query"):
    os.makedirs(tmp_path / sub)
  _touch(str(tmp_path / "bounding_box_train" / "0001_c1s1_000001_01.jpg"))
  with pytest.raises(ValueError, match="query split is empty"):
    _load("market1501", str(tmp_path))


def test_dukemtmcreid(tmp_path):
  root = tmp_path / "DukeMTMC-reID"
  _touch(str(root / "bounding_box_train" / "0001_c2_f0046182.jpg"))
  _touch(str(root / "bounding_box_test" / "0005_c8_f0000001.jpg"))
  _touch(str(root / "query" / "0005_c1_f0000002.jpg"))
  ds = _load("dukemtmcreid", str(tmp_path))
  assert (ds.train[0].pid, ds.train[0].camid) == (1, 1)
  assert ds.gallery[0].camid == 7


def test_msmt17(tmp_path):
  root = tmp_path / "MSMT17_V1"
  lists = {
      "list_train.txt": [("0000/0000_000_01_0303morning_0015_0.jpg", 0)],
      "list_val.txt": [("0001/0001_003_15_0303noon_0002_1.jpg", 1)],
      "list_query.txt": [("0000/0000_000_05_0303afternoon_0001_0.jpg", 0)],
      "list_gallery.txt": [("0000/0000_001_07_0303afternoon_0003_0.jpg", 0),
                           ("0002/0002_004_02_0303morning_0004_0.jpg", 2)],
  }
  os.makedirs(root)
  for name, rows in lists.items():
    with open(root / name, "w") as f:
      f.writelines(f"{p} {label}\n" for p, label in rows)
  ds = datasets.load_dataset("msmt17", str(tmp_path))
  assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 14)]
  assert ds.train[0].path.endswith(
      os.path.join("train", "0000", "0000_000_01_0303morning_0015_0.jpg"))
  assert ds.query[0].path.startswith(str(root / "test"))
  assert [r.camid for r in ds.gallery] == [6, 1]


def _viper(root, n=10):
  for pid in range(n):
    _touch(str(root / "cam_a" / f"{pid:03d}_0.bmp"))
    _touch(str(root / "cam_b" / f"{pid:03d}_90.bmp"))


def test_viper_splits(tmp_path):
  _viper(tmp_path / "VIPeR")
  ds0 = _load("viper", str(tmp_path), split=0)
  again = _load("viper", str(tmp_path / "VIPeR"), split=0)
  ds1 = _load("viper", str(tmp_path), split=1)
  assert ds0.summary() == dict(
      num_train_ids=5, num_train_images=10, num_query_ids=5,
      num_query_images=5, num_gallery_ids=5, num_gallery_images=5,
      num_cameras=2)
  assert ds0.train == again.train                  # reproducible
  assert {r.pid for r in ds0.train} != {r.pid for r in ds1.train}
  assert {r.pid for r in ds0.train}.isdisjoint(r.pid for r in ds0.query)
  assert {r.camid for r in ds0.query} == {0}
  assert {r.camid for r in ds0.gallery} == {1}
  with pytest.raises(FileNotFoundError, match="cam_a"):
    _load("viper", str(tmp_path / "VIPeR" / "cam_a"))


def test_prid2011(tmp_path):
  base = tmp_path / "prid_2011" / "single_shot"
  for pid in range(1, 9):
    _touch(str(base / "cam_a" / f"person_{pid:04d}.png"))
  for pid in range(1, 13):
    _touch(str(base / "cam_b" / f"person_{pid:04d}.png"))
  ds = _load("prid2011", str(tmp_path), num_shared=6)
  train = {r.pid for r in ds.train}
  assert len(train) == 3 and train <= set(range(1, 7))
  assert len(ds.train) == 6
  test = {r.pid for r in ds.query}
  assert len(test) == 3 and not test & train and test <= set(range(1, 7))
  # Gallery: cam_b minus the training persons (test + cam_b-only persons).
  assert {r.pid for r in ds.gallery} == set(range(1, 13)) - train
  assert {r.camid for r in ds.gallery} == {1}


def test_cuhk01(tmp_path):
  for pid in range(1, 7):
    for k in range(1, 5):
      _touch(str(tmp_path / "CUHK01" / "campus" / f"{pid:04d}{k:03d}.png"))
  ds = _load("cuhk01", str(tmp_path), split=2, num_train_ids=3)
  assert ds.summary()["num_train_ids"] == 3
  assert len(ds.train) == 12 and len(ds.query) == 6 and len(ds.gallery) == 6
  assert {r.camid for r in ds.query} == {0}
  # The 871 / 100 protocol's shape: all but a few persons train, no cap.
  ds = _load("cuhk01", str(tmp_path), split=2, num_train_ids=5)
  assert ds.summary()["num_train_ids"] == 5
  assert len({r.pid for r in ds.query}) == 1 and len(ds.gallery) == 2
  # 485 / 486 on a folder of 6 persons is impossible: an error, not a cap.
  for bad in (485, 6, 0):
    with pytest.raises(ValueError, match=f"num_train_ids={bad} .* 6 persons"):
      _load("cuhk01", str(tmp_path), num_train_ids=bad)


def test_manifest_csv_and_tree(tmp_path):
  _touch(str(tmp_path / "img" / "a.jpg"))
  _touch(str(tmp_path / "img" / "b.png"))
  _touch(str(tmp_path / "img" / "c.bmp"))
  with open(tmp_path / "manifest.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "pid", "camid", "source"])
    w.writerows([["img/a.jpg", "alice", 0, "x"], ["img/b.png", "bob", -1, "x"],
                 ["img/c.bmp", "alice", 1, "y"]])
  ds = datasets.load_dataset("manifest", str(tmp_path))
  assert len(ds.train) == 3 and not ds.query
  assert ds.pid_names[ds.train[0].pid] == "alice"
  assert ds.train[0].pid == ds.train[2].pid != ds.train[1].pid
  assert ds.train[1].camid == -1
  assert os.path.exists(ds.train[0].path)
  with open(tmp_path / "split.csv", "w") as f:
    f.write("path,pid,camid,split\nimg/a.jpg,1,0,train\n"
            "img/b.png,2,0,query\nimg/c.bmp,2,1,gallery\n")
  ds = datasets.load_dataset("manifest", str(tmp_path / "split.csv"))
  assert (len(ds.train), len(ds.query), len(ds.gallery)) == (1, 1, 1)
  assert ds.query[0].pid == 2                      # integer pids kept
  with open(tmp_path / "bad.csv", "w") as f:
    f.write("file,person\nimg/a.jpg,1\n")
  with pytest.raises(ValueError, match="camid"):
    datasets.load_dataset("manifest", str(tmp_path / "bad.csv"))
  tree = tmp_path / "tree"
  for ident in ("p1", "p2"):
    for k in range(2):
      _touch(str(tree / ident / f"{k}.jpg"))
  ds = datasets.load_dataset("manifest", str(tree))
  assert ds.summary()["num_train_ids"] == 2 and len(ds.train) == 4
  with pytest.raises(ValueError, match="identity"):
    datasets.load_dataset("manifest", str(tmp_path / "img"))


def _write_cuhk03(folder, num_pids=4):
  """A tiny cuhk-03.mat laid out like MATLAB v7.3 writes it."""
  ref = h5py.special_dtype(ref=h5py.Reference)
  with h5py.File(folder / "cuhk-03.mat", "w") as f:
    for kind in ("labeled", "detected"):
      camps = []
      for campid in range(2):
        refs = np.empty((num_pids, 10), dtype=ref)
        for pid in range(num_pids):
          for img in range(10):
            if img == 9 and pid == 0:  # an empty cell, as in the real file
              data = np.zeros(2, np.uint64)
            else:
              data = np.full((6, 4, 3), pid * 10 + img, np.uint8).T
            refs[pid, img] = f.create_dataset(
                f"images_{kind}/{campid}/{pid}/{img}", data=data).ref
        camps.append(f.create_dataset(f"{kind}_{campid}", data=refs.T).ref)
      f.create_dataset(kind, data=np.array([camps], dtype=ref))
    splits = [f.create_dataset(f"split{s}", data=np.array(
        [[1, s + 1], [2, 1]]).T).ref for s in range(2)]
    f.create_dataset("testsets", data=np.array([splits], dtype=ref))


def test_cuhk03(tmp_path):
  folder = tmp_path / "cuhk03_release"
  os.makedirs(folder)
  _write_cuhk03(folder)
  ds = _load("cuhk03", str(tmp_path), protocol="old", kind="detected",
             split=1, cache_dir=str(tmp_path / "cache"))
  # 2 x 4 x 10 cells, 2 of them empty, plus the ".complete" marker.
  assert len(os.listdir(tmp_path / "cache" / "images_detected")) == 78 + 1
  assert {r.pid for r in ds.query} == {1002, 2001}   # (camp 1, pid 2), (2, 1)
  assert ds.query == ds.gallery and {r.camid for r in ds.query} == {0, 1}
  assert len(ds.train) == 78 - 19
  names = sorted(n for n in os.listdir(tmp_path / "cache" / "images_detected")
                 if n.endswith(".png"))
  idx = lambda lo, hi: np.arange(lo, hi).reshape(-1, 1)
  scipy.io.savemat(str(folder / "cuhk03_new_protocol_config_labeled.mat"), {
      "filelist": np.array(names, dtype=object).reshape(-1, 1),
      "labels": np.repeat(np.arange(1, 9), 10)[:len(names)].reshape(-1, 1),
      "train_idx": idx(1, 41), "query_idx": idx(41, 45),
      "gallery_idx": idx(45, len(names) + 1)})
  ds = _load("cuhk03", str(folder), protocol="new", kind="labeled")
  assert len(ds.train) == 40 and len(ds.query) == 4
  assert ds.query[0].path.endswith(names[40])
  assert os.path.exists(ds.query[0].path)
  assert ds.query[0].camid == int(names[40].split("_")[2]) - 1


def test_inspect_last_line_is_json(tmp_path):
  _viper(tmp_path / "VIPeR", n=4)
  out = inspection.inspect_dataset("viper", str(tmp_path),
                                   allow_incomplete=True)
  counts = json.loads(out.splitlines()[-1])
  assert counts["num_train_ids"] == 2 and counts["num_cameras"] == 2
  assert "train" in out.splitlines()[1]


def test_cuhk01_bad_name(tmp_path):
  _touch(str(tmp_path / "campus" / "0001001.png"))
  _touch(str(tmp_path / "campus" / "person1.png"))
  with pytest.raises(ValueError, match=r"person1\.png.*PPPPIII"):
    _load("cuhk01", str(tmp_path))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
