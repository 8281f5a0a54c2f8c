"""tools/compare_losses.py: two configs x two seeds, tiny, end to end."""

import json
import pathlib
import re

import numpy as np
import pytest

from e2e_helpers import load_tool
from segjax import config_lib
from segjax import data

REPO = pathlib.Path(__file__).resolve().parent.parent
# Tiny runs: 6 steps, dev and test of 24 documents each.
TINY_SETS = (
    "data.max_documents=24",
    "data.max_sentences=32",
    "data.num_buckets=4096",
    "data.max_tokens=16",
    "model.embed_dim=16",
    "model.hidden_dim=32",
    "model.mlp_dim=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "train.num_steps=6",
    "train.eval_every=3",
    "train.log_every=3",
    "train.checkpoint_every=3",
    "train.batch_size=8",
    "optim.warmup_steps=2",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


tool = load_tool("compare_losses")


def tiny_argv(output, *extra):
  argv = [
      "--output",
      str(output),
      "--seeds",
      "2",
      "--texttiling_w",
      "10,20",
      "--texttiling_k",
      "3,5",
  ]
  for text in TINY_SETS:
    argv += ["--set", text]
  return argv + list(extra)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
  """One comparison run shared by the checks below."""
  output = tmp_path_factory.mktemp("compare")
  paths = tool.main(tiny_argv(output))
  return output, paths


def table_rows(markdown, heading):
  """The body rows of the first table after `heading`, split into cells."""
  lines = markdown.split(heading, 1)[1].splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  rows = []
  for line in lines[start + 2 :]:  # After the header and the --- line.
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip("|").split("|")])
  return rows


@pytest.mark.slow
def test_markdown_has_a_row_of_numbers_per_config_and_baseline(comparison):
  output, _ = comparison
  markdown = (output / "comparison.md").read_text()
  rows = {row[0]: row[1:] for row in table_rows(markdown, "## Test set")}
  names = list(rows)
  assert names[:2] == ["**cross_entropy**", "**boundary**"]
  assert names[2] == "baseline: no boundaries"
  assert re.fullmatch(r"baseline: evenly spaced \(every \d+\)", names[3])
  assert re.fullmatch(r"baseline: TextTiling \(w=\d+, k=\d+\)", names[4])
  assert len(rows) == 5
  number = r"\d+\.\d+"
  for name in names[:2]:  # mean ± std over the two seeds, ECE included.
    for cell in rows[name][:7]:
      assert re.fullmatch(rf"{number} ± {number}", cell), (name, cell)
  for name in names[2:]:
    assert all(re.fullmatch(number, c) for c in rows[name][:6]), rows[name]
    assert rows[name][6] == "—"  # No ECE without probabilities.
  assert "(↓)" in markdown.split("## Test set", 1)[1].splitlines()[2]
  per_seed = table_rows(markdown, "## Per seed")
  assert [(r[0], r[1]) for r in per_seed] == [
      ("cross_entropy", "0"),
      ("cross_entropy", "1"),
      ("boundary", "0"),
      ("boundary", "1"),
  ]
  assert "Machine:" in markdown and "train.num_steps=6" in markdown


@pytest.mark.slow
def test_plots_are_png_files(comparison):
  output, paths = comparison
  for name in ("dev_curves.png", "reliability.png"):
    content = (output / name).read_bytes()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 5000, name
  assert paths["dev curves"] == output / "dev_curves.png"


@pytest.mark.slow
def test_json_holds_runs_curves_and_calibration(comparison):
  output, _ = comparison
  report = json.loads((output / "comparison.json").read_text())
  assert report["dataset"]["documents"] == {"train": 24, "dev": 24, "test": 24}
  assert report["seeds"] == [0, 1]
  assert report["overrides"]["train.num_steps"] == 6
  for label in ("cross_entropy", "boundary"):
    config = report["configs"][label]
    assert [r["seed"] for r in config["runs"]] == [0, 1]
    for run in config["runs"]:
      assert run["curve"]["step"] == [3, 6]
      assert len(run["curve"]["val_window_diff"]) == 2
      assert run["best_step"] in (3, 6)
      # The restored best checkpoint reproduces the trainer's test ECE.
      assert run["calibration_ece"] == pytest.approx(
          run["test"]["ece"], abs=1e-5
      )
      assert sum(run["calibration"]["bin_count"]) > 0
    pooled = config["pooled_calibration"]["bin_count"]
    assert sum(pooled) == sum(
        sum(r["calibration"]["bin_count"]) for r in config["runs"]
    )
    assert config["summary"]["pk"]["values"] == [
        r["test"]["pk"] for r in config["runs"]
    ]


