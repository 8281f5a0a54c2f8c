"""A trained run, restored for inference: model, weights, tokenizer, threshold.

Used by `segjax.evaluate` and `segjax.segment`.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, NamedTuple

import jax
import ml_collections

from segjax import checkpoints
from segjax import config_lib
from segjax import data
from segjax import embedding_cache
from segjax import encoders
from segjax import evaluation
from segjax import losses
from segjax import models
from segjax import parallel as parallel_lib


class NonFiniteOutput(ValueError):
  """A model whose boundary probabilities are NaN or inf (diverged weights)."""


@dataclasses.dataclass
class TrainedModel:
  """What inference needs from a run: model, weights, tokenizer, threshold."""

  config: ml_collections.ConfigDict
  step: int
  model: models.SegmentationModel
  params: Any
  tokenizer: data.Tokenizer
  threshold: float
  parallel: parallel_lib.DataParallel
  eval_fn: Any
  workdir: pathlib.Path
  encoder: Any = None  # the pretrained sentence encoder, if the run has one

  def sentence_embeddings(self, documents):
    """The run's embedding cache, holding every sentence of `documents`."""
    if self.encoder is None or self.model.encoder is not None:
      return None
    sentences = (s for document in documents for s in document.sentences)
    cache, _ = embedding_cache.build(
        self.config.encoder, self.workdir, sentences, encoder=self.encoder
    )
    return cache

  def predict(self, documents, global_batch_size=None):
    """(per-document boundary probabilities, mean loss).

    Raises:
      NonFiniteOutput: some probability is NaN or inf.
    """
    batches = evaluation.eval_batches(
        self.config,
        documents,
        self.tokenizer,
        embeddings=self.sentence_embeddings(documents),
        encoder_tokenizer=(
            data.WordpieceTokenizer(self.encoder)
            if self.model.encoder is not None
            else None
        ),
        global_batch_size=global_batch_size,
    )
    probs, loss = evaluation.predict_documents(
        self.parallel,
        self.eval_fn,
        self.params,
        batches,
        data.document_lengths(documents),
    )
    bad = evaluation.non_finite_documents(probs)
    if bad:
      raise NonFiniteOutput(
          f"the model of step {self.step} in {self.workdir} gives NaN or inf"
          f" boundary probabilities for {bad} of {len(probs)} documents: its"
          " weights diverged; choose another step with --checkpoint"
      )
    return probs, loss


def _candidate_steps(
    checkpointer: checkpoints.Checkpointer, checkpoint: str
) -> list[int]:
  """The steps `checkpoint` (best, latest or a step) may use, in order."""
  steps = checkpointer.all_steps()
  if not steps:
    raise FileNotFoundError(f"{checkpointer.directory} holds no checkpoint")
  if checkpoint == "best":
    return checkpointer.ranked_steps()
  if checkpoint == "latest":
    return steps[::-1]
  if checkpoint.isdigit() and int(checkpoint) in steps:
    return [int(checkpoint)]
  raise FileNotFoundError(
      f"no checkpoint {checkpoint!r} in {checkpointer.directory}; steps: "
      f"{steps}"
  )


class _Restored(NamedTuple):
  meta: dict[str, Any]
  config: ml_collections.ConfigDict
  tokenizer: data.Tokenizer
  encoder: Any
  model: models.SegmentationModel
  params: Any


def _restore_step(checkpointer: checkpoints.Checkpointer, step: int):
  """A step's config, tokenizer, model and parameters (no optimizer state).

  Raises:
    checkpoints.UnreadableCheckpoint: a damaged or incomplete checkpoint.
  """
  meta = checkpointer.restore_meta(step)
  config = ml_collections.ConfigDict(meta["config"])
  tokenizer = data.Tokenizer.from_dict(meta["tokenizer"])
  encoder = None
  if config.model.sentence_encoder == "pretrained":
    encoder = _same_encoder(config.encoder, meta["encoder"])
  try:
    model = models.model_from_config(config, encoder)
  except config_lib.ConfigError as e:
    workdir = checkpointer.directory.parent
    raise config_lib.ConfigError(f"{workdir}: {e}") from None
  init = functools.partial(
      models.init_params,
      model,
      batch_size=1,
      max_sentences=config.data.max_sentences,
      max_tokens=tokenizer.max_tokens,
      embedding_dim=encoder.dim if encoder else 0,
  )
  params = checkpointer.restore_params(
      step, jax.eval_shape(init, jax.random.key(0))
  )
  return _Restored(meta, config, tokenizer, encoder, model, params)


def _readable(read, step: int) -> bool:
  try:
    read(step)
  except checkpoints.UnreadableCheckpoint:
    return False
  return True


def restore_trained_model(
    workdir: str | pathlib.Path, checkpoint: str = "best"
) -> TrainedModel:
  """Loads a run's checkpoint with the config and tokenizer it was trained with.

  Only the parameters are restored (no optimizer state), and the run's
  `parallel.mode` is used. An unreadable best or latest checkpoint is named
  in a warning and the next one is used; an unreadable explicit step stops.

  Raises:
    FileNotFoundError: the workdir has no (such) checkpoint.
    checkpoints.CheckpointError: the step asked for (or every step) is
      unreadable; names the readable ones.
  """
  workdir = pathlib.Path(workdir)
  saved = config_lib.saved_run_config(workdir)
  if not (workdir / "checkpoints").is_dir() or saved is None:
    raise FileNotFoundError(
        f"{workdir} is not a training run (no checkpoints/ or "
        f"{config_lib.RUN_CONFIG_FILE})"
    )
  run = saved["train"]
  checkpointer = checkpoints.Checkpointer(
      workdir, best_metric=run["best_metric"], best_mode=run["best_mode"]
  )
  try:
    steps = _candidate_steps(checkpointer, checkpoint)
    read = functools.partial(_restore_step, checkpointer)
    if checkpoint.isdigit():
      step = steps[0]
      try:
        restored = read(step)
      except checkpoints.UnreadableCheckpoint as e:
        readable = [
            s
            for s in checkpointer.all_steps()
            if s != step and _readable(read, s)
        ]
        raise checkpoints.CheckpointError(
            f"{e}; readable steps: {', '.join(map(str, readable)) or 'none'}"
        ) from None
    else:
      step, restored = checkpointer.first_readable(steps, read)
    threshold = checkpointer.threshold(step, restored.meta)
  finally:
    checkpointer.close()
  _, config, tokenizer, encoder, model, params = restored
  parallel = parallel_lib.DataParallel(config.parallel.mode)
  eval_fn = parallel.map_rows(
      evaluation.make_eval_step(
          model,
          # The run's own loss: its range warnings came when it trained.
          losses.create_loss(config.loss, warn=False),
          config.loss.ignore_index,
      )
  )
  return TrainedModel(
      config=config,
      step=step,
      model=model,
      params=parallel.put_state(params),
      tokenizer=tokenizer,
      threshold=threshold or 0.5,
      parallel=parallel,
      eval_fn=eval_fn,
      workdir=workdir,
      encoder=encoder,
  )


def _same_encoder(encoder_config, trained: dict[str, Any]):
  """The run's pretrained encoder, refused if it is not the one it trained."""
  encoder = embedding_cache.load_encoder(encoder_config)
  now = {**encoder.identity, "dim": encoder.dim}
  changed = [k for k in sorted(trained) if trained[k] != now.get(k)]
  if changed:
    raise encoders.LoadError(
        f"the encoder {encoder_config.name!r} is not the one this run "
        "trained with: "
        + ", ".join(f"{k} {trained[k]!r} != {now.get(k)!r}" for k in changed)
    )
  return encoder
