"""Paper: ImageNet -> CUHK03 (GoogLeNet, 224x224, GPU). Published Rank-1 85.4%.

The paper reports the original protocol (20 splits of 1,367 train / 100 test
ids, labelled boxes); `--config.stages.cuhk03.options=protocol=new,kind=detected`
switches to the 767 / 700 protocol.
"""

from configs import paper


def get_config():
  config = paper.paper_base()
  config.stages.cuhk03 = paper.paper_stage(
      dataset="cuhk03", root=paper.dataset_dir("cuhk03_release"),
      options="protocol=old,kind=labeled", init="backbone", **paper.LARGE_STEPS)
  return config
