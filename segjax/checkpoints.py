"""Checkpoints in `<workdir>/checkpoints`: train state, metadata, data position.

Each step directory holds three items written by orbax's `CheckpointManager`:
`state` (parameters, optimizer state, step, dropout key), `meta` (JSON: the
resolved config, tokenizer settings, tuned decision threshold, eval metrics)
and `data` (the grain iterator position, one file per process), so a resumed
run continues with exactly the batches it would have seen.

Retention keeps the latest `keep` steps and the best step by a metric. (A
plain `best_fn` + `max_to_keep` can delete the newest step and make a resume
go backwards; two explicit preservation policies cannot.)
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

ITEMS = ("state", "meta", "data")


class Checkpointer:
  """Saves and restores train state, metadata and the data iterator."""

  def __init__(
      self,
      workdir: str | pathlib.Path,
      *,
      best_metric: str,
      best_mode: str,
      keep: int | None = None,
  ):
    """Opens `<workdir>/checkpoints`; read-only (for inference) without `keep`.

    Args:
      workdir: the run's folder.
      best_metric: the eval metric that ranks steps (`train.best_metric`).
      best_mode: "min" or "max" (`train.best_mode`).
      keep: latest steps kept besides the best (`train.keep_checkpoints`).
    """
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.best_metric = best_metric
    self.best_mode = best_mode
    read_only = keep is None
    policy = checkpoint_managers.AnyPreservationPolicy(
        [
            checkpoint_managers.LatestN(n=keep or 1),
            checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics[best_metric],
                reverse=best_mode == "min",
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, create=not read_only, read_only=read_only
    )
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=ITEMS
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(
      self,
      step: int,
      host_state: Any,
      meta: dict[str, Any],
      data_iterator: Any,
      metrics: dict[str, float] | None = None,
  ) -> None:
    """Starts an asynchronous save; `metrics` rank the step for `best`."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(host_state),
        meta=ocp.args.JsonSave(meta),
        data=grain.checkpoint.CheckpointSave(data_iterator),
    )
    self.manager.save(step, args=args, metrics=metrics, force=True)

  def restore(
      self, step: int, abstract_state: Any, data_iterator: Any | None = None
  ) -> tuple[Any, dict[str, Any]]:
    """(state, meta) of `step`; also moves `data_iterator` to its position."""
    items = {
        "state": ocp.args.StandardRestore(abstract_state),
        "meta": ocp.args.JsonRestore(),
    }
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored["meta"]

  def restore_params(self, step: int, abstract_params: Any) -> Any:
    """Only the model parameters of `step` (for inference: no optimizer)."""
    args = ocp.args.PyTreeRestore(
        item={"params": abstract_params},
        restore_args=ocp.checkpoint_utils.construct_restore_args(
            {"params": abstract_params}
        ),
        partial_restore=True,
    )
    restored = self.manager.restore(step, args=ocp.args.Composite(state=args))
    return restored["state"]["params"]

  def restore_meta(self, step: int) -> dict[str, Any]:
    restored = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    )
    return restored["meta"]

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric`, or the latest if none has one."""
    scored = []
    for step in self.all_steps():
      value = (self.restore_meta(step).get("eval") or {}).get(self.best_metric)
      if value is not None:
        scored.append((value if self.best_mode == "min" else -value, step))
    return min(scored)[1] if scored else self.latest_step()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
