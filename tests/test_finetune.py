"""Fine-tuning a pretrained encoder inside the model, on a 2-layer slice.

The CPU stand-in for the GPU/TPU mode: the real all-MiniLM-L6-v2 weights,
its first two blocks, short sentences and tiny batches.
"""

import time

import functools

import jax
import numpy as np
import optax
import pytest

from e2e_helpers import (
    checkpoint_steps,
    cli,
    one_step_on_devices,
    read_events,
    start_training,
    tiny_config,
    train_losses,
    wait_for_step,
)
from segjax import checkpoints
from segjax import data
from segjax import embedding_cache
from segjax import losses
from segjax import models
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


def test_a_fine_tune_step_does_not_depend_on_device_count():
  """One SGD step of segmenter and encoder on 2 devices equals 1 device.

  SGD, not Adam: Adam would hide a gradient of the wrong scale and turn
  float-reordering noise in near-zero gradients into full-size steps.
  """
  config = tiny_config("configs/boundary.py:minilm", **FINE_TUNE)
  encoder = embedding_cache.load_encoder(config.encoder)
  model = models.model_from_config(config, encoder)
  tx = optax.apply_if_finite(optax.sgd(0.5), max_consecutive_errors=10)
  host_state = trainer.create_train_state(config, model, tx, 0, encoder.params)
  batch = next(
      data.make_train_iterator(
          data.pydoc_documents("train", num_documents=8),
          data.Tokenizer(**config.tokenizer),
          global_batch_size=4,
          max_sentences=config.data.max_sentences,
          seed=0,
          ignore_index=config.loss.ignore_index,
          encoder_tokenizer=data.WordpieceTokenizer(encoder),
      )
  )
  step = functools.partial(
      trainer.train_step,
      model=model,
      loss_fn=losses.create_loss(config.loss),
      schedule=lambda count: 1.0,
  )

  def one_step(num_devices):
    return one_step_on_devices(step, host_state, batch, num_devices)

  params_1, loss_1 = one_step(1)
  params_2, loss_2 = one_step(2)
  np.testing.assert_allclose(loss_2, loss_1, rtol=1e-6)
  moved = params_1["encoder"]["layer_1"]["query"]["kernel"] - np.asarray(
      host_state.params["encoder"]["layer_1"]["query"]["kernel"]
  )
  assert np.abs(moved).max() > 1e-6  # the encoder was updated
  # The updates agree to float32 reduction-order noise.
  initial = jax.tree.map(np.asarray, host_state.params)
  leaves = [
      jax.tree_util.tree_flatten_with_path(tree)[0]
      for tree in (params_2, params_1, initial)
  ]
  differences, norms = [], []
  for (path, a), (_, b), (_, start) in zip(*leaves):
    update_2, update_1 = a - start, b - start
    differences.append(np.linalg.norm(update_2 - update_1))
    norms.append(np.linalg.norm(update_1))
    # Gradients that are sums of many cancelling terms (attention query/key,
    # LayerNorm) keep several percent of reduction-order noise (4 devices
    # came closer to 1 than 2 did: noise, not a scale), and an attention key
    # bias has no gradient at all (softmax is shift-invariant), so only
    # updates of a real size are compared one by one. A gradient scaled by
    # the device count would be 50-100% off in every leaf.
    if norms[-1] > 1e-4:
      relative = differences[-1] / norms[-1]
      assert relative < 0.2, (jax.tree_util.keystr(path), relative)
  assert np.linalg.norm(differences) < 0.02 * np.linalg.norm(norms)
