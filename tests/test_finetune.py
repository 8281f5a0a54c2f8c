"""Fine-tuning a pretrained encoder inside the model, on a 2-layer slice.

The CPU stand-in for the GPU/TPU mode: the real all-MiniLM-L6-v2 weights,
its first two blocks, short sentences and tiny batches.
"""

import time

import jax
import numpy as np
import pytest

from e2e_helpers import (
    checkpoint_steps,
    cli,
    read_events,
    start_training,
    tiny_config,
    train_losses,
    wait_for_step,
)
from segjax import checkpoints
from segjax import embedding_cache
from segjax import trainer

pytestmark = pytest.mark.slow
CONFIG = "--config=configs/boundary.py:minilm"
FINE_TUNE = {
    "encoder.fine_tune": True,
    "encoder.num_layers": 2,
    "encoder.max_tokens": 24,
    "data.max_documents": 16,
    "data.max_sentences": 8,
    "train.batch_size": 4,
    "train.eval_batch_size": 8,
    "train.log_every": 1,
    "optim.encoder_learning_rate": 1e-4,
}


def _flags(**overrides):
  return [f"--config.{k}={v}" for k, v in {**FINE_TUNE, **overrides}.items()]


def test_the_encoder_trains_with_the_segmenter(tmp_path):
  config = tiny_config(
      "configs/boundary.py:minilm",
      **FINE_TUNE,
      **{
          "train.num_steps": 8,
          "train.eval_every": 8,
          "train.checkpoint_every": 8,
      },
  )
  trainer.train_and_evaluate(config, tmp_path)
  events = read_events(tmp_path)
  losses = train_losses(events)
  assert sorted(losses) == list(range(1, 9))
  # No update was skipped: padding sentences give finite encoder gradients.
  assert all(np.isfinite(e["grad_norm"]) for e in events if "grad_norm" in e)
  assert all(e["skipped_steps"] == 0 for e in events if "skipped_steps" in e)
  assert np.mean([losses[7], losses[8]]) < np.mean([losses[1], losses[2]])

  pretrained = embedding_cache.load_encoder(config.encoder).params
  reader = checkpoints.Checkpointer(
      tmp_path, best_metric="val_window_diff", best_mode="min"
  )
  restored = reader.restore_params(
      8,
      jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
          {"encoder": pretrained},
      ),
  )
  reader.close()
  # Every weight matrix of the kept blocks moved away from its pretrained
  # value (the encoder has its own optimizer, so it is not frozen).
  for name in ("layer_0", "layer_1"):
    before = pretrained[name]["query"]["kernel"]
    after = restored["encoder"][name]["query"]["kernel"]
    assert np.abs(np.asarray(after) - before).max() > 1e-6, name


def test_fine_tuning_resumes_exactly_after_sigkill(tmp_path):
  common = _flags(
      **{
          "train.num_steps": 6,
          "train.checkpoint_every": 2,
          "train.eval_every": 1000,
          "optim.decay_steps": 6,
      }
  )
  straight = cli(CONFIG, f"--workdir={tmp_path / 'straight'}", *common)
  assert straight.returncode == 0, straight.stderr[-3000:]
  workdir = tmp_path / "killed"
  process = start_training(workdir, *common, devices=1, config_flag=CONFIG)
  wait_for_step(workdir, 3, process, timeout=600)
  # Saves are asynchronous: kill once the step-2 checkpoint is complete.
  deadline = time.time() + 300
  while not checkpoint_steps(workdir) and time.time() < deadline:
    time.sleep(0.1)
  process.kill()
  process.communicate()
  last_saved = checkpoint_steps(workdir)[-1]
  assert 2 <= last_saved < 6
  rerun = cli(CONFIG, f"--workdir={workdir}", *common)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"Resuming from step {last_saved}" in rerun.stderr
  assert train_losses(read_events(workdir)) == train_losses(
      read_events(tmp_path / "straight")
  )


def test_two_devices_fine_tune_as_one(tmp_path):
  common = _flags(
      **{"train.num_steps": 3, "train.eval_every": 3},
      **{"optim.learning_rate": 3e-4, "optim.encoder_learning_rate": 1e-5},
  )
  one = cli(CONFIG, f"--workdir={tmp_path / 'one'}", *common, devices=1)
  assert one.returncode == 0, one.stderr[-3000:]
  two = cli(CONFIG, f"--workdir={tmp_path / 'two'}", *common, devices=2)
  assert two.returncode == 0, two.stderr[-3000:]
  one_losses = train_losses(read_events(tmp_path / "one"))
  two_losses = train_losses(read_events(tmp_path / "two"))
  assert sorted(one_losses) == [1, 2, 3]
  for step, loss in one_losses.items():
    assert two_losses[step] == pytest.approx(loss, rel=1e-4), step
