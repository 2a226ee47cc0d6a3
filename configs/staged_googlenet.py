"""Paper: ImageNet -> Market-1501 + CUHK03 -> a small set (GoogLeNet, GPU).

    python -m keras_reid.train --config=configs/staged_googlenet.py:viper
    (targets: viper, prid2011, cuhk01; published VIPeR Rank-1 56.3%)

Repeated-split protocols: run splits 0-9 with --config.stages.target.split=K
and average them with `python -m keras_reid.evaluate`.

CUHK03 in the large stage uses the protocol the paper's CUHK03 numbers were
reported on: the classic (Li et al. 2014) 20 splits of 1,367 train / 100
test identities, labelled boxes, which the reader calls
"protocol=old,kind=labeled" (given as "cuhk03:..." so that only the CUHK03
reader gets them); the stage trains on split 0's 1,367 identities. CUHK01
as the target: 485 / 486 ids by default, 871 / 100 with
--config.stages.target.options=num_train_ids=871.
"""

from configs import paper

TARGET_FOLDERS = {"viper": "VIPeR", "prid2011": "prid_2011", "cuhk01": "CUHK01"}


def get_config(target: str = "viper"):
  if target not in TARGET_FOLDERS:
    raise ValueError(f"Unknown target {target!r}; expected one of "
                     f"{sorted(TARGET_FOLDERS)} (configs/staged_googlenet.py:NAME).")
  config = paper.paper_base()
  config.stages.large = paper.paper_stage(
      dataset="market1501+cuhk03",
      root=paper.dataset_dir("Market-1501-v15.09.15") + "+" +
      paper.dataset_dir("cuhk03_release"),
      options="cuhk03:protocol=old,cuhk03:kind=labeled",
      init="backbone", **paper.LARGE_ITERATIONS)
  config.stages.target = paper.paper_stage(
      dataset=target, root=paper.dataset_dir(TARGET_FOLDERS[target]),
      init="previous", eval_every=0, **paper.SMALL_ITERATIONS)
  return config
