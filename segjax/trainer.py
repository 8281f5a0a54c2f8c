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
import time
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

# The best checkpoint's test reliability-diagram bins, written at the end
# (`evaluation.calibration_bins` plus `best_step`).
CALIBRATION_FILE = "test_calibration.json"
# Metrics logged as their latest value rather than the interval mean.
LATEST_VALUE_METRICS = ("learning_rate", "skipped_steps", "skipped_in_a_row")


class TrainingDiverged(RuntimeError):
  """Training produced non-finite values; names the last good checkpoint."""


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
        *models.batch_inputs(batch),
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
  metrics["skipped_in_a_row"] = new_state.opt_state.notfinite_count
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


def divergence_error(
    checkpointer: checkpoints.Checkpointer, what: str, bad_from: int
) -> TrainingDiverged:
  """The error that stops a diverged run, naming the last good checkpoint.

  The checkpoints from step `bad_from` on hold the parameters that diverged
  (saved before it showed): they are set aside, so that neither a rerun nor
  `evaluate` restores them.
  """
  checkpointer.wait()
  steps = checkpointer.all_steps()
  diverged = [s for s in steps if s >= bad_from]
  good = [s for s in steps if s < bad_from]
  checkpointer.set_aside(diverged, "diverged")
  return TrainingDiverged(
      f"training diverged: {what}; "
      + (
          f"the last good checkpoint is step {good[-1]} in "
          f"{checkpointer.directory}"
          if good
          else "no checkpoint was saved before it"
      )
      + (f" (set aside: steps {diverged})" if diverged else "")
      + "; lower optim.learning_rate or optim.grad_clip_norm, in a new"
      " --workdir"
  )


def out_of_memory_line(error: Exception, config) -> str | None:
  """One line for a run that ran out of device memory; None for other errors.

  XLA raises it as a runtime error with status RESOURCE_EXHAUSTED, mid-run
  or while compiling a step; the line names the keys that size a step's
  memory, with their values, since those are what a user changes.
  """
  message = str(error)
  if not (
      isinstance(error, jax.errors.JaxRuntimeError)
      and message.startswith("RESOURCE_EXHAUSTED")
  ):
    return None
  keys = ["train.batch_size", "train.eval_batch_size", "data.max_sentences"]
  if config.model.sentence_encoder == "hashed":
    keys.append("tokenizer.max_tokens")
  elif config.encoder.fine_tune:
    keys.append("encoder.max_tokens")  # 0 = the model's: often 256 or 512.
  sizes = ", ".join(f"{key}={config[key]}" for key in keys)
  return (
      f"out of device memory ({message.splitlines()[0]}); lower {sizes};"
      " the checkpoints written so far are kept"
  )


class SkipWatch:
  """Reports the updates `apply_if_finite` skipped; stops a run that diverged.

  Each step's counters are read one step late, while the next step runs, so
  watching stalls nothing (and no more than two steps are ever queued:
  queued collectives on forced CPU devices can deadlock, see ECOSYSTEM).
  `settle` reads the latest step's, before a save or an evaluation. Each
  skipped step is logged when it is read; `max_in_a_row` skipped in a row
  stop the run with `TrainingDiverged`.

  Skipped updates leave the parameters as they were, so a state saved
  during a run of them (at the end, or when preempted) is a state from
  before it: kept if the run recovers, set aside (`bad_from`) if it diverges.
  """

  def __init__(self, parallel, checkpointer, max_in_a_row: int):
    self._parallel = parallel
    self._checkpointer = checkpointer
    self._max = max_in_a_row
    self._unread = None  # (step, metrics) of the latest step, not read yet
    self.in_a_row = 0  # updates skipped in a row up to the last step read

  def bad_from(self, step: int) -> int:
    """The first step whose parameters are suspect if `step`'s state is bad.

    Within a run of skipped updates that is the step before the run: its
    parameters gave the first non-finite gradients and are still in use.
    """
    return step - self.in_a_row if self.in_a_row else step

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    """Takes a dispatched step's metrics; reads the previous step's."""
    previous, self._unread = self._unread, (step, metrics)
    if previous is not None:
      self._read(*previous)

  def settle(self) -> None:
    """Reads the latest step's counters (waits for the step)."""
    if self._unread is not None:
      self._read(*self._unread)
      self._unread = None

  def _read(self, step: int, metrics: dict[str, jax.Array]) -> None:
    keys = ("skipped_in_a_row", "train_loss", "grad_norm", "learning_rate")
    values = self._parallel.replicated_value({k: metrics[k] for k in keys})
    self.in_a_row = int(values["skipped_in_a_row"])
    if not self.in_a_row:
      return
    logging.warning(
        "step %d: update skipped, non-finite gradients (train_loss=%s "
        "grad_norm=%s); %d in a row, the run stops at "
        "train.max_consecutive_skipped=%d",
        step,
        values["train_loss"],
        values["grad_norm"],
        self.in_a_row,
        self._max,
    )
    if self.in_a_row >= self._max:
      first = step - self.in_a_row + 1
      raise divergence_error(
          self._checkpointer,
          f"steps {first}-{step} all had non-finite gradients (train_loss="
          f"{values['train_loss']}, learning_rate="
          f"{float(values['learning_rate']):.3g}; "
          f"train.max_consecutive_skipped={self._max})",
          bad_from=self.bad_from(step),
      )


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


