"""segjax.baselines and `segjax.evaluate --baseline`."""

import json
import pathlib

import numpy as np
import pytest

from e2e_helpers import run_module, tiny_config
from segjax import baselines
from segjax import config_lib
from segjax import data
from segjax import metrics
from segjax import trainer

REPO = pathlib.Path(__file__).resolve().parent.parent


def _document(*segment_lengths):
  return data.Document(
      segments=[
          [f"Segment {s} sentence {i}." for i in range(n)]
          for s, n in enumerate(segment_lengths)
      ]
  )


# ----------------------------------------------------------------------------
# Scoring hard labels.
# ----------------------------------------------------------------------------


def test_score_predictions_equals_the_metrics_of_the_labels():
  documents = [_document(3, 4, 2), _document(5, 5), _document(6)]
  predictions = [
      # A near miss, a hit, and one at the document end (no label there).
      np.array([0, 1, 0, 0, 0, 0, 1, 0, 1]),
      np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0]),
      np.array([0, 0, 1, 0, 0, 0]),
  ]
  scores = baselines.score_predictions(predictions, documents)
  pred = data.pad_documents(predictions, 0).astype(np.int32)
  gold, mask = data.padded_gold_and_mask(documents)
  assert scores["pk"] == pytest.approx(float(metrics.pk(pred, gold, mask)))
  assert scores["window_diff"] == pytest.approx(
      float(metrics.window_diff(pred, gold, mask))
  )
  assert scores["boundary_f1"] == pytest.approx(
      float(metrics.boundary_f1(pred, gold, mask))
  )
  assert scores["boundary_f1_tol1"] == pytest.approx(
      float(metrics.boundary_f1(pred, gold, mask, tolerance=1))
  )
  assert scores["complete_segments"] == pytest.approx(
      float(metrics.complete_segments(pred, gold, mask))
  )
  assert scores["macro_f1"] == pytest.approx(
      float(metrics.macro_f1(pred, gold, mask))
  )
  assert np.isnan(scores["ece"])  # No probabilities.
  assert "threshold" not in scores and "brier" not in scores
  assert scores["num_predicted"] == 4
  assert scores["num_gold"] == 3
  assert scores["num_documents"] == 3


def test_no_boundaries_scores():
  documents = [_document(3, 4, 2), _document(6)]
  predictions, fallbacks = baselines.label_documents(
      baselines.no_boundaries, documents
  )
  scores = baselines.score_predictions(predictions, documents)
  assert fallbacks == 0
  assert scores["boundary_f1"] == 0.0 and scores["num_predicted"] == 0
  # Only the single-segment document's one segment is complete.
  assert scores["complete_segments"] == pytest.approx(1 / 4)


# ----------------------------------------------------------------------------
# The baselines.
# ----------------------------------------------------------------------------


def test_evenly_spaced_positions():
  document = data.Document(segments=[["s"] * 10, ["t"] * 5])  # N = 15.
  np.testing.assert_array_equal(
      np.flatnonzero(baselines.evenly_spaced(document, 7)), [6, 13]
  )
  np.testing.assert_array_equal(
      np.flatnonzero(baselines.evenly_spaced(document, 5)), [4, 9]
  )  # Not 14.


def test_mean_segment_length():
  assert baselines.mean_segment_length(
      [_document(3, 4, 2), _document(6)]
  ) == pytest.approx(15 / 4)


class _CutAfter:
  """A stand-in tokenizer that cuts the text after given sentences."""

  def __init__(self, sentence_ends):
    self.sentence_ends = sentence_ends

  def tokenize(self, text):
    paragraphs = text.split("\n\n")
    cuts = [
        sum(len(p) + 2 for p in paragraphs[: i + 1]) - 2
        for i in self.sentence_ends
    ]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def test_texttiling_cuts_map_to_sentence_boundaries():
  document = data.Document(
      segments=[[f"Sentence  {i} \n here." for i in range(10)]]
  )
  labels = baselines.texttiling_boundaries(document, _CutAfter([2, 6]))
  np.testing.assert_array_equal(np.flatnonzero(labels), [2, 6])
  # A cut at the document end is the implicit final boundary, not a label.
  labels = baselines.texttiling_boundaries(document, _CutAfter([9]))
  assert not labels.any()


def test_texttiling_too_short_falls_back():
  short = data.Document(segments=[["One short sentence."], ["And another."]])
  tiler = baselines.make_texttiler(20, 5)
  assert baselines.texttiling_boundaries(short, tiler) is None
  predictions, fallbacks = baselines.texttiling_predictions(
      [short, short], 20, 5
  )
  assert fallbacks == 2
  assert all(not p.any() for p in predictions)


