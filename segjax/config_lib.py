"""Shared pieces of the config files in `configs/`: base sections and variants.

A config file defines its own `loss` section and its variants; everything
else (seed, data, model, optim, train, parallel) starts from `base_config()`.
The `arg` of `get_config(arg)` is a comma-separated list of variant names and
switches, e.g. `configs/boundary.py:aggressive,smoke`.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

# A tiny, fast run for tests and a first look: `configs/boundary.py:smoke`.
SMOKE_OVERRIDES = {
    "data.max_documents": 64,
    "model.embed_dim": 16,
    "model.hidden_dim": 32,
    "model.mlp_dim": 64,
    "model.num_layers": 1,
    "train.batch_size": 8,
    "train.num_steps": 20,
    "train.log_every": 5,
    "train.eval_every": 10,
    "train.checkpoint_every": 10,
}
SWITCHES = {"smoke": SMOKE_OVERRIDES}


def base_config() -> ml_collections.ConfigDict:
  """Every section but `loss`, with the defaults of the embedded pydoc run."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.source = "pydoc"  # pydoc | choi | wiki727k | jsonl | auto
  config.data.path = ""  # folder with train/ dev/ test/ (not for pydoc)
  config.data.dev_fraction = 0.1  # held out of train when there is no dev/
  config.data.max_documents = 0  # per split; 0 = all
  config.data.num_buckets = 2**15  # hashed token vocabulary
  config.data.max_tokens = 32  # tokens per sentence
  config.data.lowercase = True
  config.data.max_sentences = 64  # sentences per window
  config.data.train_stride = 0  # 0 = max_sentences (no overlap)
  config.data.eval_stride = 0  # 0 = max_sentences // 2

  config.model = ml_collections.ConfigDict()
  config.model.sentence_encoder = "pool"  # pool | transformer
  config.model.sentence_layers = 1
  config.model.document_encoder = "transformer"  # transformer | bilstm
  config.model.embed_dim = 32
  config.model.hidden_dim = 64
  config.model.num_layers = 2
  config.model.num_heads = 4
  config.model.mlp_dim = 128
  config.model.dropout_rate = 0.1
  # Block similarities of up to 5 sentences either side of each gap: the
  # topic-independent signal that carries over to unseen topics. 0 disables.
  config.model.cohesion_window = 5
  config.model.dtype = "float32"  # bfloat16 on TPU

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 50
  # Cosine decay length; 0 = train.num_steps. Fix it to extend a run later
  # (raise train.num_steps and rerun) without changing the schedule so far.
  config.optim.decay_steps = 0
  config.optim.weight_decay = 0.01
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.grad_clip_norm = 1.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32  # global, split over all devices
  config.train.eval_batch_size = 32
  config.train.num_steps = 600
  config.train.log_every = 25
  config.train.eval_every = 100
  config.train.checkpoint_every = 100
  config.train.keep_checkpoints = 2
  config.train.best_metric = "val_window_diff"
  config.train.best_mode = "min"  # min | max
  # The decision threshold is tuned on dev for this metric at every eval.
  config.train.threshold_metric = "pk"

  config.parallel = ml_collections.ConfigDict()
  config.parallel.mode = "pmap"  # pmap | shard_map
  return config


def apply_arg(
    config: ml_collections.ConfigDict,
    arg: str | None,
    variants: Mapping[str, Mapping[str, Any]],
    *,
    config_file: str,
) -> ml_collections.ConfigDict:
  """Applies the comma-separated variants and switches named in `arg`.

  Raises:
    ValueError: an unknown name, listing the valid ones.
  """
  for name in filter(None, (arg or "").split(",")):
    overrides = variants.get(name, SWITCHES.get(name))
    if overrides is None:
      valid = sorted(variants) + sorted(SWITCHES)
      raise ValueError(
          f"{config_file}: unknown variant {name!r}; valid variants: "
          f"{', '.join(valid)}"
      )
    for dotted_key, value in overrides.items():
      section, key = dotted_key.rsplit(".", 1)
      config[section][key] = value
  return config


