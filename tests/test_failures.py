"""Failures are loud and one line long, and a run recovers from them by itself.

Divergence, damaged checkpoints, a full disk, a failing evaluation, a kill
mid-run, suspicious data and the console lines around them. Each case checks
the exit code, that the message is one line naming the culprit, and that
nothing was lost (a restorable checkpoint, every step's loss once).
"""

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import pytest

from e2e_helpers import (
    REPO,
    checkpoint_steps,
    cli,
    read_events,
    run_module,
    start_training,
    tiny_config,
    train_losses,
)
from segjax import checkpoints
from segjax import data
from segjax import metric_writers
from segjax import models
from segjax import trainer

CONFIG = "--config=configs/boundary.py"


def error_line(result, program="segjax.train"):
  """The last stderr line, checked to be the program's one-line error."""
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "Event loop is closed" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"{program}: error: "), result.stderr[-3000:]
  return last


def run_config(workdir):
  """The config a finished run saved, as the trainer would rebuild it."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  return ml_collections.ConfigDict(
      json.loads((pathlib.Path(workdir) / "config.json").read_text())
  )


def restorable_params(workdir, step):
  """The parameters of `step` as inference restores them (checksums checked)."""
  config = run_config(workdir)
  model = models.model_from_config(config)
  abstract = jax.eval_shape(
      lambda key: models.init_params(
          model,
          key,
          batch_size=1,
          max_sentences=config.data.max_sentences,
          max_tokens=config.tokenizer.max_tokens,
      ),
      jax.random.key(0),
  )
  reader = checkpoints.Checkpointer(
      workdir, best_metric="val_window_diff", best_mode="min"
  )
  try:
    return reader.restore_params(step, abstract)
  finally:
    reader.close()


def damage(workdir, step, how):
  """Truncates, or overwrites 64 bytes in the middle of, a step's biggest file."""
  files = [
      p
      for p in (pathlib.Path(workdir) / "checkpoints" / str(step)).rglob("*")
      if p.is_file()
  ]
  biggest = max(files, key=lambda p: p.stat().st_size)
  content = bytearray(biggest.read_bytes())
  if how == "truncate":
    del content[len(content) // 2 :]
  else:
    middle = len(content) // 2
    content[middle : middle + 64] = bytes(
        255 - b for b in content[middle : middle + 64]
    )
  biggest.write_bytes(bytes(content))


def tiny_iterator():
  """A grain iterator to checkpoint beside a state."""
  return iter(grain.MapDataset.range(4).to_iter_dataset())


# ----------------------------------------------------------------------------
# Checkpoints: damaged ones are named and skipped (library level, fast).
# ----------------------------------------------------------------------------


def _saved_steps(workdir, steps=(1, 2)):
  """A checkpointer with a small state saved at `steps` (params = step)."""
  writer = checkpoints.Checkpointer(
      workdir, keep=5, best_metric="val_pk", best_mode="min"
  )
  for step in steps:
    state = {
        "params": {"w": np.full((64, 64), step, np.float32)},
        "step": np.int32(step),
    }
    writer.save(step, state, {"step": step}, tiny_iterator())
  writer.wait()
  return writer


def _abstract():
  return {
      "params": {"w": jax.ShapeDtypeStruct((64, 64), np.float32)},
      "step": jax.ShapeDtypeStruct((), np.int32),
  }


@pytest.mark.parametrize("how", ["truncate", "overwrite"])
def test_a_damaged_latest_checkpoint_is_named_and_the_previous_one_used(
    tmp_path, how, caplog
):
  writer = _saved_steps(tmp_path)
  damage(tmp_path, 2, how)
  with pytest.raises(checkpoints.UnreadableCheckpoint) as error:
    writer.restore(2, _abstract())
  assert f"checkpoint {tmp_path / 'checkpoints' / '2'} is unreadable" in str(
      error.value
  )
  assert "\n" not in str(error.value)

  with caplog.at_level(logging.WARNING):
    step, (state, _) = writer.first_readable(
        [2, 1], lambda s: writer.restore(s, _abstract())
    )
  assert step == 1
  np.testing.assert_array_equal(state["params"]["w"], 1.0)
  warnings = [
      r.getMessage() for r in caplog.records if "unreadable" in r.message
  ]
  assert len(warnings) == 1 and "set aside as 2.unreadable" in warnings[0]
  # Set aside: nothing restores it, a new step 2 can be written.
  assert writer.all_steps() == [1]
  assert (tmp_path / "checkpoints" / "2.unreadable").is_dir()
  writer.save(
      2,
      {"params": {"w": np.zeros((64, 64), np.float32)}, "step": np.int32(2)},
      {},
      tiny_iterator(),
  )
  writer.close()


def test_no_readable_checkpoint_names_every_step(tmp_path):
  writer = _saved_steps(tmp_path)
  for step in (1, 2):
    damage(tmp_path, step, "truncate")
  with pytest.raises(checkpoints.CheckpointError, match="no readable") as error:
    writer.first_readable([2, 1], lambda s: writer.restore(s, _abstract()))
  assert "step 2: " in str(error.value) and "step 1: " in str(error.value)
  writer.close()


def test_a_state_with_nan_is_never_saved(tmp_path):
  writer = checkpoints.Checkpointer(
      tmp_path, keep=2, best_metric="val_pk", best_mode="min"
  )
  state = {"params": {"w": np.array([1.0, np.nan], np.float32)}}
  with pytest.raises(checkpoints.NonFiniteState, match="1 values"):
    writer.save(3, state, {}, tiny_iterator())
  writer.close()
  assert writer.all_steps() == []


def test_the_best_step_is_kept_from_metrics_recorded_after_the_save(tmp_path):
  writer = checkpoints.Checkpointer(
      tmp_path, keep=1, best_metric="val_pk", best_mode="min"
  )
  for step, pk in ((1, 0.3), (2, 0.1), (3, 0.2), (4, None)):
    writer.save(
        step, {"params": {"w": np.ones(2, np.float32)}}, {}, tiny_iterator()
    )
    if pk is not None:
      writer.record_eval(step, {"val_pk": pk, "val_threshold": 0.4})
  writer.close()
  reader = checkpoints.Checkpointer(
      tmp_path, best_metric="val_pk", best_mode="min"
  )
  # Latest (4, not evaluated) and best (2) are kept; the records survive.
  assert reader.all_steps() == [2, 4]
  assert reader.best_step() == 2
  assert reader.ranked_steps() == [2, 4]
  assert reader.threshold(2, {"threshold": 0.9}) == 0.4
  assert reader.threshold(4, {"threshold": 0.9}) == 0.9
  reader.close()


# ----------------------------------------------------------------------------
# Writers: one line for a failed write; metrics.jsonl cut back on resume.
# ----------------------------------------------------------------------------


def test_a_resumed_metric_log_keeps_each_step_once(tmp_path):
  (tmp_path / metric_writers.METRICS_FILE).write_text(
      "".join(
          json.dumps(e) + "\n"
          for e in (
              {"step": 1, "train_loss": 1.0},
              {"step": 2, "train_loss": 0.9},
              {"step": 2, "val_pk": 0.3},
              {"step": 3, "train_loss": 0.8},
              {"step": 3, "test_pk": 0.4, "best_step": 2},
          )
      )
      + '{"step": 4, "train_lo'  # cut off by a kill
  )
  writer = metric_writers.MetricWriter(tmp_path, resume_from=2)
  writer.write(3, {"train_loss": 0.7})
  writer.close()
  assert read_events(tmp_path) == [
      {"step": 1, "train_loss": 1.0},
      {"step": 2, "train_loss": 0.9},
      {"step": 2, "val_pk": 0.3},
      {"step": 3, "train_loss": 0.7},
  ]
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.fixture
def small_tmpfs(tmp_path):
  """A 2 MB tmpfs (we run as root); skipped where it cannot be mounted."""
  mount = tmp_path / "tmpfs"
  mount.mkdir()
  result = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
      capture_output=True,
      text=True,
      check=False,
  )
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_metric_log_is_one_line(small_tmpfs):
  writer = metric_writers.MetricWriter(small_tmpfs)
  filler = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
  with pytest.raises(OSError):
    while True:
      os.write(filler, b"\0" * 65536)
  os.close(filler)
  with pytest.raises(metric_writers.WriteError) as error:
    for step in range(1, 200):  # past the file buffers
      writer.write(step, {"train_loss": 0.5, "note": "x" * 500})
  writer.close()
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"cannot write {small_tmpfs}")
  assert "No space left on device" in message and "MB free there" in message


