"""Pod-scale behaviour on one machine: processes, shard_map, preemption, resume."""

import shutil
import signal
import subprocess
import sys

import pytest

from e2e_helpers import (
    REPO,
    checkpoint_steps,
    cli,
    cli_env,
    read_events,
    start_training,
    train_flags,
    train_losses,
    wait_for_step,
)

pytestmark = pytest.mark.slow
STEPS = [
    "--config.train.num_steps=6",
    "--config.train.log_every=1",
    "--config.train.eval_every=6",
    "--config.optim.learning_rate=3e-4",
]


def launch_local(workdir, *args, num_processes=2, devices_per_process=2):
  return subprocess.run(
      [
          sys.executable,
          "tools/launch_local.py",
          f"--num_processes={num_processes}",
          f"--devices_per_process={devices_per_process}",
          f"--log_dir={workdir}_logs",
          "--",
          *train_flags(
              "--config=configs/boundary.py", f"--workdir={workdir}", *args
          ),
      ],
      capture_output=True,
      text=True,
      cwd=REPO,
      timeout=900,
      check=False,
  )


def dev_event(workdir):
  return next(e for e in read_events(workdir) if "val_pk" in e)


def _pydoc_as_choi_folder(root):
  """The pydoc corpus's first documents written as a Choi-format folder."""
  from segjax import data  # pylint: disable=g-import-not-at-top

  for split, count in (("train", 40), ("dev", 8), ("test", 8)):
    data.write_choi_dir(data.pydoc_documents(split, count), root / split)
  return [
      "--config.data.source=choi",
      f"--config.data.path={root}",
      f"--config.data.cache_dir={root}_shards",
  ]


@pytest.mark.parametrize("corpus", ["pydoc", "shards"])
def test_two_processes_of_two_devices_match_one_process_of_four(
    tmp_path, corpus
):
  """Also on a corpus folder: the pod builds its shards with 2 processes."""
  if corpus == "shards":
    steps = STEPS + _pydoc_as_choi_folder(tmp_path / "corpus")
  else:
    steps = STEPS
  pod = launch_local(tmp_path / "pod", *steps)
  logs = "".join(p.read_text() for p in (tmp_path / "pod_logs").iterdir())
  assert pod.returncode == 0, pod.stdout + logs[-3000:]
  assert "2 process(es), 4 device(s) (2 local)" in logs
  if corpus == "shards":
    # Each process wrote its part; the single-process run builds its own.
    parts = (tmp_path / "corpus_shards").glob("*/train-*.records")
    assert sorted(p.name for p in parts) == [
        "train-00000-of-00002.records",
        "train-00001-of-00002.records",
    ]
    steps[-1] = f"--config.data.cache_dir={tmp_path / 'one_shards'}"
  single = cli(
      "--config=configs/boundary.py",
      f"--workdir={tmp_path / 'one'}",
      *steps,
      devices=4,
  )
  assert single.returncode == 0, single.stderr[-3000:]

  pod_losses = train_losses(read_events(tmp_path / "pod"))
  one_losses = train_losses(read_events(tmp_path / "one"))
  assert sorted(pod_losses) == list(range(1, 7))
  for step, loss in one_losses.items():
    assert pod_losses[step] == pytest.approx(loss, rel=1e-4), step
  pod_dev, one_dev = dev_event(tmp_path / "pod"), dev_event(tmp_path / "one")
  for key in ("val_pk", "val_window_diff", "val_boundary_f1", "val_loss"):
    assert pod_dev[key] == pytest.approx(one_dev[key], rel=1e-4, abs=1e-6), key
  # Only process 0 writes metrics: one event per step, not two.
  steps = [
      e["step"] for e in read_events(tmp_path / "pod") if "train_loss" in e
  ]
  assert steps == list(range(1, 7))


