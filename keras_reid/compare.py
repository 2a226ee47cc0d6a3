r"""Compares finished training runs: config differences, metrics, CMC curves.

  python -m keras_reid.compare runs/a runs/b ...
  python -m keras_reid.compare 'runs/reproduce/*/split*' --csv=cmp.csv \
      --plot=cmp_cmc.png

Prints a Markdown table: the config fields the runs share (once), then one
row per run with the fields in which they differ and their metrics from
metrics.json (Rank-1/5/10/20, mAP, mINP in %, CIR's when present, training
minutes); runs that differ only in seed or split are also pooled as
mean ± std (population std). --csv writes the same as CSV (fractions),
--plot the CMC curves on one figure. Runs still training (no metrics.json)
are skipped and listed. The library: keras_reid.run_comparison.
"""

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import run_comparison
from keras_reid import user_errors

_CSV = flags.DEFINE_string("csv", None, "Also write the table as CSV here.")
_PLOT = flags.DEFINE_string(
    "plot", None, "Draw the runs' CMC curves on one figure (PNG) here.")
_TITLE = flags.DEFINE_string("title", "CMC", "Title of the --plot figure.")


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give run directories or globs: python -m "
                         "keras_reid.compare runs/a runs/b ...")
  comparison = run_comparison.compare(run_comparison.expand_run_dirs(argv[1:]))
  print(run_comparison.markdown(comparison), end="", flush=True)
  if _CSV.value:
    print(f"CSV: {run_comparison.write_csv(comparison, _CSV.value)}")
  if _PLOT.value:
    print(f"CMC figure: "
          f"{run_comparison.plot_cmc(comparison, _PLOT.value, title=_TITLE.value)}")


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