# ----------------------------------------------------------------------------
# Fitting by name.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module", name="splits")
def fixture_splits():
  """Small pydoc splits: 12 documents each."""
  config = config_lib.load_config(str(REPO / "configs/boundary.py"))
  config.data.max_documents = 12
  return data.load_splits(config.data)


def test_fit_evenly_spaced_takes_the_train_segment_length(splits):
  fitted = baselines.fit("evenly_spaced", splits)
  length = round(baselines.mean_segment_length(splits["train"]))
  assert fitted.params == {"segment_length": length}
  assert fitted.title == f"evenly spaced (every {length})"
  document = splits["test"][0]
  predictions, fallbacks = fitted.predict([document])
  np.testing.assert_array_equal(
      predictions[0], baselines.evenly_spaced(document, length)
  )
  assert fallbacks == 0 and fitted.tuned is None


def test_fit_texttiling_tunes_w_and_k_on_dev_by_pk(splits):
  fitted = baselines.fit(
      "texttiling", splits, texttiling_w=(10, 20), texttiling_k=(3, 5)
  )
  grid = fitted.tuning
  assert [(r["w"], r["k"]) for r in grid] == [
      (10, 3),
      (10, 5),
      (20, 3),
      (20, 5),
  ]
  assert fitted.tuned["dev"]["pk"] == min(r["dev"]["pk"] for r in grid)
  w, k = fitted.params["w"], fitted.params["k"]
  assert (fitted.tuned["w"], fitted.tuned["k"]) == (w, k)
  assert fitted.title == f"TextTiling (w={w}, k={k})"
  # Predicting with the fitted baseline is TextTiling at the chosen (w, k).
  dev, fallbacks = fitted.predict(splits["dev"])
  expected, expected_fallbacks = baselines.texttiling_predictions(
      splits["dev"], w, k
  )
  assert fallbacks == expected_fallbacks == fitted.tuned["fallbacks"]
  for got, want in zip(dev, expected):
    np.testing.assert_array_equal(got, want)


def test_fit_needs_the_split_it_fits_on(splits):
  no_train = {**splits, "train": []}
  with pytest.raises(data.DataError, match="training"):
    baselines.fit("evenly_spaced", no_train)
  with pytest.raises(data.DataError, match="dev"):
    baselines.fit("texttiling", {**splits, "dev": []})
  assert baselines.fit("no_boundaries", no_train).params == {}
  with pytest.raises(ValueError, match="unknown baseline"):
    baselines.fit("random", splits)


# ----------------------------------------------------------------------------
# segjax.evaluate --baseline.
# ----------------------------------------------------------------------------

_RUN = {
    "data.max_documents": 12,
    "train.num_steps": 2,
    "train.eval_every": 2,
    "train.checkpoint_every": 2,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A finished two-step run on 12 documents per split."""
  workdir = tmp_path_factory.mktemp("baseline_run")
  trainer.train_and_evaluate(tiny_config(**_RUN), workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("name", baselines.NAMES)
def test_evaluate_scores_a_baseline_on_the_runs_split(tiny_run, name):
  result = run_module(
      "segjax.evaluate",
      f"--workdir={tiny_run}",
      f"--baseline={name}",
      "--split=test",
      "--format=json",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout)
  splits = data.load_splits(tiny_config(**_RUN).data)
  fitted = baselines.fit(name, splits)
  predictions, too_short = fitted.predict(splits["test"])
  expected = baselines.score_predictions(predictions, splits["test"])
  assert scores["split"] == "test" and scores["baseline"] == name
  assert scores["num_too_short"] == too_short
  for key, value in fitted.params.items():
    assert scores[key] == value, key
  for key in ("pk", "window_diff", "boundary_f1", "macro_f1", "num_gold"):
    assert scores[key] == pytest.approx(expected[key]), key
  assert scores["num_documents"] == len(splits["test"]) == 12
  assert scores["ece"] is None  # NaN, as strict JSON.
  assert "step" not in scores and "threshold" not in scores


@pytest.mark.slow
def test_evaluate_baseline_table_and_a_workdir_without_config(
    tiny_run, tmp_path
):
  table = run_module(
      "segjax.evaluate",
      f"--workdir={tiny_run}",
      "--baseline=no_boundaries",
      "--split=dev",
  )
  assert table.returncode == 0, table.stderr[-3000:]
  assert "boundary_f1" in table.stdout and "no_boundaries" in table.stdout
  missing = run_module(
      "segjax.evaluate", f"--workdir={tmp_path}", "--baseline=evenly_spaced"
  )
  assert missing.returncode != 0
  assert "config.json" in missing.stderr
  assert "Traceback" not in missing.stderr
