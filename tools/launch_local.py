r"""Runs a multi-process segjax job on this machine, as a pod would.

  python tools/launch_local.py --num_processes=2 --devices_per_process=2 \
      --log_dir=runs/pod_logs -- --config=configs/boundary.py --workdir=runs/pod

Starts `python -m segjax.train <train flags>` (or `--module=segjax.preprocess`)
once per process with
`--coordinator_address=127.0.0.1:<free port> --num_processes --process_id`,
each process seeing `--devices_per_process` simulated CPU devices (CPU
collectives go through gloo). Each process logs to `<log_dir>/process_<i>.log`.
Exits non-zero if any process fails (and then stops the others). SIGTERM and
SIGINT are forwarded to every process, as a preempted pod would see them.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_command(
    train_args: list[str],
    *,
    port: int,
    num_processes: int,
    process_id: int,
    module: str = "segjax.train",
) -> list[str]:
  return [
      sys.executable,
      "-m",
      module,
      *train_args,
      f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={num_processes}",
      f"--process_id={process_id}",
  ]


def launch(
    train_args: list[str],
    *,
    num_processes: int,
    devices_per_process: int,
    log_dir: pathlib.Path,
    module: str = "segjax.train",
) -> int:
  """Runs the job; returns 0 when every process exits 0."""
  log_dir.mkdir(parents=True, exist_ok=True)
  port = free_port()
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=(
          f"--xla_force_host_platform_device_count={devices_per_process}"
      ),
  )
  processes, logs = [], []
  for i in range(num_processes):
    log = open(log_dir / f"process_{i}.log", "w", encoding="utf-8")
    logs.append(log)
    processes.append(
        subprocess.Popen(
            process_command(
                train_args,
                port=port,
                num_processes=num_processes,
                process_id=i,
                module=module,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    )

  def forward(signum, frame):
    del frame
    for p in processes:
      if p.poll() is None:
        p.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  status = 0
  while any(p.poll() is None for p in processes):
    failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
    if failed and not status:
      status = 1
      print(
          f"process {failed[0]} failed (exit {processes[failed[0]].poll()});"
          " stopping the others",
          file=sys.stderr,
      )
      for p in processes:
        if p.poll() is None:
          p.terminate()
    time.sleep(0.2)
  for log in logs:
    log.close()
  codes = [p.returncode for p in processes]
  for i, code in enumerate(codes):
    print(f"process {i}: exit {code}, log {log_dir / f'process_{i}.log'}")
  return 0 if all(c == 0 for c in codes) else 1


def main() -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      usage="%(prog)s [options] -- <segjax.train flags>",
  )
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=2)
  parser.add_argument(
      "--log_dir",
      type=pathlib.Path,
      default=pathlib.Path("runs/launch_local_logs"),
  )
  parser.add_argument(
      "--module",
      default="segjax.train",
      choices=("segjax.train", "segjax.preprocess"),
      help="what each process runs (both take the segjax.train flags)",
  )
  parser.add_argument("train_args", nargs=argparse.REMAINDER)
  args = parser.parse_args()
  train_args = (
      args.train_args[1:]
      if args.train_args[:1] == ["--"]
      else (args.train_args)
  )
  if not train_args:
    parser.error("give the segjax.train flags after --")
  return launch(
      train_args,
      num_processes=args.num_processes,
      devices_per_process=args.devices_per_process,
      log_dir=args.log_dir,
      module=args.module,
  )


if __name__ == "__main__":
  sys.exit(main())
