"""Paper: ImageNet -> CUHK03 (GoogLeNet, 224x224, GPU). Published Rank-1 85.4%.

The paper reports the classic protocol (Li et al. 2014: 20 splits of 1,367
train / 100 test ids, labelled boxes), which the reader calls
"protocol=old,kind=labeled"; this config trains split 0
(--config.stages.cuhk03.split=K for the others, 0-19) and its evaluation is
the single-gallery-shot CMC of that protocol (automatic for protocol=old;
see keras_reid.evaluation.protocols.evaluate_cuhk03). Average the 20 splits
with `python -m keras_reid.evaluate --splits=0-19` (one run per split for
the paper's protocol). `--config.stages.cuhk03.options=protocol=new,kind=detected`
switches to the 767 / 700 protocol.
"""

from configs import paper


def get_config():
  config = paper.paper_base()
  config.stages.cuhk03 = paper.paper_stage(
      dataset="cuhk03", root=paper.dataset_dir("cuhk03_release"),
      options="protocol=old,kind=labeled", init="backbone",
      **paper.LARGE_ITERATIONS)
  return config
