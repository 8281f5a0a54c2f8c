r"""Benchmarks large corpora: preprocessing, start-up, memory and speed.

  python tools/bench_corpus.py --documents=20000,100000 --work=/tmp/bench
  python tools/bench_corpus.py --documents=20000 \
      --baseline_tree=/tmp/old_segjax   # the same rows for another checkout

For each corpus size N it writes a Wiki-727K-shaped corpus
(`tools/make_synthetic_corpus.py`, reused when present), reads its files
once untimed (so that every row finds them in the page cache, whatever its
order), and measures, each in fresh processes:

  * reading the text into memory (`segjax.data.load_splits`, what every
    process of a run did before the shards existed; with `--baseline_tree`
    also that checkout's);
  * `segjax.preprocess` into shards of records with 1 and 2 processes
    (these rows and the reading ones: `--repeats` rounds of every row in
    turn, and the median of each);
  * training the hashed-word model (`configs/boundary.py:hashed`) on the
    shards, with 1 process x 1 device and 2 processes x 2 devices: time
    from launch to the first step's metrics line, peak RSS per process,
    steps/s over `--steps` steps (then SIGTERM, which saves and exits).

With `--baseline_tree` (a checkout of another segjax version) the training
rows are also measured with that code on the same corpus; with
`--preprocess_baseline_tree` the preprocessing rows, in the same rounds.
Writes the
`bench_corpus` section of BENCHMARKS.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import bench_report
import numpy as np

REPO = bench_report.REPO_ROOT
# `python -c <this> <module or -c code> args...`: runs the module as
# `python -m` would (or the code), then prints the process's peak RSS.
_WITH_PEAK_RSS = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write('PEAK_RSS_KB %d\\n' % "
    "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "target = sys.argv.pop(1)\n"
    "if target == '-c':\n"
    "  exec(sys.argv.pop(1))\n"
    "else:\n"
    "  sys.argv[0] = target\n"
    "  runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
)
_READ_TEXT = (
    "import sys, ml_collections\n"
    "from segjax import data\n"
    "splits = data.load_splits(ml_collections.ConfigDict(dict(source="
    "'wiki727k', path=sys.argv[1], dev_fraction=0.1, max_documents=0)))\n"
    "print(sum(len(s) for s in splits.values()))\n"
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, tree: pathlib.Path) -> dict[str, str]:
  return dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      PYTHONPATH=str(tree),
  )


def _peak_rss_gb(stderr: str) -> float:
  values = [
      int(line.split()[1])
      for line in stderr.splitlines()
      if line.startswith("PEAK_RSS_KB ")
  ]
  return max(values) / 2**20 if values else float("nan")


def _launch(module, flags, *, processes, devices, tree, log_dir):
  """Starts `processes` processes of `module` (a job when more than one)."""
  port = _free_port()
  started = []
  for index in range(processes):
    job = (
        [
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={processes}",
            f"--process_id={index}",
        ]
        if processes > 1
        else []
    )
    log = open(log_dir / f"{module}_{index}.log", "w+", encoding="utf-8")
    started.append(
        (
            subprocess.Popen(
                [sys.executable, "-c", _WITH_PEAK_RSS, module, *flags, *job],
                cwd=tree,
                env=_env(devices, tree),
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    )
  return started


def _finish(started) -> list[float]:
  """Waits for the processes; their peak RSS in GB (raises on a failure)."""
  peaks = []
  for process, log in started:
    code = process.wait()
    log.seek(0)
    output = log.read()
    log.close()
    if code != 0:
      raise RuntimeError(f"exit {code}: {output[-3000:]}")
    peaks.append(_peak_rss_gb(output))
  return peaks


def warm_page_cache(corpus: pathlib.Path) -> None:
  """Reads every file of `corpus` once, so no timed row pays the disk."""
  for folder, _, names in os.walk(corpus):
    for name in names:
      with open(os.path.join(folder, name), "rb") as f:
        while f.read(1 << 24):
          pass


def read_text(corpus: pathlib.Path, tree: pathlib.Path) -> dict:
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, "-c", _WITH_PEAK_RSS, "-c", _READ_TEXT, str(corpus)],
      cwd=tree,
      env=_env(1, tree),
      capture_output=True,
      text=True,
      check=True,
  )
  return {
      "seconds": time.perf_counter() - start,
      "peak_rss_gb": _peak_rss_gb(result.stderr),
  }


def _data_flags(corpus, cache_dir, workdir):
  return [
      # A flag, not the `:hashed` variant, which baseline trees predate.
      "--config=configs/boundary.py",
      "--config.model.sentence_encoder=hashed",
      f"--workdir={workdir}",
      "--config.data.source=wiki727k",
      f"--config.data.path={corpus}",
      f"--config.data.cache_dir={cache_dir}",
  ]


def preprocess(corpus, cache_dir, processes, log_dir, tree=REPO) -> dict:
  shutil.rmtree(cache_dir, ignore_errors=True)
  start = time.perf_counter()
  peaks = _finish(
      _launch(
          "segjax.preprocess",
          _data_flags(corpus, cache_dir, log_dir / "unused"),
          processes=processes,
          devices=1,
          tree=tree,
          log_dir=log_dir,
      )
  )
  return {"seconds": time.perf_counter() - start, "peak_rss_gb": max(peaks)}


def train(
    corpus, cache_dir, workdir, *, processes, devices, steps, tree, log_dir
) -> dict:
  """Launch to first metrics line, peak RSS, steps/s; then SIGTERM."""
  shutil.rmtree(workdir, ignore_errors=True)
  flags = _data_flags(corpus, cache_dir, workdir)
  if tree != REPO:  # Code from before the shards reads the text itself.
    flags = [f for f in flags if not f.startswith("--config.data.cache_dir")]
  flags += [
      "--config.train.num_steps=1000000",
      "--config.train.log_every=1",
      "--config.train.eval_every=1000000",
      "--config.train.checkpoint_every=1000000",
  ]
  start = time.perf_counter()
  started = _launch(
      "segjax.train",
      flags,
      processes=processes,
      devices=devices,
      tree=tree,
      log_dir=log_dir,
  )
  metrics = workdir / "metrics.jsonl"
  first_step = None
  events = []
  try:
    while True:
      if any(p.poll() is not None for p, _ in started):
        _finish(started)  # Raises with the failed process's log.
        raise RuntimeError("a training process exited early")
      if metrics.exists():
        # Complete lines only: the trainer may be writing the last one.
        lines = metrics.read_text().split("\n")[:-1]
        events = [json.loads(line) for line in lines if line]
        if events and first_step is None:
          first_step = time.perf_counter() - start
        if events and events[-1]["step"] >= steps:
          break
      time.sleep(0.1)
  except BaseException:
    for process, _ in started:  # No orphan left training on the machine.
      process.kill()
    raise
  for process, _ in started:
    process.send_signal(signal.SIGTERM)
  peaks = _finish(started)
  rates = [e["steps_per_second"] for e in events if "steps_per_second" in e]
  return {
      "first_step_seconds": first_step,
      "peak_rss_gb": max(peaks),
      "steps_per_second": rates[-1] if rates else float("nan"),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--documents", default="20000,100000")
  parser.add_argument(
      "--work", type=pathlib.Path, default=pathlib.Path("/tmp/bench_corpus")
  )
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument(
      "--repeats",
      type=int,
      default=3,
      help="runs of each reading and preprocessing row; the table gives the"
      " median",
  )
  parser.add_argument("--baseline_tree", type=pathlib.Path, default=None)
  parser.add_argument(
      "--in_memory_max_documents",
      type=int,
      default=100_000,
      help="larger corpora skip the baseline's training, which holds all"
      " text and ids in memory (3.7 GB per process at 100K)",
  )
  parser.add_argument(
      "--read_max_documents",
      type=int,
      default=1_000_000,
      help="larger corpora skip reading the text (8.1 GB at 727K)",
  )
  parser.add_argument("--preprocess_processes", default="1,2")
  parser.add_argument(
      "--preprocess_baseline_tree",
      type=pathlib.Path,
      default=None,
      help="a checkout whose segjax.preprocess is also timed on each corpus"
      " (e.g. the previous version; --baseline_tree may predate the shards)",
  )
  parser.add_argument("--no-write", dest="write", action="store_false")
  args = parser.parse_args()
  args.work.mkdir(parents=True, exist_ok=True)
  results = args.work / "results.json"
  # Sizes measured by earlier invocations with the same --work stay in the
  # table (a 727K-document corpus is best measured on its own).
  earlier = json.loads(results.read_text()) if results.exists() else []
  for num_documents in [int(n) for n in args.documents.split(",")]:
    corpus = args.work / f"corpus-{num_documents}"
    if not (corpus / "test").is_dir():
      shutil.rmtree(corpus, ignore_errors=True)
      subprocess.run(
          [
              sys.executable,
              str(REPO / "tools/make_synthetic_corpus.py"),
              f"--output={corpus}",
              f"--documents={num_documents}",
          ],
          check=True,
      )
    warm_page_cache(corpus)
    log_dir = args.work / f"logs-{num_documents}"
    log_dir.mkdir(exist_ok=True)
    in_memory = num_documents <= args.in_memory_max_documents
    row = {"documents": num_documents, "commit": bench_report.commit(REPO)}
    if args.baseline_tree:
      row["baseline_commit"] = bench_report.commit(args.baseline_tree)
    if args.preprocess_baseline_tree:
      row["preprocess_baseline_commit"] = bench_report.commit(
          args.preprocess_baseline_tree
      )
    timed = {}  # Key -> a run of it; each is timed --repeats times.
    if num_documents <= args.read_max_documents:
      timed["read_text"] = functools.partial(read_text, corpus, REPO)
      if args.baseline_tree:  # What each process read before the shards.
        timed["read_text_baseline"] = functools.partial(
            read_text, corpus, args.baseline_tree
        )
    preprocess_counts = [int(p) for p in args.preprocess_processes.split(",")]
    preprocess_trees = {"": REPO}
    if args.preprocess_baseline_tree:
      preprocess_trees["_baseline"] = args.preprocess_baseline_tree
    for processes in preprocess_counts:
      for suffix, tree in preprocess_trees.items():
        timed[f"preprocess_{processes}{suffix}"] = functools.partial(
            preprocess,
            corpus,
            args.work / f"shards-{num_documents}-{processes}{suffix}",
            processes,
            log_dir,
            tree=tree,
        )
    # Rounds of every row in turn, so that a slow minute of a shared machine
    # slows one run of each row rather than every run of one.
    runs = {key: [] for key in timed}
    for _ in range(args.repeats):
      for key, run in timed.items():
        runs[key].append(run())
        print(num_documents, key, runs[key][-1], flush=True)
    for key, results_of_key in runs.items():
      seconds = [r["seconds"] for r in results_of_key]
      row[key] = {
          "seconds": float(np.median(seconds)),
          "runs_seconds": seconds,
          "peak_rss_gb": max(r["peak_rss_gb"] for r in results_of_key),
      }
    trees = {"new": REPO}
    if args.baseline_tree and in_memory:
      trees["baseline"] = args.baseline_tree
    for name, tree in trees.items():
      for processes, devices in ((1, 1), (2, 2)):
        key = f"train_{name}_{processes}x{devices}"
        row[key] = train(
            corpus,
            args.work / f"shards-{num_documents}-{preprocess_counts[0]}",
            args.work / f"run-{num_documents}-{key}",
            processes=processes,
            devices=devices,
            steps=args.steps,
            tree=tree,
            log_dir=log_dir,
        )
        print(num_documents, key, row[key], flush=True)
    earlier = [r for r in earlier if r["documents"] != num_documents] + [row]
    rows = sorted(earlier, key=lambda r: r["documents"])
    results.write_text(json.dumps(rows, indent=2))
    if args.write:  # After every size: a long run keeps what it measured.
      write_section(rows, args)
  print(json.dumps(earlier, indent=2))


def _vs_reading(result: dict, row: dict) -> str:
  """`result`'s time over the baseline's reading of the text, if measured."""
  read = row.get("read_text_baseline")
  return f"{result['seconds'] / read['seconds']:.2f}" if read else ""


def _seconds(result: dict) -> str:
  """The median time, and the range of the runs when there were several."""
  runs = result.get("runs_seconds", [])
  spread = f" ({min(runs):.1f}-{max(runs):.1f})" if len(runs) > 1 else ""
  return f"{result['seconds']:.1f} s{spread}"


def write_section(rows, args) -> None:
  lines = []
  for row in rows:
    n = row["documents"]
    for key, commit_key in (
        ("read_text", "commit"),
        ("read_text_baseline", "baseline_commit"),
    ):
      if key in row:
        r = row[key]
        lines.append(
            f"| {n:,} | read the text (load_splits) ({row[commit_key]}) |"
            f" {_seconds(r)} | {_vs_reading(r, row)} | |"
            f" {r['peak_rss_gb']:.2f} | |"
        )
    for key, r in row.items():
      if key.startswith("preprocess_") and isinstance(r, dict):
        commit_key = (
            "preprocess_baseline_commit"
            if key.endswith("_baseline")
            else "commit"
        )
        code = f" ({row[commit_key]})" if commit_key in row else ""
        lines.append(
            f"| {n:,} | preprocess, {key.split('_')[1]} process(es){code} |"
            f" {_seconds(r)} | {_vs_reading(r, row)} | |"
            f" {r['peak_rss_gb']:.2f} | |"
        )
    for key, r in row.items():
      if key.startswith("train_") and isinstance(r, dict):
        _, name, shape = key.split("_")
        commit_key = "commit" if name == "new" else f"{name}_commit"
        code = row.get(commit_key, f"{name} code")
        lines.append(
            f"| {n:,} | train {shape} ({code}) | | | "
            f"{r['first_step_seconds']:.1f} s | {r['peak_rss_gb']:.2f} | "
            f"{r['steps_per_second']:.2f} |"
        )
  bench_report.write_section(
      "bench_corpus",
      bench_report.table_section(
          "Large corpora (tools/bench_corpus.py)",
          "Synthetic Wiki-727K-shaped corpora (`tools/make_synthetic_corpus.py`)"
          "; `python tools/bench_corpus.py --documents=N --steps="
          f"{args.steps}` for each size. First step: from launch to the first "
          "metrics line, after preprocessing. Peak RSS: the largest process. "
          "Each row names the commit whose code it ran: the benchmarked one, "
          "or a baseline checkout (`--baseline_tree` for training, "
          "`--preprocess_baseline_tree` for preprocessing). The corpus is "
          "in the page cache for every row (read once, untimed, first). "
          "Time ÷ read: a row's time over the baseline checkout's reading of "
          "the text (what every process of a run did before the shards). "
          "Reading and preprocessing: the median of `--repeats` runs (their "
          "range in brackets), taken in rounds of every row in turn.",
          [
              "documents",
              "what",
              "time",
              "time ÷ read",
              "to first step",
              "peak RSS GB/process",
              "steps/s",
          ],
          lines,
      ),
  )


if __name__ == "__main__":
  main()
