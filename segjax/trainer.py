"""The training library: optimizer, state, the per-device step and the loop.

`segjax.train` is its command line. `train_and_evaluate` reads top to bottom:
set-up, input, model and optimizer, checkpoints, compiled steps, the loop,
the final test evaluation.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pathlib
import signal
from typing import Any, NamedTuple

from absl import logging
from flax.training import train_state
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from segjax import checkpoints
from segjax import config_lib
from segjax import data
from segjax import embedding_cache
from segjax import evaluation
from segjax import losses
from segjax import metric_writers
from segjax import models
from segjax import parallel as parallel_lib

# Queued collectives on forced CPU devices can deadlock; block at least this
# often (ECOSYSTEM notes: ~70 queued all-reduce steps hung).
MAX_QUEUED_STEPS = 25
# The best checkpoint's test reliability-diagram bins, written at the end
# (`evaluation.calibration_bins` plus `best_step`).
CALIBRATION_FILE = "test_calibration.json"
# Metrics logged as their latest value rather than the interval mean.
LATEST_VALUE_METRICS = ("learning_rate", "skipped_steps")


class TrainState(train_state.TrainState):
  """Flax's TrainState plus the key that dropout keys are folded from."""

  dropout_key: jax.Array


# ----------------------------------------------------------------------------
# Optimizer and state.
# ----------------------------------------------------------------------------


def _warmup_cosine(peak: float, optim, decay_steps: int):
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=peak,
      warmup_steps=min(optim.warmup_steps, decay_steps - 1),
      decay_steps=decay_steps,
      end_value=0.05 * peak,
  )


def make_optimizer(
    optim: ml_collections.ConfigDict, num_steps: int, *, fine_tune: bool = False
):
  """AdamW with warmup + cosine decay and global-norm clipping.

  With `fine_tune`, the pretrained encoder's parameters (the `encoder`
  subtree) get their own AdamW with `optim.encoder_learning_rate` and
  `optim.encoder_weight_decay` (same warmup and decay), the rest the main
  one; the clipping norm is over all parameters.

  A step whose gradients are not finite is skipped (`apply_if_finite`): the
  weights and Adam moments stay as they were and `total_notfinite` counts it.
  Its consecutive-error limit is set beyond any run length, because past it
  optax applies the NaN update and the weights are lost for good. A skipped
  step also leaves AdamW's own step count, and so the schedule, where it was.

  Returns:
    (optax transformation, learning-rate schedule of the main parameters).
  """
  decay_steps = optim.decay_steps or num_steps
  schedule = _warmup_cosine(optim.learning_rate, optim, decay_steps)
  adamw = lambda rate, decay: optax.adamw(
      rate, b1=optim.b1, b2=optim.b2, weight_decay=decay
  )
  update = adamw(schedule, optim.weight_decay)
  if fine_tune:
    update = optax.multi_transform(
        {
            "encoder": adamw(
                _warmup_cosine(optim.encoder_learning_rate, optim, decay_steps),
                optim.encoder_weight_decay,
            ),
            "segmenter": update,
        },
        _encoder_or_segmenter,
    )
  inner = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), update)
  return (
      optax.apply_if_finite(inner, max_consecutive_errors=2**31 - 1),
      schedule,
  )


def _encoder_or_segmenter(params):
  """The `multi_transform` label of every parameter."""
  return {
      name: jax.tree.map(
          lambda _, label="encoder" if name == "encoder" else "segmenter": label,
          subtree,
      )
      for name, subtree in params.items()
  }


def _initial_state(
    config, model, tx, embedding_dim=0, pretrained=None
) -> TrainState:
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  params = models.init_params(
      model,
      init_key,
      batch_size=1,
      max_sentences=config.data.max_sentences,
      max_tokens=config.tokenizer.max_tokens,
      embedding_dim=embedding_dim,
  )
  if pretrained is not None:
    params = {**params, "encoder": pretrained}
  return TrainState.create(
      apply_fn=model.apply,
      params=params,
      tx=tx,
      dropout_key=jax.random.key_data(dropout_key),
  )


def create_train_state(
    config, model, tx, embedding_dim=0, pretrained=None
) -> TrainState:
  """Initial state on the host, identical on every process (seeded).

  `embedding_dim` is the pretrained encoder's D (frozen pretrained models);
  `pretrained` the parameters of an encoder fine-tuned inside the model.
  """
  # Eager initialisation runs op by op: ~10x slower than one jit. The
  # pretrained weights are an argument, not a constant folded into it.
  init = jax.jit(
      lambda weights: _initial_state(config, model, tx, embedding_dim, weights)
  )
  return jax.device_get(init(pretrained))


