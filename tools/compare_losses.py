r"""Compares the losses: trains each config with several seeds, scores test.

  python tools/compare_losses.py --output runs/compare_pydoc
  python tools/compare_losses.py --output runs/compare_wiki \
      --data_source wiki727k --data_path /data/wiki --seeds 3 \
      --configs configs/cross_entropy.py,configs/boundary.py:aggressive \
      --set train.num_steps=300

Every config (default: the legacy and the boundary-aware loss) is trained
once per seed with `trainer.train_and_evaluate`, in this process, into
`<workdir_root>/<config>/seed<s>`; each run is scored on test with the best
checkpoint and its dev-tuned threshold. A run whose `metrics.jsonl` already
ends with its test event is reused, so rerunning an interrupted comparison
only trains what is missing (a workdir holding a run of a different config
is refused). Three baselines are scored on the same test
documents with the same metric code: no boundaries, boundaries evenly spaced
at the mean train segment length, and nltk's TextTiling (w, k tuned on dev
by Pk).

Writes into `--output`: `comparison.md` (tables), `comparison.json` (every
number), `dev_curves.png` (dev WindowDiff and boundary F1 over steps, mean
and min-max band over seeds) and `reliability.png` (test reliability diagram
per config, bins pooled over seeds).

Needs matplotlib and nltk besides segjax's own requirements.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import dataclasses
import json
import math
import pathlib
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import logging
import ml_collections
import numpy as np

# bench_report lives beside this file; a test may load this tool by path.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_report  # pylint: disable=g-import-not-at-top,wrong-import-position

from segjax import config_lib  # pylint: disable=g-import-not-at-top
from segjax import data
from segjax import inference
from segjax import losses
from segjax import metrics
from segjax import trainer

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = "configs/cross_entropy.py,configs/boundary.py"
NUM_BINS = 15
PLOT_DPI = 110
# Restored vs logged test ECE: beyond this the model code has changed.
ECE_TOLERANCE = 1e-4
# Written into each run's workdir: the run's wall time survives a reuse.
WALL_TIME_FILE = "compare_wall_time.json"

# (key without the test_/val_ prefix, column title, lower is better).
COLUMNS = (
    ("boundary_f1", "boundary F1", False),
    ("boundary_f1_tol1", "F1 (tol 1)", False),
    ("pk", "Pk", True),
    ("window_diff", "WindowDiff", True),
    ("complete_segments", "complete segments", False),
    ("macro_f1", "macro F1", False),
    ("ece", "ECE", True),
)
SCORE_KEYS = tuple(key for key, _, _ in COLUMNS) + (
    "boundary_precision",
    "boundary_recall",
    "threshold",
    "brier",
    "loss",
)
CURVE_KEYS = ("val_window_diff", "val_boundary_f1")

# A literal English stopword list for TextTiling: nltk's default needs its
# stopwords corpus, a download that this tool must not depend on.
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be
because been before being below between both but by can can't cannot could
couldn't did didn't do does doesn't doing don't down during each few for
from further had hadn't has hasn't have haven't having he he'd he'll he's
her here here's hers herself him himself his how how's i i'd i'll i'm i've
if in into is isn't it it's its itself let's me more most mustn't my myself
no nor not of off on once only or other ought our ours ourselves out over
own same shan't she she'd she'll she's should shouldn't so some such than
that that's the their theirs them themselves then there there's these they
they'd they'll they're they've this those through to too under until up
very was wasn't we we'd we'll we're we've were weren't what what's when
when's where where's which while who who's whom why why's will with won't
would wouldn't you you'd you'll you're you've your yours yourself yourselves
also may must might shall however thus e g i e etc
""".split())


class CompareError(ValueError):
  """A bad command line or an unusable workdir; the message says which."""


# ----------------------------------------------------------------------------
# Command line and configs.
# ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line; see the module docstring."""
  parser = argparse.ArgumentParser(
      prog="compare_losses.py",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "--configs",
      default=DEFAULT_CONFIGS,
      help="comma-separated config specs, e.g. "
      "configs/boundary.py:aggressive",
  )
  parser.add_argument(
      "--seeds", type=int, default=3, help="seeds per config: 0 .. seeds-1"
  )
  parser.add_argument("--output", required=True, help="output folder")
  parser.add_argument(
      "--data_source",
      default=None,
      help="overrides data.source (default: the configs')",
  )
  parser.add_argument("--data_path", default=None, help="overrides data.path")
  parser.add_argument(
      "--set",
      dest="overrides",
      action="append",
      default=[],
      metavar="KEY=VALUE",
      help="config override for every run, repeatable, e.g. "
      "train.num_steps=300",
  )
  parser.add_argument(
      "--workdir_root",
      default=None,
      help="where the runs go; default <output>/runs",
  )
  parser.add_argument(
      "--texttiling_w",
      default="10,20,30",
      help="TextTiling pseudo-sentence sizes tried on dev",
  )
  parser.add_argument(
      "--texttiling_k",
      default="3,5,10",
      help="TextTiling block sizes tried on dev",
  )
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error("--seeds must be >= 1")
  return args