def test_siblings_of_a_failed_save_or_restore_log_no_tracebacks(caplog):
  """Once a save or restore failed, asyncio's "never retrieved" records of
  its other writes or reads (which failed alike) are dropped: the one-line
  error says it."""
  import asyncio
  import gc

  from segjax import checkpoints

  async def failing_write():
    raise ValueError("RESOURCE_EXHAUSTED: No space left on device")

  async def save():
    asyncio.ensure_future(failing_write())  # never awaited
    await asyncio.sleep(0.01)

  def run_and_collect():
    asyncio.run(save())
    gc.collect()

  asyncio_logger = logging.getLogger("asyncio")
  for installed in list(asyncio_logger.filters):  # by an earlier test
    if isinstance(installed, checkpoints._UnretrievedTaskErrors):
      asyncio_logger.removeFilter(installed)
  run_and_collect()
  assert "exception was never retrieved" in caplog.text  # without the filter
  caplog.clear()
  checkpoints._quiet_unretrieved_task_errors()
  run_and_collect()
  assert "never retrieved" not in caplog.text and "Traceback" not in caplog.text


@pytest.mark.slow
def test_a_full_disk_stops_training_with_one_line_and_keeps_the_last_checkpoint(
    small_tmpfs,
):
  workdir = small_tmpfs / "run"
  result = cli(
      CONFIG,
      f"--workdir={workdir}",
      "--config.train.num_steps=40",
      "--config.train.checkpoint_every=2",
      "--config.train.eval_every=1000",
      "--config.train.keep_checkpoints=50",
  )
  assert result.returncode == 1, result.stderr[-3000:]
  line = error_line(result)
  assert "cannot write " in line and "No space left on device" in line, line
  assert "MB free there" in line
  assert (
      len([l for l in result.stderr.splitlines() if "RESOURCE_EXHAUSTED" in l])
      <= 1
  )
  steps = checkpoint_steps(workdir)
  assert steps, "no checkpoint survived"
  if "checkpoint is step" in line:
    assert line.endswith(f"the last complete checkpoint is step {steps[-1]}")
  params = restorable_params(workdir, steps[-1])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