def abstract_train_state(config, model, tx, embedding_dim=0) -> TrainState:
  """The state's structure, shapes and dtypes, without computing it.

  Enough as a checkpoint restore target; skips compiling the initialiser.
  """
  return jax.eval_shape(
      functools.partial(_initial_state, config, model, tx, embedding_dim)
  )


# ----------------------------------------------------------------------------
# The per-device train step.
# ----------------------------------------------------------------------------


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, model, loss_fn, schedule
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on this device's rows of the global batch (axis `batch`).

  The loss psums its (numerator, denominator) pairs, so every device sees
  the global-batch loss and each device's gradient is the device count times
  its rows' share; `pmean` of the gradients is therefore the exact gradient
  of the global loss. Dropout keys come from the step and each row's index
  in the global batch, so the update does not depend on the device count.
  """
  step_key = jax.random.fold_in(
      jax.random.wrap_key_data(state.dropout_key), state.step
  )
  example_rngs = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(
      batch["example_id"]
  )

  def loss_of(params):
    logits = model.apply(
        {"params": params},
        batch["tokens"],
        batch["sentence_mask"],
        batch.get("embeddings"),
        batch.get("encoder_ids"),
        train=True,
        example_rngs=example_rngs,
    )
    return loss_fn(logits, batch["labels"], axis_name=parallel_lib.AXIS)

  (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, parallel_lib.AXIS)
  new_state = state.apply_gradients(grads=grads)
  metrics = {f"train_{k}": v for k, v in aux.items()}
  metrics["train_loss"] = loss
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["param_norm"] = optax.tree.norm(new_state.params)
  metrics["update_norm"] = optax.tree.norm(
      jax.tree.map(jnp.subtract, new_state.params, state.params)
  )
  metrics["learning_rate"] = schedule(state.step)
  metrics["skipped_steps"] = new_state.opt_state.total_notfinite
  return new_state, metrics


# ----------------------------------------------------------------------------
# Helpers of the loop.
# ----------------------------------------------------------------------------


class PreemptionWatcher:
  """Says, at a step boundary, that a SIGTERM asked the job to stop.

  A preempted TPU VM receives SIGTERM. In a multi-process job every process
  must stop at the same step: orbax's preemption sync point (backed by
  `jax.distributed`) gives them one. A single process catches the signal
  itself and stops at its next step.
  """

  def __init__(self, checkpointer: checkpoints.Checkpointer):
    self._manager = checkpointer.manager
    self._signalled = False
    self._multi_process = jax.process_count() > 1
    if not self._multi_process:
      signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint at the next step")
    self._signalled = True

  def should_stop(self, step: int) -> bool:
    if self._multi_process:
      return self._manager.reached_preemption(step)
    return self._signalled

  def close(self) -> None:
    if not self._multi_process:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interval_summary(pending: list[dict[str, np.ndarray]]) -> dict[str, float]:
  """Mean of each train metric over the steps since the last log line."""
  summary = {}
  for key in pending[-1]:
    values = [float(m[key]) for m in pending]
    summary[key] = (
        values[-1] if key in LATEST_VALUE_METRICS else float(np.mean(values))
    )
  return summary


def log_startup(config, parallel, splits, num_params) -> None:
  logging.info(
      "JAX %s: %d process(es), %d device(s) (%d local), backend %s",
      jax.__version__,
      jax.process_count(),
      parallel.num_devices,
      parallel.num_local_devices,
      jax.default_backend(),
  )
  logging.info(
      "Parallel mode %s; global batch %d = %d per device",
      parallel.mode,
      config.train.batch_size,
      config.train.batch_size // parallel.num_devices,
  )
  logging.info(
      "Data %s: %s; windows of %d sentences",
      config.data.source,
      ", ".join(f"{k} {len(v)} documents" for k, v in splits.items()),
      config.data.max_sentences,
  )
  logging.info(
      "Model: %s parameters, %s sentence encoder, %s document "
      "encoder, dtype %s",
      f"{num_params:,}",
      config.model.sentence_encoder,
      config.model.document_encoder,
      config.model.dtype,
  )
  loss = config.loss
  components = {k: v for k, v in loss.items() if k != "type"}
  logging.info(
      "Loss %s: %s",
      loss.type,
      ", ".join(f"{k}={v}" for k, v in components.items()),
  )


def config_as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The resolved config as plain JSON values (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=list))


# ----------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------


class SentenceInputs(NamedTuple):
  """What the model reads besides hashed tokens, set up from the config.

  Attributes:
    encoder: the loaded pretrained encoder (`encoders.Encoder`), or None.
    embeddings: frozen mode: the embedding cache holding every sentence.
    encoder_tokenizer: fine-tune mode: the encoder's wordpiece tokenizer.
  """

  encoder: Any = None
  embeddings: Any = None
  encoder_tokenizer: Any = None

  def checkpoint_meta(self) -> dict[str, Any] | None:
    """The encoder's identity and dimension, for the checkpoint metadata."""
    if self.encoder is None:
      return None
    return {**self.encoder.identity, "dim": self.encoder.dim}


