r"""Compares the losses: trains each config with several seeds, scores test.

  python tools/compare_losses.py --output runs/compare_pydoc
  python tools/compare_losses.py --output runs/compare_wiki \
      --data_source wiki727k --data_path /data/wiki --seeds 3 \
      --configs configs/cross_entropy.py,configs/boundary.py:aggressive \
      --set train.num_steps=300

Every config (default: the legacy and the boundary-aware loss) is trained
once per seed with `trainer.train_and_evaluate`, in this process, into
`<workdir_root>/<config>/seed<s>`; each run is scored on test with the best
checkpoint and its dev-tuned threshold. A run whose workdir already holds
its test scores (`metrics.jsonl`) and their calibration bins is reused, so
rerunning an interrupted comparison only trains what is missing (a workdir
holding a run of a different config is refused). The three baselines of `segjax.baselines` are scored on the
same test documents with the same metric code: no boundaries, boundaries
evenly spaced at the mean train segment length, and nltk's TextTiling (w, k
tuned on dev by Pk).

Writes into `--output`: `comparison.md` (tables), `comparison.json` (every
number), `dev_curves.png` (dev WindowDiff and boundary F1 over steps, mean
and min-max band over seeds) and `reliability.png` (test reliability diagram
per config: the bins each run's trainer saved, pooled over seeds).

Needs matplotlib besides segjax's own requirements.
"""

from __future__ import annotations

import argparse
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

from segjax import baselines as baselines_lib  # pylint: disable=g-import-not-at-top
from segjax import config_lib
from segjax import data
from segjax import metric_writers
from segjax import metrics
from segjax import trainer

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = "configs/cross_entropy.py,configs/boundary.py"
PLOT_DPI = 110
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


class CompareError(ValueError):
  """A bad command line or an unusable workdir; the message says which."""


# ----------------------------------------------------------------------------
# Command line and configs.
# ----------------------------------------------------------------------------


def add_set_flag(parser: argparse.ArgumentParser) -> None:
  """`--set KEY=VALUE` (repeatable) into `args.overrides`."""
  parser.add_argument(
      "--set",
      dest="overrides",
      action="append",
      default=[],
      metavar="KEY=VALUE",
      help="config override for every run, repeatable, e.g. "
      "train.num_steps=300",
  )


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
  add_set_flag(parser)
  parser.add_argument(
      "--workdir_root",
      default=None,
      help="where the runs go; default <output>/runs",
  )
  parser.add_argument(
      "--texttiling_w",
      default=",".join(map(str, baselines_lib.TEXTTILING_W)),
      help="TextTiling pseudo-sentence sizes tried on dev",
  )
  parser.add_argument(
      "--texttiling_k",
      default=",".join(map(str, baselines_lib.TEXTTILING_K)),
      help="TextTiling block sizes tried on dev",
  )
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error("--seeds must be >= 1")
  return args


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
    spec: str, overrides: Sequence[str], seed: int
) -> ml_collections.ConfigDict:
  """The config of one run, validated before anything trains.

  `overrides` are `key=value` strings, parsed by ml_collections exactly as
  `--config.key=value` on the train command line.
  """
  try:
    config = config_lib.load_config(
        resolve_spec(spec), [*overrides, f"seed={seed}"]
    )
    config_lib.validate_config(config)
  except config_lib.ConfigError as e:
    raise CompareError(f"{spec}: {e}") from e
  return config


def run_overrides(args: argparse.Namespace) -> list[str]:
  """Every `--set` plus `--data_source` / `--data_path`, in order."""
  overrides = list(args.overrides)
  if args.data_source is not None:
    overrides.append(f"data.source={args.data_source}")
  if args.data_path is not None:
    overrides.append(f"data.path={args.data_path}")
  return overrides


# ----------------------------------------------------------------------------
# Small helpers: statistics.
# ----------------------------------------------------------------------------


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