def open_corpora(config, tokenizer, workdir) -> dict[str, data.Corpus]:
  """`data.open_splits`, the job's processes sharing any shard building."""
  return data.open_splits(
      config.data,
      tokenizer,
      workdir,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


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
      sentence for corpus in splits.values() for sentence in corpus.sentences()
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
  """The config of the run a workdir's newest readable checkpoint belongs to."""
  steps = checkpointer.all_steps()
  if not steps:
    return None
  _, meta = checkpointer.first_readable(steps[::-1], checkpointer.restore_meta)
  return meta["config"]


# JAX keeps every executable compiled in a process, and each holds memory
# mappings (about 9 on CPU); Linux allows a process 65530 (vm.max_map_count)
# and XLA fails to compile past that. Dozens of runs in one process (a sweep
# of `tools/compare_losses.py`, the tests) get there.
MAX_MEMORY_MAPS = 20_000


def memory_maps() -> int:
  """This process's memory mappings (Linux; 0 where there is no such count)."""
  try:
    with open("/proc/self/maps") as f:
      return sum(1 for _ in f)
  except OSError:
    return 0


def free_compiled_code_if_many() -> None:
  """Frees JAX's compiled executables once the process maps too many."""
  if memory_maps() > MAX_MEMORY_MAPS:
    jax.clear_caches()


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
  began = time.time()
  free_compiled_code_if_many()  # Room to compile, after earlier runs here.
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
    tokenizer = data.Tokenizer(**config.tokenizer)
    splits = open_corpora(config, tokenizer, workdir)
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
    dev_subset = evaluation.evaluation_subset(
        splits["dev"], config.train.eval_max_documents
    )
    dev_batches = eval_batches(dev_subset)
    # Written once the run is known to start: a run stopped by bad input
    # leaves an existing run's config.json as it was.
    if is_chief:
      (workdir / config_lib.RUN_CONFIG_FILE).write_text(
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
      abstract_state = abstract_train_state(config, model, tx, embedding_dim)
      latest, (host_state, meta) = checkpointer.first_readable(
          checkpointer.all_steps()[::-1],
          lambda step: checkpointer.restore(step, abstract_state, train_iter),
      )
      threshold = checkpointer.threshold(latest, meta)
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

    share_gold = {}

    def evaluate(params, corpus, batches, threshold=None):
      """(scores with the mean loss, this process's probabilities and gold).

      Each process stitches and scores its share of the documents; the
      scores are those of all documents, the same on every process.
      """
      share = evaluation.process_share(len(corpus))
      probs, loss = evaluation.predict_documents(
          parallel,
          p_eval_step,
          params,
          batches,
          data.document_lengths(corpus),
          indices=share,
      )
      # The same corpora are scored at every evaluation: read their gold once.
      if id(corpus) not in share_gold:
        share_gold[id(corpus)] = corpus.subset(share).gold_labels()
      gold = share_gold[id(corpus)]
      scores = evaluation.score_documents(
          probs,
          gold,
          threshold=threshold,
          threshold_metric=config.train.threshold_metric,
          across_processes=True,
      )
      return {"loss": loss, **scores}, probs, gold

    def save(step):
      meta = {
          "step": step,
          "config": resolved_config,
          "tokenizer": tokenizer.to_dict(),
          "encoder": inputs.checkpoint_meta(),
          "threshold": threshold,
      }
      try:
        checkpointer.save(step, parallel.get_state(state), meta, train_iter)
      except checkpoints.NonFiniteState as e:
        raise divergence_error(
            checkpointer, str(e), bad_from=skips.bad_from(step)
        ) from None

    def evaluate_dev(step):
      """Scores the state on dev; records the metrics of the saved `step`."""
      nonlocal threshold, last_eval
      dev, probs, _ = evaluate(state.params, dev_subset, dev_batches)
      bad = evaluation.non_finite_documents(probs, across_processes=True)
      if bad:
        raise divergence_error(
            checkpointer,
            f"at step {step} the boundary probabilities of {bad} of "
            f"{len(dev_subset)} dev documents are not finite",
            bad_from=skips.bad_from(step),
        )
      threshold = dev["threshold"]
      last_eval = {f"val_{k}": v for k, v in dev.items()}
      checkpointer.record_eval(step, last_eval)
      writer.write(step, last_eval)
      logging.info(
          "step %d dev: %s", step, metric_writers.format_metrics(last_eval)
      )

    writer = metric_writers.MetricWriter(
        workdir, enabled=is_chief, resume_from=start_step
    )
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
    # A step is saved before it is evaluated, so a failing evaluation loses
    # no training; a resume evaluates a saved step that was not.
    pending, last_eval = [], {}
    num_steps = config.train.num_steps
    skips = SkipWatch(
        parallel, checkpointer, config.train.max_consecutive_skipped
    )
    is_eval_step = lambda n: n % config.train.eval_every == 0 or n == num_steps
    if (
        start_step
        and is_eval_step(start_step)
        and checkpointer.eval_metrics(start_step) is None
    ):
      logging.info("Evaluating step %d, saved but not evaluated", start_step)
      evaluate_dev(start_step)
    for step in range(start_step, num_steps):
      state, step_metrics = p_train_step(
          state, parallel.put_batch(next(train_iter))
      )
      pending.append(step_metrics)
      done = step + 1
      if step == start_step:
        jax.block_until_ready(step_metrics)
        logging.info(
            "First step done %.1f s after start-up began", time.time() - began
        )
      skips.add(done, step_metrics)
      if done % config.train.log_every == 0 or done == num_steps:
        summary = interval_summary(
            [parallel.replicated_value(m) for m in pending]
        )
        summary["steps_per_second"] = progress.steps_per_second(done)
        pending = []
        writer.write(done, summary)
        progress.update(
            done,
            metric_writers.format_metrics(
                {k: summary[k] for k in ("train_loss", "grad_norm")}
            ),
        )

      evaluated = is_eval_step(done)
      preempted = done < num_steps and preemption.should_stop(done)
      if evaluated or preempted or done % config.train.checkpoint_every == 0:
        skips.settle()
        if skips.in_a_row and not (preempted or done == num_steps):
          # Its parameters are those of the last checkpoint before the
          # skipped updates, which retention must not drop for it.
          logging.warning(
              "step %d not saved%s: its last %d updates were skipped",
              done,
              " or evaluated" if evaluated else "",
              skips.in_a_row,
          )
        else:
          save(done)
          if evaluated:
            evaluate_dev(done)
      if preempted:
        logging.warning("Preempted: saved step %d", done)
        return {"preempted": True, "step": done}
    progress.close()
    checkpointer.wait()

    # -- Final evaluations with the best checkpoint ----------------------------
    # After periodic evaluations on a dev subset, the best checkpoint is scored
    # on all of dev: that tunes the threshold of test (and of `evaluate`).
    results = dict(last_eval)
    full_dev = len(dev_subset) < len(splits["dev"])
    if (splits["test"] or full_dev) and checkpointer.all_steps():
      host_state = parallel.get_state(state)
      best, (best_state, meta) = checkpointer.first_readable(
          checkpointer.ranked_steps(),
          lambda step: checkpointer.restore(step, host_state),
      )
      best_params = parallel.put_state(best_state).params

      def evaluate_best(split, threshold=None):
        corpus = splits[split]
        scores, probs, gold = evaluate(
            best_params, corpus, eval_batches(corpus), threshold
        )
        bad = evaluation.non_finite_documents(probs, across_processes=True)
        if bad:
          raise TrainingDiverged(
              f"the best checkpoint, step {best}, gives non-finite boundary "
              f"probabilities for {bad} of {len(corpus)} {split} documents"
          )
        return scores, probs, gold

      if full_dev:
        final, _, _ = evaluate_best("dev")
        final = {f"final_val_{k}": v for k, v in final.items()}
        checkpointer.record_eval(
            best, (checkpointer.eval_metrics(best) or {}) | final
        )
        results.update(final)
        writer.write(num_steps, final | {"best_step": best})
        logging.info(
            "all %d dev documents (best step %d): %s",
            len(splits["dev"]),
            best,
            metric_writers.format_metrics(final),
        )
      best_threshold = checkpointer.threshold(best, meta) or 0.5
      if splits["test"]:
        test, test_probs, test_gold = evaluate_best("test", best_threshold)
        test = {f"test_{k}": v for k, v in test.items()}
        results.update(test)
        writer.write(num_steps, test | {"best_step": best})
        bins = evaluation.calibration_bins(
            test_probs, test_gold, across_processes=True
        )
        if is_chief:
          (workdir / CALIBRATION_FILE).write_text(
              json.dumps({"best_step": best, **bins})
          )
        logging.info(
            "test (best step %d, threshold %.2f): %s",
            best,
            best_threshold,
            metric_writers.format_metrics(test),
        )
    return results
