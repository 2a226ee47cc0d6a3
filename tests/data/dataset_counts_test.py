"""Readers check the published counts; split indices beyond the protocol fail."""

import os

import pytest

from keras_reid.data import datasets


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb"):
    pass  # the readers list files; nothing here decodes them


def _viper(root, num_a, num_b):
  for pid in range(num_a):
    _touch(os.path.join(root, "cam_a", f"{pid:03d}_0.bmp"))
  for pid in range(num_b):
    _touch(os.path.join(root, "cam_b", f"{pid:03d}_90.bmp"))


def test_incomplete_viper_fails_naming_counts_folder_and_option(tmp_path):
  root = str(tmp_path / "VIPeR")
  _viper(root, 632, 50)
  with pytest.raises(ValueError) as e:
    datasets.load_dataset("viper", str(tmp_path))
  message = str(e.value)
  assert "cam_b images: expected 632, found 50" in message
  assert root in message and "allow_incomplete=True" in message
  assert "cam_a" not in message.split("(")[1].split(")")[0]  # only what differs
  ds = datasets.load_dataset("viper", str(tmp_path), allow_incomplete=True)
  assert len(ds.query) + len(ds.gallery) == 50  # 25 test ids x 2 cameras


def test_complete_viper_loads_without_option(tmp_path):
  _viper(str(tmp_path / "VIPeR"), 632, 632)
  ds = datasets.load_dataset("viper", str(tmp_path), split=9)
  assert ds.summary()["num_train_ids"] == 316
  assert ds.summary()["num_query_ids"] == 316


def test_split_beyond_protocol_is_an_error(tmp_path):
  _viper(str(tmp_path / "VIPeR"), 632, 632)
  with pytest.raises(ValueError, match=r"split=10: the protocol has 10 "
                     r"random splits, 0-9"):
    datasets.load_dataset("viper", str(tmp_path), split=10)
  for sub in ("bounding_box_train", "bounding_box_test", "query"):
    _touch(str(tmp_path / "m" / sub / "0001_c1s1_000001_01.jpg"))
  with pytest.raises(ValueError, match="one fixed .* split.*split=1"):
    datasets.load_dataset("market1501", str(tmp_path / "m"), split=1,
                          allow_incomplete=True)


@pytest.mark.parametrize("name,layout,message", [
    ("prid2011", {"single_shot/cam_a": 385, "single_shot/cam_b": 700},
     "cam_b persons: expected 749, found 700"),
    ("cuhk01", {"campus": 970}, "persons: expected 971, found 970"),
    ("market1501", {"bounding_box_train": 3, "bounding_box_test": 2,
                    "query": 1}, "gallery images: expected 19732, found 2"),
    ("dukemtmcreid", {"bounding_box_train": 3, "bounding_box_test": 2,
                      "query": 1}, "query images: expected 2228, found 1"),
])
def test_other_readers_check_counts(tmp_path, name, layout, message):
  for sub, n in layout.items():
    for i in range(1, n + 1):
      if name == "prid2011":
        file = f"person_{i:04d}.png"
      elif name == "cuhk01":
        file = f"{i:04d}001.png"
      elif name == "market1501":
        file = f"{i:04d}_c1s1_000001_01.jpg"
      else:
        file = f"{i:04d}_c1_f0000001.jpg"
      _touch(str(tmp_path / sub / file))
  with pytest.raises(ValueError, match=message):
    datasets.load_dataset(name, str(tmp_path))


def test_published_counts_cover_the_benchmarks():
  assert set(datasets.PUBLISHED_COUNTS) == {
      "viper", "prid2011", "cuhk01", "market1501", "dukemtmcreid", "cuhk03"}
  assert datasets.PUBLISHED_COUNTS["cuhk01"]["images"] == 971 * 4


REID_DATA_ROOT = os.environ.get("REID_DATA_ROOT", "")


@pytest.mark.skipif(not os.path.isdir(os.path.join(REID_DATA_ROOT, "viper")),
                    reason="REID_DATA_ROOT/viper missing")
def test_real_viper_is_complete():
  ds = datasets.load_dataset("viper", os.path.join(REID_DATA_ROOT, "viper"))
  assert len(ds.train) == 632


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