def parse_override(text: str) -> tuple[str, Any]:
  """`key=value` -> (key, value); the value is a Python literal or a string."""
  key, sep, raw = text.partition("=")
  key = key.strip()
  if not sep or not key:
    raise CompareError(f"--set {text!r}: expected KEY=VALUE")
  try:
    value = ast.literal_eval(raw.strip())
  except (ValueError, SyntaxError):
    value = raw.strip()  # A bare word such as `pydoc` or `bilstm`.
  return key, value


def apply_override(
    config: ml_collections.ConfigDict, key: str, value: Any
) -> None:
  """Sets dotted `key` in place; it must name an existing leaf.

  Raises:
    CompareError: an unknown key or a value of the wrong type, naming the key.
  """
  *sections, name = key.split(".")
  node = config
  for section in sections:
    if not isinstance(node, ml_collections.ConfigDict) or section not in node:
      raise CompareError(f"--set {key}: unknown config key {key!r}")
    node = node[section]
  if not isinstance(node, ml_collections.ConfigDict) or name not in node:
    raise CompareError(f"--set {key}: unknown config key {key!r}")
  if isinstance(node[name], ml_collections.ConfigDict):
    raise CompareError(f"--set {key}: {key!r} is a section, not a value")
  try:
    node[name] = value
  except (TypeError, ValueError) as e:
    raise CompareError(f"--set {key}={value!r}: {e}") from e


def resolve_spec(spec: str) -> str:
  """A config spec whose file exists: as given, else relative to the repo."""
  path, sep, arg = spec.partition(":")
  if not pathlib.Path(path).is_file() and (REPO_ROOT / path).is_file():
    path = str(REPO_ROOT / path)
  return path + sep + arg


def config_label(spec: str) -> str:
  """`configs/boundary.py:aggressive` -> `boundary:aggressive`."""
  path, sep, arg = spec.partition(":")
  return pathlib.Path(path).stem + sep + arg


def build_config(
    spec: str, overrides: Mapping[str, Any], seed: int
) -> ml_collections.ConfigDict:
  """The config of one run, validated before anything trains."""
  try:
    config = config_lib.load_config(resolve_spec(spec))
  except (FileNotFoundError, ValueError) as e:
    raise CompareError(f"--configs {spec}: {e}") from e
  for key, value in overrides.items():
    apply_override(config, key, value)
  config.seed = seed
  try:
    config_lib.validate_config(config)
  except (config_lib.ConfigError, losses.LossConfigError) as e:
    raise CompareError(f"{spec}: {e}") from e
  return config


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
  """Every `--set` plus `--data_source` / `--data_path`, in order."""
  overrides = dict(parse_override(text) for text in args.overrides)
  if args.data_source is not None:
    overrides["data.source"] = args.data_source
  if args.data_path is not None:
    overrides["data.path"] = args.data_path
  return overrides


# ----------------------------------------------------------------------------
# Small helpers: JSON, statistics.
# ----------------------------------------------------------------------------


