"""tools/compare_losses.py: two configs x two seeds, tiny, end to end."""

import json
import logging
import pathlib
import re
import shutil

from absl import logging as absl_logging
import jax.numpy as jnp
import numpy as np
import pytest

from e2e_helpers import load_tool
from segjax import config_lib
from segjax import data
from segjax import metric_writers

REPO = pathlib.Path(__file__).resolve().parent.parent
# Tiny runs: `:smoke` for 6 steps, dev and test of 24 documents each.
CONFIGS = "configs/cross_entropy.py:smoke,configs/boundary.py:smoke"
LABELS = ("cross_entropy:smoke", "boundary:smoke")
TINY_SETS = (
    "data.max_documents=24",
    "train.num_steps=6",
    "train.eval_every=3",
    "train.log_every=3",
    "train.checkpoint_every=3",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


tool = load_tool("compare_losses")


def tiny_argv(output, *extra):
  argv = [
      "--output",
      str(output),
      "--configs",
      CONFIGS,
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
  assert names[:2] == [f"**{label}**" for label in LABELS]
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
      (LABELS[0], "0"),
      (LABELS[0], "1"),
      (LABELS[1], "0"),
      (LABELS[1], "1"),
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
  assert "train.num_steps=6" in report["overrides"]
  for label in LABELS:
    config = report["configs"][label]
    assert [r["seed"] for r in config["runs"]] == [0, 1]
    for run in config["runs"]:
      assert run["curve"]["step"] == [3, 6]
      assert len(run["curve"]["val_window_diff"]) == 2
      assert run["best_step"] in (3, 6)
      # The bins the trainer saved give the test ECE it logged.
      bins = {k: np.asarray(v) for k, v in run["calibration"].items()}
      assert tool.calibration_ece(bins) == pytest.approx(
          run["test"]["ece"], abs=1e-6
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


@pytest.mark.slow
def test_a_run_without_saved_bins_is_scored_again_not_retrained(
    comparison, tmp_path
):
  output, _ = comparison
  workdir = tmp_path / "seed0"
  shutil.copytree(output / "runs" / "boundary_smoke" / "seed0", workdir)
  saved = json.loads((workdir / tool.trainer.CALIBRATION_FILE).read_text())
  # As the runs trained before the trainer saved the bins.
  (workdir / tool.trainer.CALIBRATION_FILE).unlink()
  trained = metric_writers.read_events(workdir)
  overrides = tool.run_overrides(tool.parse_args(tiny_argv(tmp_path)))
  config = tool.build_config("configs/boundary.py:smoke", overrides, seed=0)
  event, wall, reused = tool.train_or_reuse(config, workdir)
  assert not reused
  first = json.loads((output / "comparison.json").read_text())
  assert wall == pytest.approx(
      first["configs"][LABELS[1]]["runs"][0]["wall_seconds"]
  )
  again = json.loads((workdir / tool.trainer.CALIBRATION_FILE).read_text())
  assert again["best_step"] == saved["best_step"]
  assert again["bin_count"] == saved["bin_count"]
  np.testing.assert_allclose(
      again["bin_prob_sum"], saved["bin_prob_sum"], rtol=1e-5
  )
  events = metric_writers.read_events(workdir)
  train_steps = [e["step"] for e in events if "train_loss" in e]
  assert train_steps == [e["step"] for e in trained if "train_loss" in e]
  assert event["test_pk"] == pytest.approx(trained[-1]["test_pk"])


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


def test_set_values_are_parsed_as_config_overrides_are():
  config = tool.build_config(
      "configs/boundary.py",
      [
          "train.num_steps=300",
          "optim.learning_rate=3e-3",
          "data.source=pydoc",
          "loss.class_weights=(1.0, 2.5)",
      ],
      seed=4,
  )
  assert config.train.num_steps == 300
  assert config.optim.learning_rate == 3e-3
  assert config.data.source == "pydoc"
  assert tuple(config.loss.class_weights) == (1.0, 2.5)
  assert config.seed == 4
  with pytest.raises(tool.CompareError, match="did you mean 'train.num_steps'"):
    tool.build_config("configs/boundary.py", ["train.num_stepz=3"], seed=0)


# ----------------------------------------------------------------------------
# The metric_writers helpers the tool reports with.
# ----------------------------------------------------------------------------


def test_json_safe_gives_strict_json():
  value = {
      "a": np.float32(0.5),
      "b": [np.nan, np.int64(3), (1, np.inf)],
      "c": np.array([[1.0, np.nan]]),
      1: {"d": jnp.asarray(2.0), "e": "text", "f": None, "g": True},
  }
  safe = metric_writers.json_safe(value)
  assert safe == {
      "a": 0.5,
      "b": [None, 3, [1, None]],
      "c": [[1.0, None]],
      "1": {"d": 2.0, "e": "text", "f": None, "g": True},
  }
  json.dumps(safe, allow_nan=False)  # Raises on NaN or inf.


def test_read_events_reads_what_the_writer_wrote(tmp_path):
  assert not metric_writers.read_events(tmp_path / "not_started")
  writer = metric_writers.MetricWriter(tmp_path)
  writer.write(1, {"train_loss": np.float32(0.25)})
  writer.write(2, {"val_pk": float("nan"), "val_ece": jnp.asarray(0.5)})
  writer.close()
  assert metric_writers.read_events(tmp_path) == [
      {"step": 1, "train_loss": 0.25},
      {"step": 2, "val_pk": None, "val_ece": 0.5},
  ]


def test_quiet_libraries_drops_only_their_info_records():
  def record(path, level):
    return logging.LogRecord("absl", level, path, 1, "message", (), None)

  orbax = "/venv/site-packages/orbax/checkpoint/checkpointer.py"
  quiet = metric_writers.QuietLibraries()
  assert not quiet.filter(record(orbax, logging.INFO))
  assert quiet.filter(record(orbax, logging.WARNING))
  assert quiet.filter(record("/repo/segjax/trainer.py", logging.INFO))
  metric_writers.quiet_library_logs()
  metric_writers.quiet_library_logs()
  handler = absl_logging.get_absl_handler()
  installed = [
      f for f in handler.filters if isinstance(f, metric_writers.QuietLibraries)
  ]
  assert len(installed) == 1
  handler.removeFilter(installed[0])