@pytest.mark.slow
def test_baselines_are_exact(comparison):
  output, _ = comparison
  report = json.loads((output / "comparison.json").read_text())
  baselines = report["baselines"]
  config = config_lib.load_config(str(REPO / "configs/boundary.py"))
  config.data.max_documents = 24
  splits = data.load_splits(config.data)
  test = splits["test"]
  gold_boundaries = sum(len(d.segments) - 1 for d in test)

  none = baselines["no boundaries"]["test"]
  assert none["boundary_f1"] == 0.0 and none["boundary_recall"] == 0.0
  assert none["num_predicted"] == 0
  assert none["num_gold"] == gold_boundaries
  assert none["complete_segments"] == pytest.approx(
      sum(len(d.segments) == 1 for d in test)
      / sum(len(d.segments) for d in test)
  )

  length = round(
      sum(d.num_sentences for d in splits["train"])
      / sum(len(d.segments) for d in splits["train"])
  )
  even = baselines[f"evenly spaced (every {length})"]
  assert even["segment_length"] == length
  assert even["test"]["num_predicted"] == sum(
      (d.num_sentences - 1) // length for d in test
  )

  name = next(n for n in baselines if n.startswith("TextTiling"))
  tiling = baselines[name]
  assert len(tiling["grid"]) == 4  # w in {10, 20} x k in {3, 5}.
  assert tiling["dev"]["pk"] == min(row["dev"]["pk"] for row in tiling["grid"])
  assert 0 <= tiling["test_fallbacks"] <= 24


@pytest.mark.slow
def test_rerun_reuses_finished_runs(comparison, monkeypatch, tmp_path):
  output, _ = comparison

  def no_training(config, workdir):
    raise AssertionError(f"retrained {workdir}")

  monkeypatch.setattr(tool.trainer, "train_and_evaluate", no_training)
  argv = tiny_argv(tmp_path, "--workdir_root", str(output / "runs"))
  tool.main(argv)
  report = json.loads((tmp_path / "comparison.json").read_text())
  first = json.loads((output / "comparison.json").read_text())
  for label, config in report["configs"].items():
    assert all(run["reused"] for run in config["runs"])
    assert config["summary"] == first["configs"][label]["summary"]


def test_unknown_set_key_is_an_error_naming_it(tmp_path):
  with pytest.raises(SystemExit) as e:
    tool.main(["--output", str(tmp_path), "--set", "train.num_stepz=5"])
  assert "train.num_stepz" in str(e.value.code)
  with pytest.raises(SystemExit) as e:
    tool.main(["--output", str(tmp_path), "--set", "nosection.key=5"])
  assert "nosection.key" in str(e.value.code)
  with pytest.raises(SystemExit) as e:
    tool.main(["--output", str(tmp_path), "--set", "train.num_steps=many"])
  assert "train.num_steps" in str(e.value.code)
  assert not (tmp_path / "runs").exists()  # Nothing started.


def test_parse_override_values():
  assert tool.parse_override("train.num_steps=300") == ("train.num_steps", 300)
  assert tool.parse_override("optim.learning_rate=3e-3") == (
      "optim.learning_rate",
      3e-3,
  )
  assert tool.parse_override("data.source=pydoc") == ("data.source", "pydoc")
  assert tool.parse_override("loss.class_weights=(1.0, 2.5)") == (
      "loss.class_weights",
      (1.0, 2.5),
  )
  with pytest.raises(tool.CompareError, match="KEY=VALUE"):
    tool.parse_override("train.num_steps")


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
  labels = tool.texttiling_boundaries(document, _CutAfter([2, 6]))
  np.testing.assert_array_equal(np.flatnonzero(labels), [2, 6])
  # A cut at the document end is the implicit final boundary, not a label.
  labels = tool.texttiling_boundaries(document, _CutAfter([9]))
  assert not labels.any()


def test_texttiling_too_short_falls_back():
  short = data.Document(segments=[["One short sentence."], ["And another."]])
  assert tool.texttiling_boundaries(short, tool.make_texttiler(20, 5)) is None
  predictions, fallbacks = tool.texttiling_predictions([short, short], 20, 5)
  assert fallbacks == 2
  assert all(not p.any() for p in predictions)


def test_evenly_spaced_positions():
  document = data.Document(segments=[["s"] * 10, ["t"] * 5])  # N = 15.
  np.testing.assert_array_equal(
      np.flatnonzero(tool.evenly_spaced(document, 7)), [6, 13]
  )
  np.testing.assert_array_equal(
      np.flatnonzero(tool.evenly_spaced(document, 5)), [4, 9]
  )  # Not 14.
