"""Tests of stage set-up: dataset options, pooled datasets, clear errors."""

import json
import os

import pytest

from configs import default
from keras_reid import schema
from keras_reid.data import from_config
from keras_reid.data.synthetic import generator as synthetic


def test_parse_options_types():
  assert from_config.parse_options("") == {}
  assert from_config.parse_options("protocol=old, kind=detected,split=3,x=0.5,y=true") == dict(
      protocol="old", kind="detected", split=3, x=0.5, y=True)
  with pytest.raises(ValueError, match="key=value"):
    from_config.parse_options("protocol")


def test_stage_options_reach_only_the_dataset_they_name():
  parsed = from_config.parse_stage_options(
      "cuhk03:protocol=old, cuhk03:kind=labeled,allow_incomplete=true",
      ["market1501", "cuhk03"])
  assert parsed == {
      "market1501": {"allow_incomplete": True},
      "cuhk03": {"protocol": "old", "kind": "labeled",
                 "allow_incomplete": True}}
  assert from_config.parse_stage_options("", ["viper"]) == {"viper": {}}
  with pytest.raises(ValueError, match="'cuhk01', which is not in this stage"):
    from_config.parse_stage_options("cuhk01:num_train_ids=871",
                                    ["market1501", "cuhk03"])


def test_synthetic_set_follows_the_config(tmp_path):
  root = str(tmp_path / "synthetic")
  config = default.get_config()
  config.data.synthetic_dir = root
  config.data.synthetic_num_ids = 4

  def train_ids():
    ds = from_config.load_stage_dataset(schema.stage_config(), config)
    return {r.pid for r in ds.train}, sorted(r.path for r in ds.train)

  ids4, paths4 = train_ids()
  assert len(ids4) == 2  # ceil(4 / 2) train ids
  assert train_ids() == (ids4, paths4)  # same config: reused
  config.data.synthetic_num_ids = 8  # another config: regenerated
  assert len(train_ids()[0]) == 4
  config.seed = 1
  config.data.synthetic_num_ids = 4
  ids, paths = train_ids()
  assert ids == ids4 and paths != paths4  # another seed: another set
  with open(os.path.join(root, synthetic.META_FILE)) as f:
    assert json.load(f)["seed"] == 1
  # A folder with other files and no metadata is refused, not overwritten.
  other = tmp_path / "mine"
  other.mkdir()
  (other / "notes.txt").write_text("keep me")
  config.data.synthetic_dir = str(other)
  with pytest.raises(ValueError, match="synthetic_dir=.*no synthetic.json"):
    train_ids()
  assert (other / "notes.txt").read_text() == "keep me"


def test_stage_options_choose_the_synthetic_domain(tmp_path):
  # A second synthetic stage with its own root and domain (e.g. the
  # unlabelled target of co-training) next to the config's domain "a".
  config = default.get_config()
  config.data.synthetic_dir = str(tmp_path / "a")
  config.data.synthetic_num_ids = 4
  source = from_config.load_stage_dataset(schema.stage_config(), config)
  target = from_config.load_stage_dataset(schema.stage_config(
      root=str(tmp_path / "b"), options="domain=b,num_ids=6"), config)
  for folder, domain, num_ids in (("a", "a", 4), ("b", "b", 6)):
    with open(tmp_path / folder / synthetic.META_FILE) as f:
      meta = json.load(f)
    assert (meta["domain"], meta["num_ids"]) == (domain, num_ids)
  assert {r.camid for r in target.train} == {0, 1}  # domain b: 2 cameras
  assert len({r.camid for r in source.train}) > 2
  assert len({r.pid for r in target.train}) == 3


def test_stage_pools_two_datasets(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  synthetic.generate(a, num_ids=4, seed=0)
  synthetic.generate(b, num_ids=6, seed=1, domain="b")
  config = default.get_config()
  stage = schema.stage_config(dataset="synthetic+synthetic", root=f"{a}+{b}")
  pooled = from_config.load_stage_dataset(stage, config)
  only_a = from_config.load_stage_dataset(schema.stage_config(root=a), config)
  only_b = from_config.load_stage_dataset(schema.stage_config(root=b), config)
  assert len(pooled.train) == len(only_a.train) + len(only_b.train)
  assert len({r.pid for r in pooled.train}) == (
      len({r.pid for r in only_a.train}) + len({r.pid for r in only_b.train}))
  assert pooled.query == only_a.query


def test_stage_errors_name_the_problem(tmp_path):
  config = default.get_config()
  with pytest.raises(ValueError, match="needs a folder"):
    from_config.load_stage_dataset(schema.stage_config(dataset="viper"), config)
  with pytest.raises(ValueError, match="2 dataset"):
    from_config.load_stage_dataset(
        schema.stage_config(dataset="viper+prid2011", root=str(tmp_path)), config)


def _viper_layout(folder, num_ids=10):
  for pid in range(num_ids):
    for cam, angle in (("cam_a", 0), ("cam_b", 90)):
      path = os.path.join(folder, "VIPeR", cam, f"{pid:03d}_{angle}.bmp")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      open(path, "wb").close()  # listed, never decoded here


def test_a_stage_may_not_train_on_a_later_stages_test_images(tmp_path):
  """VIPeR pooled into a first stage must use the evaluating stage's split."""
  _viper_layout(str(tmp_path / "viper"))
  _viper_layout(str(tmp_path / "other"))
  config = default.get_config()
  viper = str(tmp_path / "viper")
  link = str(tmp_path / "link")  # the same files under another name
  os.symlink(viper, link)
  def stages(pool_split, pool_root=link):
    return {
        "pool": from_config.load_stage_dataset(schema.stage_config(
            dataset="synthetic+viper", split=pool_split,
            root=f"{tmp_path / 'synthetic'}+{pool_root}",
            options="viper:allow_incomplete=true"), config),
        "viper": from_config.load_stage_dataset(schema.stage_config(
            dataset="viper", root=viper, split=3,
            options="allow_incomplete=true"), config)}
  from_config.check_test_images_not_trained(stages(pool_split=3))
  from_config.check_test_images_not_trained(
      stages(pool_split=0, pool_root=str(tmp_path / "other")))
  leaking = stages(pool_split=0)
  def real(records):
    return {os.path.realpath(r.path) for r in records}
  expected = len(real(leaking["pool"].train) &
                 real(leaking["viper"].query + leaking["viper"].gallery))
  assert expected > 0  # splits 0 and 3 share test identities on 10 ids
  with pytest.raises(ValueError) as error:
    from_config.check_test_images_not_trained(leaking)
  message = str(error.value)
  assert f"stage 'viper' evaluates on {expected} image(s)" in message
  assert "stage 'pool' trains on" in message
  assert "--config.stages.pool.split=K" in message
  # The first stage alone is fine: its query / gallery are the synthetic
  # set's (a pooled stage evaluates on its first dataset).
  from_config.check_test_images_not_trained({"pool": leaking["pool"]})


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