def sentence_inputs(config, workdir, splits) -> SentenceInputs:
  """Loads the pretrained encoder the config asks for, if any.

  Frozen, it fills the embedding cache with every sentence of every split:
  each process encodes its share of the sentences the cache lacks, waits for
  the others at a barrier, then reads every shard.
  """
  if config.model.sentence_encoder != "pretrained":
    return SentenceInputs()
  encoder = embedding_cache.load_encoder(config.encoder)
  if config.encoder.fine_tune:
    return SentenceInputs(
        encoder, encoder_tokenizer=data.WordpieceTokenizer(encoder)
    )
  sentences = (
      sentence
      for documents in splits.values()
      for document in documents
      for sentence in document.sentences
  )
  cache, _ = embedding_cache.build(
      config.encoder,
      workdir,
      sentences,
      encoder=encoder,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      sync=lambda: multihost_utils.sync_global_devices("embedding cache"),
  )
  logging.info(
      "Embedding cache %s: %d sentences of %s",
      cache.folder,
      len(cache),
      encoder.identity["name"],
  )
  return SentenceInputs(encoder, embeddings=cache)


def _saved_config(checkpointer: checkpoints.Checkpointer) -> dict | None:
  """The config of the run a workdir's latest checkpoint belongs to."""
  latest = checkpointer.latest_step()
  if latest is None:
    return None
  return checkpointer.restore_meta(latest)["config"]


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | pathlib.Path
) -> dict[str, Any]:
  """Trains to `config.train.num_steps`, evaluating and checkpointing.

  Everything that can be wrong with the config, the devices, the workdir or
  the data is found before anything is compiled or written.

  Returns:
    The last dev metrics and the test metrics of the best checkpoint.
  """
  # -- Set up: config, devices, workdir ---------------------------------------
  config_lib.validate_config(config)
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise config_lib.ConfigError(f"workdir {str(workdir)!r} is not a folder")
  parallel = parallel_lib.DataParallel(config.parallel.mode)
  config_lib.check_device_split(
      config, parallel.num_devices, jax.process_count()
  )
  is_chief = jax.process_index() == 0
  resolved_config = config_as_json(config)
  with contextlib.ExitStack() as cleanup:
    checkpointer = checkpoints.Checkpointer(
        workdir,
        keep=config.train.keep_checkpoints,
        best_metric=config.train.best_metric,
        best_mode=config.train.best_mode,
    )
    cleanup.callback(checkpointer.close)
    saved_config = _saved_config(checkpointer)
    if saved_config is not None:
      config_lib.check_resumable(saved_config, resolved_config)

    # -- Input -----------------------------------------------------------------
    splits = data.load_splits(config.data)
    tokenizer = data.Tokenizer(**config.tokenizer)
    inputs = sentence_inputs(config, workdir, splits)
    train_iter = data.make_train_iterator(
        splits["train"],
        tokenizer,
        global_batch_size=config.train.batch_size,
        max_sentences=config.data.max_sentences,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        stride=config.data.train_stride or None,
        ignore_index=config.loss.ignore_index,
        embeddings=inputs.embeddings,
        encoder_tokenizer=inputs.encoder_tokenizer,
    )
    eval_batches = functools.partial(
        evaluation.eval_batches,
        config,
        tokenizer=tokenizer,
        embeddings=inputs.embeddings,
        encoder_tokenizer=inputs.encoder_tokenizer,
    )
    dev_batches = eval_batches(splits["dev"])
    # Written once the run is known to start: a run stopped by bad input
    # leaves an existing run's config.json as it was.
    if is_chief:
      (workdir / "config.json").write_text(
          json.dumps(resolved_config, indent=2, sort_keys=True)
      )

    # -- Model, loss and optimizer ---------------------------------------------
    model = models.model_from_config(config, inputs.encoder)
    fine_tune = model.encoder is not None
    embedding_dim = inputs.encoder.dim if inputs.encoder else 0
    loss_fn = losses.create_loss(config.loss)
    tx, schedule = make_optimizer(
        config.optim, config.train.num_steps, fine_tune=fine_tune
    )

    # -- Checkpoints: resume if the workdir has one ----------------------------
    threshold = None
    latest = checkpointer.latest_step()
    if latest is None:
      host_state = create_train_state(
          config,
          model,
          tx,
          embedding_dim,
          inputs.encoder.params if fine_tune else None,
      )
    else:
      host_state, meta = checkpointer.restore(
          latest,
          abstract_train_state(config, model, tx, embedding_dim),
          train_iter,
      )
      threshold = meta.get("threshold")
      logging.info(
          "Resuming from step %d of %s", latest, checkpointer.directory
      )
    start_step = int(host_state.step)
    log_startup(
        config, parallel, splits, models.count_params(host_state.params)
    )

    # -- Compiled steps --------------------------------------------------------
    p_train_step = parallel.map_step(
        functools.partial(
            train_step, model=model, loss_fn=loss_fn, schedule=schedule
        )
    )
    p_eval_step = parallel.map_rows(
        evaluation.make_eval_step(model, loss_fn, config.loss.ignore_index)
    )
    state = parallel.put_state(host_state)
    del host_state

    def evaluate(params, documents, batches, threshold=None):
      """(scores with the mean loss, per-document boundary probabilities)."""
      probs, loss = evaluation.predict_documents(
          parallel, p_eval_step, params, batches, documents
      )
      scores = evaluation.score_documents(
          probs,
          documents,
          threshold=threshold,
          threshold_metric=config.train.threshold_metric,
      )
      return {"loss": loss, **scores}, probs

    def save(step, eval_metrics):
      meta = {
          "step": step,
          "config": resolved_config,
          "tokenizer": tokenizer.to_dict(),
          "encoder": inputs.checkpoint_meta(),
          "threshold": threshold,
          "eval": eval_metrics,
      }
      ranking = None
      if (
          eval_metrics
          and eval_metrics.get(config.train.best_metric) is not None
      ):
        ranking = {
            config.train.best_metric: eval_metrics[config.train.best_metric]
        }
      checkpointer.save(
          step, parallel.get_state(state), meta, train_iter, metrics=ranking
      )

    writer = metric_writers.MetricWriter(workdir, enabled=is_chief)
    cleanup.callback(writer.close)
    progress = metric_writers.Progress(
        start_step=start_step,
        total_steps=config.train.num_steps,
        enabled=is_chief,
    )
    cleanup.callback(progress.close)
    preemption = PreemptionWatcher(checkpointer)
    cleanup.callback(preemption.close)
    # -- Train loop ------------------------------------------------------------
    pending, last_eval = [], {}
    num_steps = config.train.num_steps
    for step in range(start_step, num_steps):
      state, step_metrics = p_train_step(
          state, parallel.put_batch(next(train_iter))
      )
      pending.append(step_metrics)
      done = step + 1
      if done % config.train.log_every == 0 or done == num_steps:
        summary = interval_summary(
            [parallel.replicated_value(m) for m in pending]
        )
        summary["steps_per_second"] = progress.steps_per_second()
        pending = []
        writer.write(done, summary)
        progress.update(
            done,
            metric_writers.format_metrics(
                {k: summary[k] for k in ("train_loss", "grad_norm")}
            ),
        )
      elif len(pending) % MAX_QUEUED_STEPS == 0:
        jax.block_until_ready(step_metrics)

      evaluated = done % config.train.eval_every == 0 or done == num_steps
      if evaluated:
        dev, _ = evaluate(state.params, splits["dev"], dev_batches)
        threshold = dev["threshold"]
        last_eval = {f"val_{k}": v for k, v in dev.items()}
        writer.write(done, last_eval)
        logging.info(
            "step %d dev: %s", done, metric_writers.format_metrics(last_eval)
        )
      preempted = done < num_steps and preemption.should_stop(done)
      if evaluated or preempted or done % config.train.checkpoint_every == 0:
        save(done, last_eval if evaluated else None)
      if preempted:
        logging.warning("Preempted: saved step %d", done)
        return {"preempted": True, "step": done}
    progress.close()
    checkpointer.wait()

    # -- Final test evaluation with the best checkpoint ------------------------
    results = dict(last_eval)
    best = checkpointer.best_step()
    if splits["test"] and best is not None:
      best_state, meta = checkpointer.restore(best, parallel.get_state(state))
      test, test_probs = evaluate(
          parallel.put_state(best_state).params,
          splits["test"],
          eval_batches(splits["test"]),
          threshold=meta["threshold"],
      )
      test = {f"test_{k}": v for k, v in test.items()}
      results.update(test)
      writer.write(num_steps, test | {"best_step": best})
      if is_chief:
        bins = evaluation.calibration_bins(test_probs, splits["test"])
        (workdir / CALIBRATION_FILE).write_text(
            json.dumps({"best_step": best, **bins})
        )
      logging.info(
          "test (best step %d, threshold %.2f): %s",
          best,
          meta["threshold"],
          metric_writers.format_metrics(test),
      )
    return results
