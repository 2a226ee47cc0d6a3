"""Paper: ImageNet -> Market-1501 (GoogLeNet, 224x224, GPU). Published Rank-1 83.7%, mAP 65.5%."""

from configs import paper


def get_config():
  config = paper.paper_base()
  config.stages.market1501 = paper.paper_stage(
      dataset="market1501", root=paper.dataset_dir("Market-1501-v15.09.15"),
      init="backbone", **paper.LARGE_ITERATIONS)
  return config