# ----------------------------------------------------------------------------
# Divergence: never a success.
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_divergence_stops_the_run_and_names_the_last_good_checkpoint(tmp_path):
  result = cli(
      CONFIG,
      f"--workdir={tmp_path}",
      "--config.optim.learning_rate=1e6",
      "--config.train.max_consecutive_skipped=4",
      "--config.train.checkpoint_every=2",
  )
  assert result.returncode == 1, result.stderr[-3000:]
  line = error_line(result)
  assert "training diverged: steps " in line, line
  assert "non-finite gradients" in line
  assert "test Pk" not in result.stdout
  # Every skipped step was shown when it happened.
  skipped = [l for l in result.stderr.splitlines() if "update skipped" in l]
  assert len(skipped) == 4, result.stderr[-3000:]
  # The checkpoint it names restores, with finite weights that were followed
  # by a finite step; none was written from the diverging ones.
  steps = checkpoint_steps(tmp_path)
  assert line.split("the last good checkpoint is step ")[1].startswith(
      f"{steps[-1]} "
  ), line
  first_skipped = int(line.split("training diverged: steps ")[1].split("-")[0])
  assert steps[-1] < first_skipped - 1
  params = restorable_params(tmp_path, steps[-1])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny finished run: checkpoints at steps 2 and 4, 4 evaluated."""
  workdir = tmp_path_factory.mktemp("trained")
  trainer.train_and_evaluate(
      tiny_config(
          **{
              "train.num_steps": 4,
              "train.log_every": 1,
              "train.eval_every": 4,
              "train.checkpoint_every": 2,
              "train.keep_checkpoints": 3,
          }
      ),
      workdir,
  )
  assert checkpoint_steps(workdir) == [2, 4]
  return workdir


def _copy(workdir, tmp_path):
  return pathlib.Path(shutil.copytree(workdir, tmp_path / "run"))


def _add_diverged_step(workdir):
  """A step 6 whose weights are finite but huge: every output is NaN/inf."""
  config = run_config(workdir)
  model = models.model_from_config(config)
  tx, _ = trainer.make_optimizer(config.optim, config.train.num_steps)
  writer = checkpoints.Checkpointer(
      workdir, keep=5, best_metric="val_window_diff", best_mode="min"
  )
  state, meta = writer.restore(
      4, trainer.abstract_train_state(config, model, tx)
  )
  huge = state.replace(
      params=jax.tree.map(lambda x: np.asarray(x) * 1e35, state.params),
      step=np.int32(6),
  )
  writer.save(6, jax.device_get(huge), meta, tiny_iterator())
  writer.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, args",
    [
        ("segjax.evaluate", ["--format=json"]),
        ("segjax.segment", ["--format=json", "-"]),
    ],
)
def test_evaluate_and_segment_refuse_a_model_with_non_finite_outputs(
    trained, tmp_path, module, args
):
  workdir = _copy(trained, tmp_path)
  _add_diverged_step(workdir)
  result = run_module(
      module,
      f"--workdir={workdir}",
      "--checkpoint=6",
      *args,
      stdin="The cat sat on the mat. It was warm. Stocks fell today.",
  )
  assert result.returncode == 1, result.stderr[-3000:]
  line = error_line(result, module)
  assert "model of step 6" in line and "NaN or inf" in line, line
  assert "NaN" not in result.stdout


# ----------------------------------------------------------------------------
# Damaged checkpoints end to end.
# ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, args", [("segjax.evaluate", []), ("segjax.segment", ["-"])]
)
def test_an_explicit_unreadable_step_is_one_line_naming_the_readable_ones(
    trained, tmp_path, module, args
):
  workdir = _copy(trained, tmp_path)
  damage(workdir, 4, "truncate")
  result = run_module(
      module,
      f"--workdir={workdir}",
      "--checkpoint=4",
      *args,
      stdin="One sentence. Another one.",
  )
  assert result.returncode == 1
  line = error_line(result, module)
  assert f"checkpoint {workdir / 'checkpoints' / '4'} is unreadable" in line
  assert line.endswith("readable steps: 2"), line
  # The best (step 4) is unreadable: the default falls back, saying so once.
  fallback = run_module(
      module, f"--workdir={workdir}", *args, stdin="One sentence. Another one."
  )
  assert fallback.returncode == 0, fallback.stderr[-3000:]
  warnings = [l for l in fallback.stderr.splitlines() if "unreadable" in l]
  assert len(warnings) == 1 and warnings[0].endswith("using step 2")
  assert "Traceback" not in fallback.stderr


@pytest.mark.slow
def test_training_resumes_from_the_newest_readable_checkpoint(tmp_path):
  fixed = [
      "--config.train.log_every=1",
      "--config.train.checkpoint_every=2",
      "--config.train.eval_every=1000",
      "--config.optim.decay_steps=6",
  ]
  first = cli(
      CONFIG, f"--workdir={tmp_path}", "--config.train.num_steps=4", *fixed
  )
  assert first.returncode == 0, first.stderr[-3000:]
  before = train_losses(read_events(tmp_path))
  damage(tmp_path, 4, "truncate")
  again = cli(
      CONFIG, f"--workdir={tmp_path}", "--config.train.num_steps=6", *fixed
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Event loop is closed" not in again.stderr
  assert "Traceback" not in again.stderr
  named = [l for l in again.stderr.splitlines() if "unreadable" in l]
  assert len(named) == 1, again.stderr[-3000:]
  assert str(tmp_path / "checkpoints" / "4") in named[0]
  assert named[0].endswith("using step 2")
  assert "Resuming from step 2" in again.stderr
  events = read_events(tmp_path)
  steps = [e["step"] for e in events if "train_loss" in e]
  assert steps == [1, 2, 3, 4, 5, 6]
  # Steps 3 and 4 were trained again from step 2, exactly as before.
  after = train_losses(events)
  assert [after[s] for s in (1, 2, 3, 4)] == [before[s] for s in (1, 2, 3, 4)]
  assert checkpoint_steps(tmp_path)[-1] == 6
  assert (tmp_path / "checkpoints" / "4.unreadable").is_dir()


# ----------------------------------------------------------------------------
# Work is not lost to a failing evaluation, nor to a kill.
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_evaluation_loses_no_training(tmp_path, monkeypatch):
  config = tiny_config(
      **{
          "train.num_steps": 4,
          "train.log_every": 1,
          "train.eval_every": 2,
          "train.checkpoint_every": 100,
      }
  )
  calls = []
  score = trainer.evaluation.score_documents

  def failing_second_time(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("evaluation broke")
    return score(*args, **kwargs)

  monkeypatch.setattr(
      trainer.evaluation, "score_documents", failing_second_time
  )
  with pytest.raises(RuntimeError, match="evaluation broke"):
    trainer.train_and_evaluate(config, tmp_path)
  # Step 4 was saved before its evaluation ran.
  assert checkpoint_steps(tmp_path) == [2, 4]
  monkeypatch.setattr(trainer.evaluation, "score_documents", score)
  results = trainer.train_and_evaluate(config, tmp_path)
  events = read_events(tmp_path)
  assert [e["step"] for e in events if "train_loss" in e] == [1, 2, 3, 4]
  assert [e["step"] for e in events if "val_pk" in e] == [2, 4]
  assert (
      results["val_pk"]
      == next(e for e in events if e.get("step") == 4 and "val_pk" in e)[
          "val_pk"
      ]
  )
  evals = json.loads(
      (tmp_path / "checkpoints" / checkpoints.EVALS_FILE).read_text()
  )
  assert sorted(evals) == ["2", "4"]
  assert "test_pk" in results


def _logged_losses(workdir):
  """step -> train_loss in metrics.jsonl, read while (or after) a run writes it."""
  losses = {}
  path = pathlib.Path(workdir) / metric_writers.METRICS_FILE
  for line in path.read_text().splitlines() if path.exists() else ():
    try:
      event = json.loads(line)
    except json.JSONDecodeError:
      continue  # being written, or cut by a kill
    if "train_loss" in event:
      losses[event["step"]] = event["train_loss"]
  return losses


def _wait_for_logged_step(workdir, step, process, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    if step in _logged_losses(workdir):
      return
    time.sleep(0.05)
  raise TimeoutError(f"step {step} not logged in {timeout} s")


@pytest.mark.slow
def test_metrics_log_every_step_once_after_sigkill_and_resume(tmp_path):
  fixed = [
      "--config.train.num_steps=60",
      "--config.train.checkpoint_every=4",
      "--config.train.eval_every=1000",
  ]
  process = start_training(tmp_path, *fixed, devices=1, config_flag=CONFIG)
  try:
    _wait_for_logged_step(tmp_path, 9, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
  finally:
    if process.poll() is None:
      process.kill()
  killed = _logged_losses(tmp_path)
  restored = checkpoint_steps(tmp_path)[-1]
  assert max(killed) > restored, "nothing to redo: the kill came too late"

  resumed = cli(
      CONFIG, f"--workdir={tmp_path}", "--config.train.log_every=1", *fixed
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  events = read_events(tmp_path)
  steps = [e["step"] for e in events if "train_loss" in e]
  assert steps == list(range(1, 61))
  after = train_losses(events)
  for step, loss in killed.items():
    assert after[step] == loss, step
  assert sum("test_pk" in e for e in events) == 1


# ----------------------------------------------------------------------------
# Suspicious data.
# ----------------------------------------------------------------------------


def _unseparated_corpus(root, num_files=3):
  for split in ("train", "dev", "test"):
    folder = root / split
    folder.mkdir(parents=True)
    for i in range(num_files):
      (folder / f"doc{i}.txt").write_text(
          "A first sentence.\nA second sentence.\nA third one.\n"
      )


def test_choi_files_without_separators_are_reported(tmp_path, caplog):
  _unseparated_corpus(tmp_path)
  with caplog.at_level(logging.WARNING):
    result = data.read_choi_dir(tmp_path / "train")
  assert len(result.documents) == 3
  warned = [r.getMessage() for r in caplog.records if "separator" in r.message]
  assert len(warned) == 3 and "doc0.txt: no '==========' separator" in warned[0]
  with pytest.raises(data.DataError) as error:
    data.load_splits(
        tiny_config(**{"data.source": "choi", "data.path": str(tmp_path)}).data
    )
  message = str(error.value)
  assert message.startswith(f"the train split ({tmp_path / 'train'})")
  assert "more than one segment in choi format" in message


def test_training_on_unsegmented_data_exits_with_one_line(tmp_path):
  _unseparated_corpus(tmp_path / "data")
  result = cli(
      CONFIG,
      f"--workdir={tmp_path / 'run'}",
      "--config.data.source=choi",
      f"--config.data.path={tmp_path / 'data'}",
  )
  assert result.returncode == 1
  line = error_line(result)
  assert "the train split" in line and "choi format" in line, line
  assert not (
      tmp_path / "run" / "checkpoints"
  ).exists() or not checkpoint_steps(tmp_path / "run")


def test_prepare_wikipedia_leaves_nothing_for_input_that_is_not_a_dump(
    tmp_path,
):
  not_a_dump = tmp_path / "page.xml"
  not_a_dump.write_text("<html><body>hello</body></html>")
  result = subprocess.run(
      [
          sys.executable,
          str(REPO / "tools" / "prepare_wikipedia.py"),
          "--input",
          str(not_a_dump),
          "--output",
          str(tmp_path / "out"),
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode == 1
  assert (
      result.stderr.strip()
      .splitlines()[-1]
      .startswith(
          f"prepare_wikipedia: error: {not_a_dump}: root element is <html>"
      )
  )
  assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------
# Output a user reads.
# ----------------------------------------------------------------------------


def test_progress_prints_no_rate_before_there_is_one(caplog):
  progress = metric_writers.Progress(start_step=0, total_steps=20, enabled=True)
  with caplog.at_level(logging.INFO, logger="absl"):
    for step in (5, 10):
      progress.update(step, "train_loss=0.5")
  first, second = [r.getMessage() for r in caplog.records]
  assert first == "step 5/20  train_loss=0.5"
  assert "steps/s" in second and "eta" in second and "nan" not in second
  assert progress.steps_per_second(5) is None


def test_an_out_of_range_value_is_warned_once(caplog):
  config = tiny_config(**{"loss.label_smoothing": 0.5})
  with caplog.at_level(logging.WARNING):
    # What the trainer does with the loss section.
    trainer.config_lib.validate_config(config)
    trainer.losses.create_loss(config.loss)
  warned = [r for r in caplog.records if "label_smoothing=0.5" in r.message]
  assert len(warned) == 1


@pytest.mark.slow
def test_evaluate_and_segment_print_no_library_warnings(trained, tmp_path):
  evaluated = run_module(
      "segjax.evaluate", f"--workdir={trained}", "--split=dev"
  )
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  segmented = run_module(
      "segjax.segment", f"--workdir={trained}", "-", stdin="One. Two."
  )
  assert segmented.returncode == 0, segmented.stderr[-3000:]
  for result in (evaluated, segmented):
    assert "read only" not in result.stderr, result.stderr
    assert not [l for l in result.stderr.splitlines() if l.startswith("W")]


@pytest.mark.slow
def test_segment_names_a_file_that_is_not_utf8_and_hints_at_one_per_line(
    trained, tmp_path
):
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("Première phrase.\nDeuxième phrase.\n".encode("latin-1"))
  result = run_module("segjax.segment", f"--workdir={trained}", str(latin1))
  assert result.returncode == 1
  line = error_line(result, "segjax.segment")
  assert line.startswith(f"segjax.segment: error: {latin1}:1: not valid UTF-8")

  items = tmp_path / "items.txt"
  items.write_text("\n".join(f"item number {i} of the list" for i in range(40)))
  listed = run_module("segjax.segment", f"--workdir={trained}", str(items))
  assert listed.returncode == 0, listed.stderr[-3000:]
  hints = [l for l in listed.stderr.splitlines() if "--one_per_line" in l]
  assert len(hints) == 1 and hints[0].startswith("segjax.segment: warning: ")
  assert str(items) in hints[0]
  per_line = run_module(
      "segjax.segment", f"--workdir={trained}", "--one_per_line", str(items)
  )
  assert per_line.returncode == 0
  assert "--one_per_line" not in per_line.stderr