def plain(value: Any) -> Any:
  """Strict-JSON values: numpy to Python, NaN and inf to None."""
  if isinstance(value, Mapping):
    return {str(k): plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return plain(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def as_float(value: Any) -> float:
  """A metric value from JSON (None = NaN) as a float."""
  return math.nan if value is None else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
  x = np.asarray(values, np.float64)
  if x.size == 0:
    return math.nan, math.nan
  std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
  return float(np.mean(x)), std


def read_events(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The events of a run's metrics.jsonl (none if it has not started)."""
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------
# Runs: train (or reuse), dev curves, test calibration.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
  """One (config, seed) run, as the report needs it."""

  seed: int
  workdir: str
  test: dict[str, float]
  best_step: int
  wall_seconds: float
  reused: bool
  curve: dict[str, list[float]]
  calibration: dict[str, np.ndarray]
  calibration_ece: float


def check_workdir(
    config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> None:
  """Refuses a workdir holding a run of another config.

  The trainer would silently resume such a run; a comparison must not mix
  runs made with different settings.
  """
  path = workdir / "config.json"
  stored = json.loads(path.read_text()) if path.is_file() else None
  if stored is not None and stored != trainer.config_as_json(config):
    raise CompareError(
        f"{workdir} holds a run of a different config; remove it or pass "
        "another --workdir_root"
    )


def final_test_event(workdir: pathlib.Path, num_steps: int) -> dict | None:
  """The last event with the best checkpoint's test scores, if the run ended."""
  for event in reversed(read_events(workdir)):
    if "test_pk" in event and event.get("step") == num_steps:
      return event
  return None


def train_or_reuse(
    config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> tuple[dict, float, bool]:
  """(test event, wall seconds, reused) of a finished run; trains if needed."""
  check_workdir(config, workdir)
  num_steps = config.train.num_steps
  event = final_test_event(workdir, num_steps)
  wall_file = workdir / WALL_TIME_FILE
  if event is not None:
    logging.info("Reusing the finished run in %s", workdir)
    wall = (
        json.loads(wall_file.read_text())["seconds"]
        if wall_file.is_file()
        else math.nan
    )
    return event, wall, True
  start = time.perf_counter()
  results = trainer.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - start
  if results.get("preempted"):
    raise CompareError(
        f"{workdir}: stopped by SIGTERM at step "
        f"{results['step']}; rerun the same command to resume"
    )
  event = final_test_event(workdir, num_steps)
  if event is None:
    raise CompareError(
        f"{workdir}: the run wrote no test scores (empty test "
        "split or no evaluated checkpoint)"
    )
  # A resumed run's time covers only the steps trained in this call.
  wall_file.write_text(json.dumps({"seconds": wall}))
  return event, wall, False


def dev_curve(workdir: pathlib.Path) -> dict[str, list[float]]:
  """`step` and CURVE_KEYS per dev eval; a step logged twice keeps the last."""
  by_step = {}
  for event in read_events(workdir):
    if "val_window_diff" in event:
      by_step[event["step"]] = event
  steps = sorted(by_step)
  curve = {"step": steps}
  for key in CURVE_KEYS:
    curve[key] = [as_float(by_step[s].get(key)) for s in steps]
  return curve


def test_calibration(
    workdir: pathlib.Path,
    documents: Sequence[data.Document],
    gold: np.ndarray,
    mask: np.ndarray,
) -> dict[str, np.ndarray]:
  """Calibration bins of the best checkpoint's test probabilities."""
  model = inference.restore_trained_model(workdir)
  probs, _ = model.predict(documents)
  padded = data.pad_documents(probs, 0.0).astype(np.float32)
  stats = metrics.calibration_stats(padded, gold, mask, num_bins=NUM_BINS)
  return {k: np.asarray(v) for k, v in stats._asdict().items()}


def calibration_ece(bins: Mapping[str, np.ndarray]) -> float:
  return float(
      metrics.compute_calibration(metrics.CalibrationStats(**bins))["ece"]
  )


def run_config_seed(
    config,
    workdir: pathlib.Path,
    test_docs: Sequence[data.Document],
    gold: np.ndarray,
    mask: np.ndarray,
) -> RunResult:
  """Trains or reuses one run and collects everything the report shows."""
  event, wall, reused = train_or_reuse(config, workdir)
  test = {key: as_float(event.get(f"test_{key}")) for key in SCORE_KEYS}
  calibration = test_calibration(workdir, test_docs, gold, mask)
  ece = calibration_ece(calibration)
  # The restored model must reproduce the trainer's test ECE; it does not
  # when the model code changed after the run was trained (e.g. on reuse).
  if not math.isclose(ece, test["ece"], abs_tol=ECE_TOLERANCE):
    logging.warning(
        "%s: the restored checkpoint gives test ECE %.5f, the "
        "run logged %.5f: has the code changed since it trained?",
        workdir,
        ece,
        test["ece"],
    )
  return RunResult(
      seed=int(config.seed),
      workdir=str(workdir),
      test=test,
      best_step=int(event.get("best_step", -1)),
      wall_seconds=wall,
      reused=reused,
      curve=dev_curve(workdir),
      calibration=calibration,
      calibration_ece=ece,
  )


# ----------------------------------------------------------------------------
# Baselines: no boundaries, evenly spaced, TextTiling.
# ----------------------------------------------------------------------------


def _pad_to_multiple(x: np.ndarray, multiple: int = 64) -> np.ndarray:
  """Zero-pads to shape multiples: dev and test share one compiled metric."""
  return np.pad(x, [(0, -n % multiple) for n in x.shape])


def score_predictions(
    predictions: Sequence[np.ndarray], documents: Sequence[data.Document]
) -> dict[str, float]:
  """The model runs' metrics (same code, same conventions) for hard labels.

  ECE needs probabilities, which the baselines do not have: it is NaN.
  """
  gold, mask = data.padded_gold_and_mask(documents)
  pred = data.pad_documents(list(predictions), 0).astype(np.int32)
  pred = np.pad(pred, [(0, 0), (0, gold.shape[1] - pred.shape[1])])
  pred, gold, mask = (_pad_to_multiple(x) for x in (pred, gold, mask))
  stats = metrics.segmentation_stats(pred, gold, mask)
  exact = metrics.compute_metrics(stats)
  near = metrics.compute_metrics(
      metrics.segmentation_stats(pred, gold, mask, tolerance=1)
  )
  scores = {
      key: float(exact[key])
      for key in (
          "pk",
          "window_diff",
          "boundary_f1",
          "boundary_precision",
          "boundary_recall",
          "complete_segments",
          "macro_f1",
      )
  }
  scores["boundary_f1_tol1"] = float(near["boundary_f1"])
  scores["ece"] = math.nan
  scores["num_predicted"] = int(stats.boundary_predicted)
  scores["num_gold"] = int(stats.boundary_gold)
  scores["num_skipped_pk"] = int(exact["num_skipped_pk"])
  return scores


def no_boundaries(document: data.Document) -> np.ndarray:
  return np.zeros(document.num_sentences, np.int32)


def evenly_spaced(document: data.Document, length: int) -> np.ndarray:
  """A boundary after every `length` sentences: (N - 1) // length of them."""
  labels = np.zeros(document.num_sentences, np.int32)
  labels[length - 1 : document.num_sentences - 1 : length] = 1
  return labels


def mean_segment_length(documents: Iterable[data.Document]) -> float:
  documents = list(documents)
  return sum(d.num_sentences for d in documents) / sum(
      len(d.segments) for d in documents
  )


def make_texttiler(w: int, k: int):
  # Imported here: nltk is a test/tools dependency, not a library one.
  from nltk.tokenize import texttiling  # pylint: disable=g-import-not-at-top

  return texttiling.TextTilingTokenizer(w=w, k=k, stopwords=STOPWORDS)


def texttiling_boundaries(document: data.Document, tiler) -> np.ndarray | None:
  """TextTiling's boundaries as sentence labels; None if the text is too short.

  Each sentence is one paragraph (TextTiling only cuts at blank lines), so
  every cut it returns sits at a sentence end: the returned segments
  partition the text, and a segment's end offset is the end of the sentence
  before it.
  """
  sentences = [" ".join(s.split()) for s in document.sentences]
  text = "\n\n".join(sentences)
  ends = np.cumsum([len(s) + 2 for s in sentences]) - 2  # After each sentence.
  try:
    segments = tiler.tokenize(text)
  except (ValueError, ZeroDivisionError):
    # nltk raises ValueError on texts with too few paragraphs or
    # pseudo-sentences for its windows.
    return None
  labels = np.zeros(len(sentences), np.int32)
  offset = 0
  for segment in segments[:-1]:
    offset += len(segment)
    ended = bisect.bisect_right(ends.tolist(), offset)  # Sentences before it.
    if 1 <= ended < len(sentences):
      labels[ended - 1] = 1
  return labels


def texttiling_predictions(
    documents: Sequence[data.Document], w: int, k: int
) -> tuple[list[np.ndarray], int]:
  """(labels per document, number of documents that fell back to none)."""
  tiler = make_texttiler(w, k)
  predictions, fallbacks = [], 0
  for document in documents:
    labels = texttiling_boundaries(document, tiler)
    if labels is None:
      labels, fallbacks = no_boundaries(document), fallbacks + 1
    predictions.append(labels)
  return predictions, fallbacks


def tune_texttiling(
    dev: Sequence[data.Document], ws: Sequence[int], ks: Sequence[int]
) -> tuple[dict, list[dict]]:
  """Grid search of (w, k) by dev Pk; returns (best row, all rows)."""
  rows = []
  for w in ws:
    for k in ks:
      start = time.perf_counter()
      predictions, fallbacks = texttiling_predictions(dev, w, k)
      scores = score_predictions(predictions, dev)
      rows.append(
          {
              "w": w,
              "k": k,
              "dev": scores,
              "fallbacks": fallbacks,
              "seconds": time.perf_counter() - start,
          }
      )
      logging.info(
          "TextTiling w=%d k=%d: dev Pk %.4f WindowDiff %.4f "
          "(%d short documents)",
          w,
          k,
          scores["pk"],
          scores["window_diff"],
          fallbacks,
      )
  best = min(rows, key=lambda r: (np.nan_to_num(r["dev"]["pk"], nan=2.0)))
  return best, rows


def run_baselines(
    splits: Mapping[str, Sequence[data.Document]],
    ws: Sequence[int],
    ks: Sequence[int],
) -> dict[str, dict]:
  """Every baseline's dev and test scores, named for the table."""
  dev, test = splits["dev"], splits["test"]
  length = max(1, round(mean_segment_length(splits["train"])))
  baselines = {}

  start = time.perf_counter()
  baselines["no boundaries"] = {
      "dev": score_predictions([no_boundaries(d) for d in dev], dev),
      "test": score_predictions([no_boundaries(d) for d in test], test),
  }
  baselines["no boundaries"]["seconds"] = time.perf_counter() - start

  start = time.perf_counter()
  name = f"evenly spaced (every {length})"
  baselines[name] = {
      "dev": score_predictions([evenly_spaced(d, length) for d in dev], dev),
      "test": score_predictions([evenly_spaced(d, length) for d in test], test),
      "segment_length": length,
  }
  baselines[name]["seconds"] = time.perf_counter() - start

  start = time.perf_counter()
  best, grid = tune_texttiling(dev, ws, ks)
  tuned = time.perf_counter()
  predictions, fallbacks = texttiling_predictions(test, best["w"], best["k"])
  baselines[f"TextTiling (w={best['w']}, k={best['k']})"] = {
      "dev": best["dev"],
      "test": score_predictions(predictions, test),
      "w": best["w"],
      "k": best["k"],
      "w_grid": list(ws),
      "k_grid": list(ks),
      "test_fallbacks": fallbacks,
      "dev_fallbacks": best["fallbacks"],
      "grid": grid,
      "tuning_seconds": tuned - start,
      "seconds": time.perf_counter() - tuned,
  }
  return baselines


# ----------------------------------------------------------------------------
# The comparison.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class ConfigResult:
  """Every seed of one config, and their pooled test calibration bins."""

  label: str
  spec: str
  runs: list[RunResult]

  def pooled_calibration(self) -> dict[str, np.ndarray]:
    keys = self.runs[0].calibration.keys()
    return {k: sum(r.calibration[k] for r in self.runs) for k in keys}

  def summary(self) -> dict[str, dict[str, Any]]:
    """Per metric: mean, std (ddof 1) and the per-seed values."""
    table = {}
    for key in SCORE_KEYS + ("wall_seconds",):
      values = [
          r.wall_seconds if key == "wall_seconds" else r.test[key]
          for r in self.runs
      ]
      mean, std = mean_std(values)
      table[key] = {"mean": mean, "std": std, "values": values}
    return table


def check_same_data(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """The baselines and the table assume one dataset for every config."""
  first = configs[0].data.to_dict()
  for config in configs[1:]:
    if config.data.to_dict() != first:
      raise CompareError(
          "the configs read different data settings; compare "
          "configs that share their data section"
      )


def code_version() -> str:
  """The commit, and the library files changed since it, that the runs use.

  Read once at the start: the runs use the code imported then, even if the
  files change while they train.
  """

  def git(*args):
    return subprocess.run(
        ["git", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout

  commit = git("rev-parse", "--short=12", "HEAD").strip()
  if not commit:
    return "unknown (not a git checkout)"
  changed = git("status", "--porcelain", "--", "segjax", "configs").splitlines()
  if not changed:
    return commit
  return f"{commit} + uncommitted changes in " + ", ".join(
      line[3:] for line in changed
  )


def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
  """Trains every (config, seed), runs the baselines, returns the report."""
  start = time.perf_counter()
  version = code_version()
  overrides = run_overrides(args)
  specs = [s.strip() for s in args.configs.split(",") if s.strip()]
  if not specs:
    raise CompareError("--configs names no config")
  labels = [config_label(s) for s in specs]
  if len(set(labels)) != len(labels):
    raise CompareError(f"--configs names a config twice: {args.configs}")
  seeds = list(range(args.seeds))
  # Every config is resolved and validated before the first run starts.
  configs = {
      spec: [build_config(spec, overrides, seed) for seed in seeds]
      for spec in specs
  }
  check_same_data([c for runs in configs.values() for c in runs])
  data_config = configs[specs[0]][0].data
  try:
    splits = data.load_splits(data_config)
  except data.DataError as e:
    raise CompareError(str(e)) from e
  if not splits["test"] or not splits["dev"]:
    raise CompareError("the dataset needs dev and test documents")

  baseline_start = time.perf_counter()
  baselines = run_baselines(
      splits,
      [int(w) for w in args.texttiling_w.split(",")],
      [int(k) for k in args.texttiling_k.split(",")],
  )
  baseline_seconds = time.perf_counter() - baseline_start

  gold, mask = data.padded_gold_and_mask(splits["test"])
  root = pathlib.Path(args.workdir_root or pathlib.Path(args.output) / "runs")
  results = []
  for spec, label in zip(specs, labels):
    runs = []
    for config in configs[spec]:
      workdir = (
          root
          / label.replace(":", "_").replace(",", "_")
          / (f"seed{config.seed}")
      )
      logging.info("=== %s seed %d -> %s", label, config.seed, workdir)
      runs.append(run_config_seed(config, workdir, splits["test"], gold, mask))
    results.append(ConfigResult(label=label, spec=spec, runs=runs))

  return {
      "dataset": {
          "source": data_config.source,
          "path": data_config.path,
          "documents": {k: len(v) for k, v in splits.items()},
          "mean_train_segment_length": mean_segment_length(splits["train"]),
      },
      "seeds": seeds,
      "overrides": overrides,
      "machine": bench_report.machine_description(),
      "code": version,
      "command": "python tools/compare_losses.py "
      + shlex.join(args.argv or []),
      "baseline_seconds": baseline_seconds,
      "total_seconds": time.perf_counter() - start,
      "configs": results,
      "baselines": baselines,
  }


# ----------------------------------------------------------------------------
# Outputs: JSON, Markdown, plots.
# ----------------------------------------------------------------------------


def report_json(report: Mapping[str, Any]) -> dict[str, Any]:
  """All raw numbers, strict JSON (NaN as null)."""
  out = {k: v for k, v in report.items() if k != "configs"}
  out["configs"] = {}
  for result in report["configs"]:
    pooled = result.pooled_calibration()
    out["configs"][result.label] = {
        "spec": result.spec,
        "summary": result.summary(),
        "pooled_calibration": pooled,
        "pooled_ece": calibration_ece(pooled),
        "runs": [dataclasses.asdict(r) for r in result.runs],
    }
  return plain(out)


def _number(value: float, digits: int = 3) -> str:
  return (
      "—"
      if value is None or not math.isfinite(value)
      else (f"{value:.{digits}f}")
  )


def _mean_std(stats: Mapping[str, Any], digits: int = 3) -> str:
  if not math.isfinite(stats["mean"]):
    return "—"
  if len(stats["values"]) == 1:
    return _number(stats["mean"], digits)
  return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _seconds(value: float) -> str:
  return (
      "—"
      if not math.isfinite(value)
      else f"{value:.0f} s"
      if (value >= 10)
      else f"{value:.1f} s"
  )


def _join(values: Iterable[Any]) -> str:
  return ", ".join(map(str, values))


def _header_cells() -> list[str]:
  cells = [f"{title} (↓)" if lower else title for _, title, lower in COLUMNS]
  return cells + ["wall time/run (↓)"]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  lines = [
      "| " + " | ".join(header) + " |",
      "|" + "|".join("---" for _ in header) + "|",
  ]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def main_table(report: Mapping[str, Any]) -> str:
  """Rows: each config (mean ± std over seeds), then each baseline."""
  rows = []
  for result in report["configs"]:
    summary = result.summary()
    rows.append(
        [f"**{result.label}**"]
        + [_mean_std(summary[key]) for key, _, _ in COLUMNS]
        + [_seconds(summary["wall_seconds"]["mean"])]
    )
  for name, baseline in report["baselines"].items():
    rows.append(
        [f"baseline: {name}"]
        + [_number(baseline["test"][key]) for key, _, _ in COLUMNS]
        + [_seconds(baseline["seconds"])]
    )
  return _table(["run"] + _header_cells(), rows)


def seed_table(report: Mapping[str, Any]) -> str:
  header = (
      ["config", "seed", "best step", "threshold"]
      + [title for _, title, _ in COLUMNS]
      + ["wall time", "run"]
  )
  rows = []
  for result in report["configs"]:
    for run in result.runs:
      rows.append(
          [
              result.label,
              str(run.seed),
              str(run.best_step),
              _number(run.test["threshold"], 2),
          ]
          + [_number(run.test[key]) for key, _, _ in COLUMNS]
          + [_seconds(run.wall_seconds), "reused" if run.reused else "trained"]
      )
  return _table(header, rows)


def mismatch_note(report: Mapping[str, Any]) -> list[str]:
  """A warning when a restored checkpoint did not reproduce its run's ECE."""
  bad = [
      f"{c.label} seed {r.seed}"
      for c in report["configs"]
      for r in c.runs
      if not math.isclose(
          r.calibration_ece, r.test["ece"], abs_tol=ECE_TOLERANCE
      )
  ]
  if not bad:
    return []
  return [
      f"**Warning**: the restored best checkpoints of {', '.join(bad)} "
      "do not reproduce the test ECE their runs logged: the model code "
      "changed after they trained, so their reliability diagrams (and "
      "perhaps their reuse) are not valid. Retrain them in a fresh "
      "--workdir_root.",
      "",
  ]


def markdown(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
  """comparison.md: header, the main table, notes, per-seed table, plots."""
  dataset = report["dataset"]
  docs = dataset["documents"]
  overrides = ", ".join(f"`{k}={v!r}`" for k, v in report["overrides"].items())
  tiling = next(
      b for n, b in report["baselines"].items() if n.startswith("TextTiling")
  )
  runs = [r for c in report["configs"] for r in c.runs]
  reused = sum(r.reused for r in runs)
  run_seconds = float(np.nansum([r.wall_seconds for r in runs]))
  lines = [
      "# Loss comparison",
      "",
      f"- Dataset: `{dataset['source']}`"
      + (f" at `{dataset['path']}`" if dataset["path"] else "")
      + f"; documents: train {docs['train']}, dev {docs['dev']}, test "
      f"{docs['test']}; mean train segment length "
      f"{dataset['mean_train_segment_length']:.2f} sentences",
      f"- Seeds: {', '.join(map(str, report['seeds']))} "
      f"({len(report['seeds'])} runs per config)",
      f"- Overrides (every run): {overrides or 'none'}",
      f"- Machine: {report['machine']}",
      f"- Code: {report['code']}",
      f"- Total time: {report['total_seconds']:.0f} s for this invocation "
      f"(baselines {report['baseline_seconds']:.0f} s; {len(runs) - reused} "
      f"runs trained, {reused} reused); the runs' wall times add up to "
      f"{run_seconds:.0f} s",
      f"- Command: `{report['command']}`",
      "",
      "## Test set",
      "",
      main_table(report),
      "",
      "Configs: mean ± std (ddof 1) over seeds of the best checkpoint (dev "
      "WindowDiff) at its dev-tuned threshold. Baselines are deterministic; "
      "they predict hard labels, so ECE does not apply (—), and their time is "
      "that of predicting and scoring test. Evenly spaced: a boundary every "
      "round(mean train segment length) sentences. TextTiling (nltk): one "
      "sentence per paragraph (nltk only cuts at paragraph breaks at least "
      "100 characters apart), built-in stopword list, w and k chosen on dev "
      f"by Pk from w ∈ {{{_join(tiling['w_grid'])}}}, "
      f"k ∈ {{{_join(tiling['k_grid'])}}} "
      f"(tuning took {tiling['tuning_seconds']:.0f} s); "
      f"{tiling['test_fallbacks']} of {docs['test']} test documents were too "
      "short for it and got no boundaries.",
      "",
      "## Per seed",
      "",
      seed_table(report),
      "",
      *mismatch_note(report),
      "## Plots",
      "",
  ]
  lines += [f"- {title}: `{path}`" for title, path in plots.items()]
  return "\n".join(lines) + "\n"


def _aligned_curves(runs: Sequence[RunResult], key: str):
  """(steps, values [seeds, steps]) on the steps every seed evaluated."""
  steps = sorted(set.intersection(*(set(r.curve["step"]) for r in runs)))
  values = np.array(
      [
          [dict(zip(r.curve["step"], r.curve[key]))[s] for s in steps]
          for r in runs
      ],
      np.float64,
  )
  return np.asarray(steps), values


def plot_dev_curves(report: Mapping[str, Any], path: pathlib.Path) -> None:
  """Dev WindowDiff and boundary F1 vs step: mean line, min-max band."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  panels = (
      ("val_window_diff", "window_diff", "dev WindowDiff (lower is better)"),
      ("val_boundary_f1", "boundary_f1", "dev boundary F1 (higher is better)"),
  )
  fig, axes = plt.subplots(1, 2, figsize=(12, 5))
  baseline_styles = (":", "--", "-.")
  for ax, (key, baseline_key, title) in zip(axes, panels):
    for result in report["configs"]:
      steps, values = _aligned_curves(result.runs, key)
      (line,) = ax.plot(
          steps,
          np.nanmean(values, axis=0),
          marker="o",
          markersize=3,
          label=f"{result.label} " f"(mean of {len(result.runs)} seeds)",
      )
      if len(result.runs) > 1:
        ax.fill_between(
            steps,
            np.nanmin(values, axis=0),
            np.nanmax(values, axis=0),
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    # The baselines on dev, for scale: a flat line each.
    for style, (name, baseline) in zip(
        baseline_styles, report["baselines"].items()
    ):
      ax.axhline(
          baseline["dev"][baseline_key],
          color="0.45",
          linestyle=style,
          linewidth=1,
          label=f"baseline: {name}",
      )
    ax.set_xlabel("training step")
    eval_steps = sorted(
        {
            s
            for r in report["configs"]
            for run in r.runs
            for s in run.curve["step"]
        }
    )
    if len(eval_steps) <= 12:  # Tick the evaluations themselves.
      ax.set_xticks(eval_steps)
    else:
      ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
  # One legend below both panels, so that no curve hides behind it.
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(
      handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False
  )
  fig.suptitle("Dev metrics over training (band: min–max over seeds)")
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  fig.savefig(path, dpi=PLOT_DPI)
  plt.close(fig)


def plot_reliability(report: Mapping[str, Any], path: pathlib.Path) -> None:
  """Per config: observed boundary frequency vs mean predicted probability."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  results = report["configs"]
  fig, axes = plt.subplots(
      1, len(results), figsize=(4.6 * len(results), 4.6), squeeze=False
  )
  edges = np.linspace(0.0, 1.0, NUM_BINS + 1)
  for ax, result in zip(axes[0], results):
    bins = result.pooled_calibration()
    count = bins["bin_count"].astype(np.float64)
    filled = count > 0
    # Counts are skewed (most sentences are not boundaries): log scale.
    counts_ax = ax.twinx()
    counts_ax.bar(
        edges[:-1],
        count,
        width=1.0 / NUM_BINS,
        align="edge",
        color="0.9",
        edgecolor="0.7",
        linewidth=0.5,
    )
    counts_ax.set_yscale("log")
    counts_ax.set_ylim(bottom=0.5)  # A bin of one sentence stays visible.
    counts_ax.set_ylabel("sentences per bin (bars, log)", color="0.4")
    ax.set_zorder(counts_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(
        [0, 1],
        [0, 1],
        linestyle="--",
        color="0.3",
        linewidth=1,
        label="perfect calibration",
    )
    mean_prob = bins["bin_prob_sum"][filled] / count[filled]
    frequency = bins["bin_positive"][filled] / count[filled]
    ax.plot(mean_prob, frequency, marker="o", color="C3", label="observed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted boundary probability (bin mean)")
    ax.set_ylabel("observed boundary frequency")
    ax.set_title(
        f"{result.label}: test ECE {calibration_ece(bins):.3f}\n"
        f"({len(result.runs)} seeds pooled, {NUM_BINS} bins)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=PLOT_DPI)
  plt.close(fig)


def write_outputs(report: Mapping[str, Any], output: pathlib.Path) -> dict:
  """Writes the PNGs, comparison.md and comparison.json; returns their paths."""
  output.mkdir(parents=True, exist_ok=True)
  plots = {
      "dev curves": output / "dev_curves.png",
      "reliability diagrams": output / "reliability.png",
  }
  plot_dev_curves(report, plots["dev curves"])
  plot_reliability(report, plots["reliability diagrams"])
  paths = {
      "markdown": output / "comparison.md",
      "json": output / "comparison.json",
      **plots,
  }
  paths["markdown"].write_text(
      markdown(report, {k: str(v) for k, v in plots.items()}), encoding="utf-8"
  )
  paths["json"].write_text(
      json.dumps(report_json(report), indent=1), encoding="utf-8"
  )
  return paths


class _QuietOrbax:
  """Drops orbax's INFO records (a dozen lines per checkpoint save)."""

  def filter(self, record) -> bool:
    return record.levelno > logging.converter.STANDARD_INFO or (
        "/orbax/" not in record.pathname
    )


def main(argv: Sequence[str] | None = None) -> dict[str, pathlib.Path]:
  """Runs the comparison; returns the paths written. Exits on a bad input."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  args.argv = argv
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  try:
    report = run_comparison(args)
  except CompareError as e:
    sys.exit(f"compare_losses.py: error: {e}")
  paths = write_outputs(report, pathlib.Path(args.output))
  print(paths["markdown"].read_text(encoding="utf-8"))
  return paths


if __name__ == "__main__":
  main()