def check_workdir(
    config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> None:
  """Refuses a workdir holding a run of another config.

  The trainer would silently resume such a run; a comparison must not mix
  runs made with different settings.
  """
  stored = config_lib.saved_run_config(workdir)
  if stored is not None and stored != trainer.config_as_json(config):
    raise CompareError(
        f"{workdir} holds a run of a different config; remove it or pass "
        "another --workdir_root"
    )


def final_test_event(workdir: pathlib.Path, num_steps: int) -> dict | None:
  """The last event with the best checkpoint's test scores, if the run ended."""
  for event in reversed(metric_writers.read_events(workdir)):
    if "test_pk" in event and event.get("step") == num_steps:
      return event
  return None


def recorded_wall_time(workdir: pathlib.Path) -> float:
  """The wall time a finished run recorded (NaN if it did not)."""
  path = workdir / WALL_TIME_FILE
  return json.loads(path.read_text())["seconds"] if path.is_file() else math.nan


def train_or_reuse(
    config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> tuple[dict, float, bool]:
  """(test event, wall seconds, reused) of a finished run; trains if needed.

  A run is finished when it logged the final test scores and saved their
  calibration bins. The trainer resumes an unfinished one; a run trained
  before the trainer saved the bins only has its test set scored again, and
  keeps the wall time it recorded.
  """
  check_workdir(config, workdir)
  num_steps = config.train.num_steps
  event = final_test_event(workdir, num_steps)
  if event is not None and (workdir / trainer.CALIBRATION_FILE).is_file():
    logging.info("Reusing the finished run in %s", workdir)
    return event, recorded_wall_time(workdir), True
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
  # A resumed run's time covers only the steps trained in this call; a
  # finished run whose test set was only scored again keeps its own.
  if not (workdir / WALL_TIME_FILE).is_file():
    (workdir / WALL_TIME_FILE).write_text(json.dumps({"seconds": wall}))
  return event, recorded_wall_time(workdir), False


def dev_curve(workdir: pathlib.Path) -> dict[str, list[float]]:
  """`step` and CURVE_KEYS per dev eval; a step logged twice keeps the last."""
  by_step = {}
  for event in metric_writers.read_events(workdir):
    if "val_window_diff" in event:
      by_step[event["step"]] = event
  steps = sorted(by_step)
  curve = {"step": steps}
  for key in CURVE_KEYS:
    curve[key] = [as_float(by_step[s].get(key)) for s in steps]
  return curve


def test_calibration(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """The calibration bins of the best checkpoint's test probabilities.

  The trainer saves them with the test scores (`trainer.CALIBRATION_FILE`).
  """
  saved = json.loads((workdir / trainer.CALIBRATION_FILE).read_text())
  return {k: np.asarray(saved[k]) for k in metrics.CalibrationStats._fields}


def calibration_ece(bins: Mapping[str, np.ndarray]) -> float:
  """The ECE of calibration bins (one run's or pooled)."""
  return float(
      metrics.compute_calibration(metrics.CalibrationStats(**bins))["ece"]
  )


def run_config_seed(config, workdir: pathlib.Path) -> RunResult:
  """Trains or reuses one run and collects everything the report shows."""
  event, wall, reused = train_or_reuse(config, workdir)
  return RunResult(
      seed=int(config.seed),
      workdir=str(workdir),
      test={key: as_float(event.get(f"test_{key}")) for key in SCORE_KEYS},
      best_step=int(event.get("best_step", -1)),
      wall_seconds=wall,
      reused=reused,
      curve=dev_curve(workdir),
      calibration=test_calibration(workdir),
  )


# ----------------------------------------------------------------------------
# Baselines: no boundaries, evenly spaced, TextTiling.
# ----------------------------------------------------------------------------


def _scored(fitted, documents) -> tuple[dict, int]:
  """(scores, documents that fell back to no boundaries) of a baseline."""
  predictions, fallbacks = fitted.predict(documents)
  return baselines_lib.score_predictions(predictions, documents), fallbacks


def run_baselines(
    splits: Mapping[str, Sequence[data.Document]],
    ws: Sequence[int],
    ks: Sequence[int],
) -> dict[str, dict]:
  """Every baseline's dev and test scores, by table title.

  `seconds` is the time to predict and score (for TextTiling, test only:
  its dev scores come from the tuning, timed as `tuning_seconds`).
  """
  results = {}
  for name in baselines_lib.NAMES:
    start = time.perf_counter()
    fitted = baselines_lib.fit(name, splits, texttiling_w=ws, texttiling_k=ks)
    tuned = time.perf_counter()
    test, test_fallbacks = _scored(fitted, splits["test"])
    if fitted.tuned is None:
      dev, _ = _scored(fitted, splits["dev"])
      results[fitted.title] = {"dev": dev, "test": test, **fitted.params}
    else:
      results[fitted.title] = {
          "dev": fitted.tuned["dev"],
          "test": test,
          **fitted.params,
          "w_grid": list(ws),
          "k_grid": list(ks),
          "test_fallbacks": test_fallbacks,
          "dev_fallbacks": fitted.tuned["fallbacks"],
          "grid": list(fitted.tuning),
          "tuning_seconds": tuned - start,
      }
    results[fitted.title]["seconds"] = time.perf_counter() - tuned
  return results


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
      runs.append(run_config_seed(config, workdir))
    results.append(ConfigResult(label=label, spec=spec, runs=runs))

  return {
      "dataset": {
          "source": data_config.source,
          "path": data_config.path,
          "documents": {k: len(v) for k, v in splits.items()},
          "mean_train_segment_length": baselines_lib.mean_segment_length(
              splits["train"]
          ),
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
  return metric_writers.json_safe(out)


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


def markdown(report: Mapping[str, Any], plots: Mapping[str, str]) -> str:
  """comparison.md: header, the main table, notes, per-seed table, plots."""
  dataset = report["dataset"]
  docs = dataset["documents"]
  overrides = ", ".join(f"`{o}`" for o in report["overrides"])
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
  for ax, result in zip(axes[0], results):
    bins = result.pooled_calibration()
    num_bins = len(bins["bin_count"])  # As the trainer saved them.
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    count = bins["bin_count"].astype(np.float64)
    filled = count > 0
    # Counts are skewed (most sentences are not boundaries): log scale.
    counts_ax = ax.twinx()
    counts_ax.bar(
        edges[:-1],
        count,
        width=1.0 / num_bins,
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
        f"({len(result.runs)} seeds pooled, {num_bins} bins)",
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


def main(argv: Sequence[str] | None = None) -> dict[str, pathlib.Path]:
  """Runs the comparison; returns the paths written. Exits on a bad input."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  args.argv = argv
  logging.set_verbosity(logging.INFO)
  metric_writers.quiet_library_logs()
  try:
    report = run_comparison(args)
  except CompareError as e:
    sys.exit(f"compare_losses.py: error: {e}")
  paths = write_outputs(report, pathlib.Path(args.output))
  print(paths["markdown"].read_text(encoding="utf-8"))
  return paths


if __name__ == "__main__":
  main()