def _load_module(path: str):
  file = pathlib.Path(path)
  if not file.is_file():
    raise FileNotFoundError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(file.stem, file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` the way `--config=` does on the command line."""
  path, _, arg = spec.partition(":")
  return _load_module(path).get_config(arg or None)


def config_variants(path: str) -> list[str]:
  """The variant names a config file defines (its `VARIANTS` dict)."""
  return sorted(getattr(_load_module(path), "VARIANTS", {}))


# ----------------------------------------------------------------------------
# Validation of a resolved config, before anything runs.
# ----------------------------------------------------------------------------

DATA_SOURCES = ("pydoc", "choi", "wiki727k", "jsonl", "auto")
EVAL_METRICS = (
    "val_loss",
    "val_pk",
    "val_window_diff",
    "val_boundary_f1",
    "val_boundary_f1_tol1",
    "val_complete_segments",
    "val_macro_f1",
    "val_ece",
)


class ConfigError(ValueError):
  """An invalid config value; the message names the key and the value."""


def _check(condition: bool, key: str, value: Any, rule: str) -> None:
  if not condition:
    raise ConfigError(f"{key}={value!r} is invalid: {rule}")


def _positive_int(config, key: str, minimum: int = 1) -> None:
  section, name = key.split(".")
  value = config[section][name]
  _check(
      isinstance(value, int) and value >= minimum,
      key,
      value,
      f"must be an integer >= {minimum}",
  )


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every section; raises ConfigError naming the first bad key."""
  # Imported here: config files import this module and must stay light.
  from segjax import losses  # pylint: disable=g-import-not-at-top
  from segjax import metrics  # pylint: disable=g-import-not-at-top
  from segjax import models  # pylint: disable=g-import-not-at-top

  for section in ("data", "model", "loss", "optim", "train", "parallel"):
    if section not in config:
      raise ConfigError(f"config has no {section!r} section")
  losses.validate_loss_config(config.loss)

  d = config.data
  _check(
      d.source in DATA_SOURCES,
      "data.source",
      d.source,
      f"valid sources: {', '.join(DATA_SOURCES)}",
  )
  if d.source != "pydoc":
    _check(
        bool(d.path) and pathlib.Path(d.path).exists(),
        "data.path",
        d.path,
        f"data.source={d.source!r} needs an existing folder",
    )
  _check(
      0.0 < d.dev_fraction < 1.0,
      "data.dev_fraction",
      d.dev_fraction,
      "must be in (0, 1)",
  )
  _positive_int(config, "data.max_documents", minimum=0)
  _positive_int(config, "data.num_buckets", minimum=2)
  _positive_int(config, "data.max_tokens")
  _positive_int(config, "data.max_sentences", minimum=2)
  _positive_int(config, "data.train_stride", minimum=0)
  _positive_int(config, "data.eval_stride", minimum=0)

  try:
    models.model_from_config(
        config.model,
        num_buckets=d.num_buckets,
        num_classes=config.loss.num_classes,
        max_sentences=d.max_sentences,
    )
  except ValueError as e:
    raise ConfigError(str(e)) from e
  for key in ("embed_dim", "hidden_dim", "num_layers", "num_heads", "mlp_dim"):
    _positive_int(config, f"model.{key}")
  _check(
      config.model.hidden_dim % config.model.num_heads == 0,
      "model.num_heads",
      config.model.num_heads,
      f"must divide model.hidden_dim={config.model.hidden_dim}",
  )

  o = config.optim
  _check(
      o.learning_rate > 0, "optim.learning_rate", o.learning_rate, "must be > 0"
  )
  _check(
      o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0"
  )
  _check(
      o.grad_clip_norm > 0,
      "optim.grad_clip_norm",
      o.grad_clip_norm,
      "must be > 0",
  )
  _check(
      0 <= o.b1 < 1 and 0 <= o.b2 < 1,
      "optim.b1/b2",
      (o.b1, o.b2),
      "must be in [0, 1)",
  )
  _positive_int(config, "optim.warmup_steps", minimum=0)
  _positive_int(config, "optim.decay_steps", minimum=0)

  t = config.train
  for key in (
      "batch_size",
      "eval_batch_size",
      "num_steps",
      "log_every",
      "eval_every",
      "checkpoint_every",
      "keep_checkpoints",
  ):
    _positive_int(config, f"train.{key}")
  _check(
      t.best_metric in EVAL_METRICS,
      "train.best_metric",
      t.best_metric,
      f"valid metrics: {', '.join(EVAL_METRICS)}",
  )
  _check(
      t.best_mode in ("min", "max"),
      "train.best_mode",
      t.best_mode,
      "must be 'min' or 'max'",
  )
  _check(
      t.threshold_metric in metrics.THRESHOLD_METRICS,
      "train.threshold_metric",
      t.threshold_metric,
      f"valid metrics: {', '.join(sorted(metrics.THRESHOLD_METRICS))}",
  )
  _check(
      config.parallel.mode in ("pmap", "shard_map"),
      "parallel.mode",
      config.parallel.mode,
      "valid modes: pmap, shard_map",
  )


def config_from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run's saved config (e.g. checkpoint metadata) over today's defaults.

  Keys added to `base_config` after the run was saved take their defaults,
  so older checkpoints stay usable.
  """
  config = base_config()
  for section, values in saved.items():
    if isinstance(values, Mapping) and section in config:
      for key, value in values.items():
        config[section][key] = value
    else:
      config[section] = values
  return config
