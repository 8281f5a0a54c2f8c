"""A trained run, restored for inference: model, weights, tokenizer, threshold.

Used by `segjax.evaluate` and `segjax.segment`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections

from segjax import checkpoints
from segjax import config_lib
from segjax import data
from segjax import evaluation
from segjax import losses
from segjax import models
from segjax import parallel as parallel_lib
from segjax import trainer


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

  def predict(self, documents, global_batch_size=None):
    """(per-document boundary probabilities, mean loss)."""
    batches = evaluation.eval_batches(
        self.config,
        documents,
        self.tokenizer,
        global_batch_size=global_batch_size,
    )
    return evaluation.predict_documents(
        self.parallel, self.eval_fn, self.params, batches, documents
    )


def restore_trained_model(
    workdir: str | pathlib.Path, checkpoint: str = "best"
) -> TrainedModel:
  """Loads a run's checkpoint with the config and tokenizer it was trained with.

  Raises:
    FileNotFoundError: the workdir has no (such) checkpoint.
  """
  if not (pathlib.Path(workdir) / "checkpoints").is_dir():
    raise FileNotFoundError(f"{workdir} has no checkpoints/ folder")
  checkpointer = checkpoints.Checkpointer(workdir, read_only=True)
  steps = checkpointer.all_steps()
  if not steps:
    raise FileNotFoundError(f"{checkpointer.directory} holds no checkpoint")
  if checkpoint == "best":
    step = checkpointer.best_step()
  elif checkpoint == "latest":
    step = checkpointer.latest_step()
  elif checkpoint.isdigit() and int(checkpoint) in steps:
    step = int(checkpoint)
  else:
    raise FileNotFoundError(
        f"no checkpoint {checkpoint!r} in "
        f"{checkpointer.directory}; steps: {steps}"
    )
  meta = checkpointer.restore_meta(step)
  config = config_lib.config_from_saved(meta["config"])
  tokenizer = data.Tokenizer.from_dict(meta["tokenizer"])
  model = models.model_from_config(
      config.model,
      num_buckets=tokenizer.num_buckets,
      num_classes=config.loss.num_classes,
      max_sentences=config.data.max_sentences,
  )
  tx, _ = trainer.make_optimizer(config.optim, config.train.num_steps)
  state, _ = checkpointer.restore(
      step, trainer.abstract_train_state(config, model, tx)
  )
  checkpointer.close()
  parallel = parallel_lib.DataParallel("pmap")
  eval_fn = parallel.map_rows(
      evaluation.make_eval_step(model, losses.create_loss(config.loss))
  )
  return TrainedModel(
      config=config,
      step=step,
      model=model,
      params=parallel.put_state(state.params),
      tokenizer=tokenizer,
      threshold=meta["threshold"] or 0.5,
      parallel=parallel,
      eval_fn=eval_fn,
  )