def test_pmap_and_shard_map_give_the_same_losses(tmp_path):
  runs = {}
  for mode in ("pmap", "shard_map"):
    result = cli(
        "--config=configs/boundary.py",
        f"--workdir={tmp_path / mode}",
        *STEPS,
        f"--config.parallel.mode={mode}",
        devices=4,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs[mode] = train_losses(read_events(tmp_path / mode))
  assert sorted(runs["pmap"]) == list(range(1, 7))
  for step, loss in runs["pmap"].items():
    assert runs["shard_map"][step] == pytest.approx(loss, rel=1e-4), step


def test_sigterm_saves_exits_zero_and_resumes(tmp_path):
  workdir = tmp_path / "run"
  process = start_training(
      workdir,
      "--config.train.num_steps=400",
      "--config.train.checkpoint_every=1000",
      "--config.train.eval_every=1000",
      # Fixed, so that a shorter rerun keeps the schedule (a resume check).
      "--config.optim.decay_steps=400",
  )
  wait_for_step(workdir, 3, process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert "Preempted: saved step" in stderr
  saved = checkpoint_steps(workdir)
  assert len(saved) == 1 and 3 <= saved[0] < 400

  resumed = cli(
      "--config=configs/boundary.py",
      f"--workdir={workdir}",
      f"--config.train.num_steps={saved[0] + 2}",
      "--config.train.log_every=1",
      "--config.train.checkpoint_every=1000",
      "--config.train.eval_every=1000",
      "--config.optim.decay_steps=400",
      devices=2,
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from step {saved[0]}" in resumed.stderr
  assert max(train_losses(read_events(workdir))) == saved[0] + 2


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
  common = [
      "--config.train.num_steps=12",
      "--config.train.checkpoint_every=3",
      "--config.train.eval_every=1000",
      "--config.optim.decay_steps=12",
  ]
  straight = cli(
      "--config=configs/boundary.py",
      f"--workdir={tmp_path / 'straight'}",
      "--config.train.log_every=1",
      *common,
      devices=2,
  )
  assert straight.returncode == 0, straight.stderr[-3000:]

  workdir = tmp_path / "killed"
  process = start_training(workdir, *common)
  wait_for_step(workdir, 7, process)
  process.kill()
  process.communicate()
  last_saved = checkpoint_steps(workdir)[-1]
  assert 3 <= last_saved < 12
  rerun = cli(
      "--config=configs/boundary.py",
      f"--workdir={workdir}",
      "--config.train.log_every=1",
      *common,
      devices=2,
  )
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"Resuming from step {last_saved}" in rerun.stderr
  assert train_losses(read_events(workdir)) == train_losses(
      read_events(tmp_path / "straight")
  )


def test_half_written_checkpoint_is_never_restored(tmp_path):
  workdir = tmp_path / "run"
  first = cli(
      "--config=configs/boundary.py",
      f"--workdir={workdir}",
      "--config.train.num_steps=2",
      "--config.train.eval_every=1000",
      "--config.train.checkpoint_every=1",
      "--config.optim.decay_steps=4",
      devices=2,
  )
  assert first.returncode == 0, first.stderr[-3000:]
  # What a save killed mid-write leaves: orbax's temporary folder for step 5,
  # with a truncated state file.
  partial = workdir / "checkpoints" / "5.orbax-checkpoint-tmp-1795650000"
  shutil.copytree(workdir / "checkpoints" / "2", partial)
  for file in (partial / "state").rglob("*"):
    if file.is_file():
      file.write_bytes(file.read_bytes()[:7])
  rerun = cli(
      "--config=configs/boundary.py",
      f"--workdir={workdir}",
      "--config.train.num_steps=4",
      "--config.train.eval_every=1000",
      "--config.train.checkpoint_every=1",
      "--config.optim.decay_steps=4",
      devices=2,
  )
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "Resuming from step 2" in rerun.stderr
  assert checkpoint_steps(workdir)[-1] == 4


def test_sigterm_stops_every_process_at_the_same_step(tmp_path):
  """Preemption of a 2-process job: orbax's sync point picks one step."""
  workdir = tmp_path / "pod"
  launcher = subprocess.Popen(
      [
          sys.executable,
          "tools/launch_local.py",
          "--num_processes=2",
          "--devices_per_process=1",
          f"--log_dir={tmp_path / 'logs'}",
          "--",
          *train_flags(
              "--config=configs/boundary.py",
              f"--workdir={workdir}",
              "--config.train.num_steps=400",
              "--config.train.log_every=1",
              "--config.train.eval_every=1000",
              "--config.train.checkpoint_every=1000",
          ),
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=REPO,
  )
  wait_for_step(workdir, 3, launcher)
  launcher.send_signal(signal.SIGTERM)
  stdout, stderr = launcher.communicate(timeout=300)
  logs = [p.read_text() for p in sorted((tmp_path / "logs").iterdir())]
  assert launcher.returncode == 0, stdout + stderr + logs[0][-2000:]
  saved = checkpoint_steps(workdir)
  assert len(saved) == 1 and saved[0] < 400
  for log in logs:
    assert f"Preempted: saved step {saved[0]}" in log
