r"""Chooses settings on a small corpus by cross-validation, not on its dev set.

  python tools/cross_validate.py --output runs/cv_wiki \
      --data_source wiki727k --data_path runs/wiki_excerpt --folds 5 \
      --config configs/boundary.py --set encoder.cache_dir=runs/embeddings \
      --candidate defaults \
      --candidate "window15:model.cohesion_window=15" \
      --candidate "short:train.num_steps=300;optim.warmup_steps=25"

Ten dev documents are too few to rank settings by (RESULTS.md): the
differences between settings drown in the noise of a small sample. This
pools the train and dev documents of `--data_path` (its test split is never
read), deals them into `--folds` folds in the order of a hash of their
names, and for each fold trains every candidate on the other folds (with
dev held out of those by `data.dev_fraction`, as for a corpus without a dev
split) and scores the fold as `tools/compare_losses.py` scores test: the
best checkpoint at its dev-tuned threshold. Every document is scored once
per candidate and seed, by a model that never saw it.

A candidate is `name` or `name:key=value;key=value` (config overrides, as
`--config.key=value` sets them, on top of every `--set`). The fold folders
(`<output>/folds/`) hold symbolic links to the documents; the runs go to
`<output>/runs/<candidate>/fold<k>/seed<s>` and a finished run is reused.
Writes `<output>/cross_validation.md` and `cross_validation.json`: per
candidate the mean and standard deviation over folds and seeds of the
scores, and Pk per fold.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

# The tools beside this file; a test may load this tool by path.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_report  # pylint: disable=g-import-not-at-top,wrong-import-position
import compare_losses  # pylint: disable=g-import-not-at-top,wrong-import-position

from segjax.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
from segjax.data import documents  # pylint: disable=g-import-not-at-top

POOLED_SPLITS = ("train", "dev")
SCORES = (
    ("pk", "Pk (↓)"),
    ("window_diff", "WindowDiff (↓)"),
    ("boundary_f1", "boundary F1"),
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="cross_validate.py",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--output", required=True, help="output folder")
  parser.add_argument(
      "--config", default="configs/boundary.py", help="config spec"
  )
  parser.add_argument("--data_source", required=True)
  parser.add_argument(
      "--data_path", required=True, help="a corpus folder: train/ [dev/]"
  )
  parser.add_argument("--folds", type=int, default=5)
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument(
      "--candidate",
      dest="candidates",
      action="append",
      default=[],
      metavar="NAME[:KEY=VALUE;...]",
      help="settings to score, repeatable",
  )
  compare_losses.add_set_flag(parser)
  args = parser.parse_args(argv)
  if args.folds < 2:
    parser.error("--folds must be >= 2")
  if args.seeds < 1:
    parser.error("--seeds must be >= 1")
  if not args.candidates:
    parser.error("name at least one --candidate")
  args.argv = list(argv)
  return args


def parse_candidate(text: str) -> tuple[str, list[str]]:
  """`name:key=value;key=value` -> (name, ["key=value", ...])."""
  name, _, overrides = text.partition(":")
  if not name or "/" in name:
    raise compare_losses.CompareError(f"--candidate {text!r}: bad name")
  return name, [o.strip() for o in overrides.split(";") if o.strip()]


def pooled_documents(data_path: pathlib.Path) -> list[pathlib.Path]:
  """The files of the pooled splits (test is left alone), in a fixed order."""
  files = []
  for split in POOLED_SPLITS:
    root = data_path / split
    if root.is_dir():
      files += [root / name for name, _ in documents.data_files_and_sizes(root)]
  if not files:
    raise compare_losses.CompareError(
        f"{data_path} has no files under {' or '.join(POOLED_SPLITS)}/"
    )
  return files


def assign_folds(
    files: Sequence[pathlib.Path], data_path: pathlib.Path, folds: int
) -> list[int]:
  """Fold of each file: dealt in the order of a hash of its path.

  Dealing (not cutting the order into blocks) gives folds of equal size
  within one file; the hash makes them independent of how the corpus
  happens to be ordered or numbered.
  """
  ranks = [
      corpus_lib.name_rank(f.relative_to(data_path).as_posix()) for f in files
  ]
  fold = np.empty(len(files), np.int64)
  fold[np.argsort(np.array(ranks, np.uint64), kind="stable")] = (
      np.arange(len(files)) % folds
  )
  return fold.tolist()


def write_fold_folders(
    files: Sequence[pathlib.Path],
    fold_of: Sequence[int],
    data_path: pathlib.Path,
    folds: int,
    output: pathlib.Path,
) -> list[pathlib.Path]:
  """`<output>/folds/fold<k>/{train,test}/`: links to the files, per fold.

  The assignment is kept in `<output>/folds/folds.json`; an output folder
  made for other folds (another corpus or `--folds`) is refused, since its
  links and finished runs would mix the two.
  """
  assignment = {
      "folds": folds,
      "files": [
          [str(path.resolve()), fold] for path, fold in zip(files, fold_of)
      ],
  }
  record = output / "folds" / "folds.json"
  if record.is_file() and json.loads(record.read_text()) != assignment:
    raise compare_losses.CompareError(
        f"{output} holds the runs of other folds (another corpus or --folds);"
        " use another --output"
    )
  record.parent.mkdir(parents=True, exist_ok=True)
  record.write_text(json.dumps(assignment))
  roots = []
  for k in range(folds):
    root = output / "folds" / f"fold{k}"
    for i, (path, fold) in enumerate(zip(files, fold_of)):
      split = "test" if fold == k else "train"
      # One flat folder per split; the index keeps the names distinct.
      name = f"{i:06d}-" + path.relative_to(data_path).as_posix().replace(
          "/", "_"
      )
      link = root / split / name
      link.parent.mkdir(parents=True, exist_ok=True)
      if not link.is_symlink():
        os.symlink(path.resolve(), link)
    roots.append(root)
  return roots


def run_candidates(args: argparse.Namespace) -> dict[str, Any]:
  """Trains and scores every (candidate, fold, seed); returns the report."""
  start = time.perf_counter()
  output = pathlib.Path(args.output)
  data_path = pathlib.Path(args.data_path).resolve()
  candidates = [parse_candidate(c) for c in args.candidates]
  names = [name for name, _ in candidates]
  if len(set(names)) != len(names):
    raise compare_losses.CompareError("a --candidate name is used twice")
  files = pooled_documents(data_path)
  fold_of = assign_folds(files, data_path, args.folds)
  roots = write_fold_folders(files, fold_of, data_path, args.folds, output)

  def config_of(candidate_overrides, root, seed):
    return compare_losses.build_config(
        args.config,
        [
            *args.overrides,
            *candidate_overrides,
            f"data.source={args.data_source}",
            f"data.path={root}",
        ],
        seed,
    )

  # Every config is built and validated before the first run starts.
  configs = {
      name: [
          [config_of(overrides, root, seed) for seed in range(args.seeds)]
          for root in roots
      ]
      for name, overrides in candidates
  }
  results = []
  for name, overrides in candidates:
    runs = []
    for k, fold_configs in enumerate(configs[name]):
      for config in fold_configs:
        workdir = output / "runs" / name / f"fold{k}" / f"seed{config.seed}"
        logging.info("=== %s fold %d seed %d", name, k, config.seed)
        event, wall, _ = compare_losses.train_or_reuse(config, workdir)
        runs.append(
            {
                "fold": k,
                "seed": int(config.seed),
                "best_step": int(event.get("best_step", -1)),
                "wall_seconds": wall,
                **{
                    key: compare_losses.as_float(event.get(f"test_{key}"))
                    for key, _ in SCORES
                },
            }
        )
    results.append({"name": name, "overrides": overrides, "runs": runs})
  return {
      "config": args.config,
      "data_path": str(data_path),
      "folds": args.folds,
      "fold_sizes": np.bincount(fold_of, minlength=args.folds).tolist(),
      "seeds": args.seeds,
      "overrides": args.overrides,
      "candidates": results,
      "machine": bench_report.machine_description(),
      "code": compare_losses.code_version(),
      "command": "python tools/cross_validate.py " + shlex.join(args.argv),
      "total_seconds": time.perf_counter() - start,
  }


def markdown(report: Mapping[str, Any]) -> str:
  """The report's tables: scores over folds and seeds, Pk per fold."""
  folds = report["folds"]
  train_seconds = sum(
      run["wall_seconds"] for c in report["candidates"] for run in c["runs"]
  )
  header = (
      ["candidate", "overrides"]
      + [label for _, label in SCORES]
      + [f"Pk fold {k}" for k in range(folds)]
  )
  lines = [
      "# Cross-validation",
      "",
      f"`{report['command']}`",
      "",
      f"{report['config']} on {report['data_path']} (train and dev pooled),"
      f" {folds} folds of {', '.join(map(str, report['fold_sizes']))}"
      f" documents, {report['seeds']} seed(s); every run: "
      f"{' '.join(report['overrides']) or 'no overrides'}. Mean ± standard"
      " deviation over folds and seeds. Machine: "
      f"{report['machine']}; code {report['code']}; the runs trained for"
      f" {train_seconds:.0f} s in all (this invocation:"
      f" {report['total_seconds']:.0f} s).",
      "",
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
  ]
  for candidate in report["candidates"]:
    runs = candidate["runs"]
    cells = [candidate["name"], " ".join(candidate["overrides"]) or "—"]
    for key, _ in SCORES:
      mean, std = compare_losses.mean_std([r[key] for r in runs])
      cells.append(f"{mean:.3f} ± {std:.3f}")
    for k in range(folds):
      mean, _ = compare_losses.mean_std(
          [r["pk"] for r in runs if r["fold"] == k]
      )
      cells.append(f"{mean:.3f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  logging.set_verbosity(logging.INFO)
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    report = run_candidates(args)
  except compare_losses.CompareError as e:
    sys.exit(f"cross_validate.py: error: {e}")
  output = pathlib.Path(args.output)
  (output / "cross_validation.json").write_text(json.dumps(report, indent=2))
  text = markdown(report)
  (output / "cross_validation.md").write_text(text)
  print(text)
  return report


if __name__ == "__main__":
  main()
