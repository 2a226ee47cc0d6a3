"""Progress lines in a log file: count, percent, rate, elapsed time, ETA.

A fake clock makes every line exact. Guaranteed:
  * one line every 10 % (a resumed loop starts at its iteration, and its rate
    counts from there);
  * each line after progress carries the rate (it/s, or s/it when slower
    than one a second), the elapsed time and the time left, the last line
    no ETA;
  * a loop given a delay prints nothing before it has run that long;
  * on a terminal the bar goes to Keras's Progbar, never into a file;
  * feature extraction, image loading and pair scoring report this way on
    stderr when slow.
"""

from __future__ import annotations

import io

import pytest

from keras_reid import progress


class FakeClock:
  """Seconds that move only when the test says so."""

  def __init__(self, now: float = 1000.0):
    self.now = now

  def __call__(self) -> float:
    return self.now


def test_a_line_every_ten_percent_with_rate_elapsed_and_eta():
  out, clock = io.StringIO(), FakeClock()
  bar = progress.make_progress(1000, stream=out, clock=clock)
  assert isinstance(bar, progress.PercentProgress)
  bar.update(0)
  for iteration in range(1, 1001):
    clock.now += 0.5  # 2 iterations a second
    bar.update(iteration, [("loss", 0.5), ("acc", 0.25)])
  lines = out.getvalue().splitlines()
  assert len(lines) == 10
  assert lines[0] == ("100/1000 iterations (10%) - 2.0 it/s - elapsed 0:50 - "
                      "ETA 7:30 - loss: 0.5000 - acc: 0.2500")
  assert lines[3] == ("400/1000 iterations (40%) - 2.0 it/s - elapsed 3:20 - "
                      "ETA 5:00 - loss: 0.5000 - acc: 0.2500")
  assert lines[-1] == ("1000/1000 iterations (100%) - 2.0 it/s - "
                       "elapsed 8:20 - loss: 0.5000 - acc: 0.2500")


def test_resumed_loop_counts_its_rate_from_where_it_started():
  out, clock = io.StringIO(), FakeClock()
  bar = progress.make_progress(1000, initial=400, stream=out, clock=clock)
  bar.update(400)
  clock.now += 100.0
  bar.update(500, [("loss", 1.0)])
  assert out.getvalue().splitlines() == [
      "400/1000 iterations (40%)",
      "500/1000 iterations (50%) - 1.0 it/s - elapsed 1:40 - ETA 8:20 - "
      "loss: 1.0000"]


def test_slow_loops_in_seconds_per_unit_and_hours():
  out, clock = io.StringIO(), FakeClock()
  bar = progress.PercentProgress(20, "GRDL iterations", label="GRDL round 2",
                                 percent=50, stream=out, clock=clock)
  clock.now += 2 * 3600 + 5
  bar.update(10, [("objective", 12.5), ("note", "warm start")])
  assert out.getvalue().splitlines() == [
      "GRDL round 2: 10/20 GRDL iterations (50%) - 720.5 s/it - "
      "elapsed 2:00:05 - ETA 2:00:05 - objective: 12.5000 - note: warm start"]


def test_delay_keeps_a_quick_loop_silent():
  out, clock = io.StringIO(), FakeClock()
  bar = progress.make_progress(100, "images", rate_unit="img", stream=out,
                               delay=5.0, clock=clock)
  for count in range(10, 101, 10):
    clock.now += 1.0
    bar.update(count)
  # Silent for the first 5 s (50 images), then a line every 10 %.
  assert out.getvalue().splitlines() == [
      "50/100 images (50%) - 10.0 img/s - elapsed 0:05 - ETA 0:05",
      "60/100 images (60%) - 10.0 img/s - elapsed 0:06 - ETA 0:04",
      "70/100 images (70%) - 10.0 img/s - elapsed 0:07 - ETA 0:03",
      "80/100 images (80%) - 10.0 img/s - elapsed 0:08 - ETA 0:02",
      "90/100 images (90%) - 10.0 img/s - elapsed 0:09 - ETA 0:01",
      "100/100 images (100%) - 10.0 img/s - elapsed 0:10"]
  quick, clock = io.StringIO(), FakeClock()
  bar = progress.make_progress(100, stream=quick, delay=5.0, clock=clock)
  clock.now += 4.9
  bar.update(100)
  assert quick.getvalue() == ""


def test_nothing_to_count_prints_nothing():
  out = io.StringIO()
  bar = progress.make_progress(0, stream=out, clock=FakeClock())
  bar.update(0)
  bar.update(5)
  assert out.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [
    (0, "0:00"), (0.4, "0:00"), (59.6, "1:00"), (65, "1:05"),
    (3599, "59:59"), (3600, "1:00:00"), (36000 + 61, "10:01:01")])
def test_durations(seconds, text):
  assert progress.format_duration(seconds) == text


class _Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_terminal_gets_the_redrawn_bar_only_when_stdout_is_one(monkeypatch):
  monkeypatch.setattr("sys.stdout", _Terminal())
  # (A delay, so that the test does not draw the bar, which imports Keras.)
  bar = progress.make_progress(10, stream=_Terminal(), delay=1.0,
                               clock=FakeClock())
  assert not isinstance(bar, progress.PercentProgress)
  # stderr on a terminal, stdout into a file: lines on stderr, so that
  # the bar (which Keras draws on stdout) never lands in the file.
  monkeypatch.setattr("sys.stdout", io.StringIO())
  bar = progress.make_progress(10, stream=_Terminal(), clock=FakeClock())
  assert isinstance(bar, progress.PercentProgress)


def test_slow_passes_over_images_and_pairs_report_on_stderr(
    tmp_path, monkeypatch, capsys):
  """Feature extraction, image loading and pair scoring use the helper (here
  with no delay, as if they were slow); stdout stays free for reports."""
  import numpy as np
  from PIL import Image

  from keras_reid.data import records
  from keras_reid.evaluation import cir
  from keras_reid.evaluation import embedders

  monkeypatch.setattr(progress, "SLOW_SECONDS", 0.0)
  paths = []
  for k in range(10):
    paths.append(str(tmp_path / f"{k}.png"))
    Image.fromarray(np.full((8, 4, 3), k, np.uint8)).save(paths[-1])
  recs = [records.Record(path, pid=k, camid=0) for k, path in enumerate(paths)]
  load = dict(image_size=(8, 4), normalization="none", batch_size=5)
  features = embedders.extract_features(
      lambda batch: np.ones((len(batch), 2)), recs, progress_label="Query",
      **load)
  assert features.shape == (10, 2)
  embedders.load_images(recs, **load)
  cir.cir_distances(lambda a, b: np.full(len(a), 0.5), np.zeros((4, 1)),
                    np.zeros((5, 1)), batch_size=10)
  out, err = capsys.readouterr()
  assert out == ""
  lines = err.splitlines()
  assert [line.split(" - ")[0] for line in lines] == [
      "Query: 5/10 images (50%)", "Query: 10/10 images (100%)",
      "Loading images: 5/10 images (50%)",
      "Loading images: 10/10 images (100%)",
      "Scoring pairs: 10/20 pairs (50%)", "Scoring pairs: 20/20 pairs (100%)"]
  assert all(" img/s - elapsed " in line or " s/img - elapsed " in line
             for line in lines[:4]), lines


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
