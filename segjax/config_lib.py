"""Config files, their command-line overrides, validation and resume checks.

A config file (`configs/*.py`) defines `get_config(arg=None)`; `arg` is a
comma-separated list of the file's `VARIANTS`, e.g.
`configs/boundary.py:aggressive,smoke`. Overrides are ml_collections' own
`--config.section.key=value`, on the command line and in tools and tests
alike (`load_config(spec, overrides)`). Every check raises `ConfigError`, whose
message is one line naming `section.key`, the value and the rule.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import flags
import ml_collections
from ml_collections import config_flags

# Keys that may differ between a workdir's saved config and the config that
# resumes it: they change how long and how often, never what is computed.
RESUMABLE_KEYS = (
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.eval_batch_size",
    "train.max_consecutive_skipped",
    "train.eval_max_documents",
    "parallel.mode",
    "data.cache_dir",
)


# A run's resolved config, written into its workdir by the trainer.
RUN_CONFIG_FILE = "config.json"


def saved_run_config(workdir: str | pathlib.Path) -> dict[str, Any] | None:
  """The resolved config a workdir's run was started with, or None."""
  path = pathlib.Path(workdir) / RUN_CONFIG_FILE
  return json.loads(path.read_text()) if path.is_file() else None


class ConfigError(ValueError):
  """An invalid config, override or resume; the message names the key."""


def check(condition: bool, key: str, value: Any, rule: str) -> None:
  """Raises ConfigError `key=value is invalid: rule` unless `condition`."""
  if not condition:
    raise ConfigError(f"{key}={value!r} is invalid: {rule}")


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
  """Raises ConfigError naming the valid choices (and the closest one)."""
  choices = list(choices)
  if value in choices:
    return
  close = difflib.get_close_matches(str(value), choices, n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  raise ConfigError(
      f"{key}={value!r} is invalid: valid values: {', '.join(choices)}{hint}"
  )


def check_bool(key: str, value: Any) -> None:
  check(isinstance(value, bool), key, value, "must be True or False")


def check_int(key: str, value: Any, minimum: int) -> None:
  check(
      isinstance(value, int)
      and not isinstance(value, bool)
      and value >= minimum,
      key,
      value,
      f"must be an integer >= {minimum}",
  )


# ----------------------------------------------------------------------------
# Config files and overrides.
# ----------------------------------------------------------------------------


def _load_module(path: str | pathlib.Path):
  file = pathlib.Path(path)
  if not file.is_file():
    raise ConfigError(f"config file {str(path)!r} does not exist")
  spec = importlib.util.spec_from_file_location(file.stem, file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling_module(config_file: str, name: str):
  """The config module `name` beside `config_file` (e.g. "default.py")."""
  return _load_module(pathlib.Path(config_file).with_name(name))


def apply_variants(
    config: ml_collections.ConfigDict,
    arg: str | None,
    variants: Mapping[str, Mapping[str, Any]],
    *,
    config_file: str,
) -> ml_collections.ConfigDict:
  """Applies the comma-separated `variants` named in `arg`, in order."""
  for name in filter(None, (arg or "").split(",")):
    if name not in variants:
      close = difflib.get_close_matches(name, list(variants), n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ConfigError(
          f"{pathlib.Path(config_file).name}: unknown variant {name!r}; "
          f"valid variants: {', '.join(sorted(variants))}{hint}"
      )
    for dotted_key, value in variants[name].items():
      section, key = dotted_key.split(".")
      config[section][key] = value
  return config


def config_variants(path: str) -> list[str]:
  """The variant names a config file defines (its `VARIANTS` dict)."""
  return sorted(getattr(_load_module(path), "VARIANTS", {}))


def dotted_keys(config, prefix: str = "") -> list[str]:
  """Every leaf key of a (nested) config as `section.key`."""
  keys = []
  for key, value in config.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      keys += dotted_keys(value, f"{prefix}{key}.")
    else:
      keys.append(f"{prefix}{key}")
  return keys


def _unknown_key_error(config, key: str) -> ConfigError:
  """The error for an override of a key the config does not have."""
  # Imported here: config files import this module and stay light.
  from segjax import losses  # pylint: disable=g-import-not-at-top

  section, _, name = key.partition(".")
  if section == "loss" and name in losses.BOUNDARY_KEYS:
    return ConfigError(
        f"loss.{name} is a boundary_aware key but loss.type="
        f"{config.loss.type!r}; remove it or use configs/boundary.py"
    )
  close = difflib.get_close_matches(key, dotted_keys(config), n=1)
  hint = f"; did you mean {close[0]!r}?" if close else ""
  return ConfigError(f"unknown config key {key!r}{hint}")


def check_overrides(argv: Sequence[str]) -> None:
  """Checks `--config=FILE[:variants]` and the keys of `--config.*` in argv.

  What ml_collections reports as a traceback (a missing file, an unknown
  variant, an unknown key) becomes one ConfigError line, naming the closest
  valid key. Values are left to ml_collections' own parsing.
  """
  specs = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  if not specs:
    return
  path, _, arg = specs[-1].partition(":")
  config = _load_module(path).get_config(arg or None)
  known = set(dotted_keys(config))
  for item in argv:
    if item.startswith("--config.") and "=" in item:
      key = item[len("--config.") :].split("=", 1)[0]
      if key not in known and not any(k.startswith(key + ".") for k in known):
        raise _unknown_key_error(config, key)


def load_config(
    spec: str, overrides: Mapping[str, Any] | Sequence[str] = ()
) -> ml_collections.ConfigDict:
  """What `--config=spec --config.key=value ...` gives on the command line.

  Args:
    spec: `path/to/config.py[:variants]`.
    overrides: `{"train.num_steps": 8}` or `["train.num_steps=8"]`, parsed by
      ml_collections exactly as command-line overrides are.
  """
  if isinstance(overrides, Mapping):
    overrides = [f"{k}={v}" for k, v in overrides.items()]
  argv = [f"--config={spec}", *(f"--config.{o}" for o in overrides)]
  check_overrides(argv)
  argv = ["segjax", *argv]
  flag_values = flags.FlagValues()
  # ml_collections finds the override flags in `sys_argv` when defining them.
  config_flags.DEFINE_config_file(
      "config", None, flag_values=flag_values, lock_config=True, sys_argv=argv
  )
  try:
    flag_values(argv)
  except flags.Error as e:
    raise ConfigError(str(e)) from None
  return flag_values.config


# ----------------------------------------------------------------------------
# Validation of a resolved config, before anything runs.
# ----------------------------------------------------------------------------

SECTIONS = (
    "data",
    "tokenizer",
    "model",
    "encoder",
    "loss",
    "optim",
    "train",
    "parallel",
)


def validate_data_config(config: ml_collections.ConfigDict) -> None:
  """Checks the data and tokenizer sections, what building shards reads.

  Raises:
    ConfigError: naming the first bad key.
  """
  # Imported here: config files import this module and must stay light.
  from segjax.data import splits  # pylint: disable=g-import-not-at-top

  for section in ("data", "tokenizer"):
    if section not in config:
      raise ConfigError(f"config has no {section!r} section")
  d = config.data
  check_choice("data.source", d.source, splits.SOURCES)
  if d.source != "pydoc":
    check(
        bool(d.path) and pathlib.Path(d.path).is_dir(),
        "data.path",
        d.path,
        f"data.source={d.source!r} needs an existing folder",
    )
  check(
      0.0 < d.dev_fraction < 1.0,
      "data.dev_fraction",
      d.dev_fraction,
      "must be in (0, 1)",
  )
  check_int("data.max_documents", d.max_documents, 0)
  check_int("data.max_sentences", d.max_sentences, 2)
  check_int("data.train_stride", d.train_stride, 0)
  check_int("data.eval_stride", d.eval_stride, 0)
  for key in ("train_stride", "eval_stride"):
    check(
        d[key] <= d.max_sentences,
        f"data.{key}",
        d[key],
        f"must be at most data.max_sentences={d.max_sentences}",
    )

  t = config.tokenizer
  check_int("tokenizer.num_buckets", t.num_buckets, 2)
  check_int("tokenizer.max_tokens", t.max_tokens, 1)
  check_bool("tokenizer.lowercase", t.lowercase)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every section; raises ConfigError naming the first bad key."""
  # Imported here: config files import this module and must stay light (and
  # these import JAX).
  # pylint: disable=g-import-not-at-top
  from segjax import evaluation
  from segjax import losses
  from segjax import metrics
  from segjax import models
  from segjax import parallel

  for section in SECTIONS:
    if section not in config:
      raise ConfigError(f"config has no {section!r} section")
  check_int("seed", config.seed, 0)
  validate_data_config(config)

  m = config.model
  check_choice(
      "model.sentence_encoder", m.sentence_encoder, models.SENTENCE_ENCODERS
  )
  check_choice(
      "model.document_encoder", m.document_encoder, models.DOCUMENT_ENCODERS
  )
  check_choice("model.dtype", m.dtype, models.DTYPES)
  check_int("model.token_layers", m.token_layers, 0)
  for key in ("embed_dim", "hidden_dim", "num_layers"):
    check_int(f"model.{key}", m[key], 1)
  check_bool("model.semantic_cohesion", m.semantic_cohesion)

  e = config.encoder
  check(
      isinstance(e.name, str) and bool(e.name),
      "encoder.name",
      e.name,
      "must name a registered encoder or a folder",
  )
  check_int("encoder.max_tokens", e.max_tokens, 0)
  check_int("encoder.num_layers", e.num_layers, 0)
  check_int("encoder.batch_size", e.batch_size, 1)
  check_bool("encoder.fine_tune", e.fine_tune)
  check_int("model.num_heads", m.num_heads, 1)
  check_int("model.mlp_dim", m.mlp_dim, 1)
  check_int("model.cohesion_window", m.cohesion_window, 0)
  check(
      m.hidden_dim % m.num_heads == 0,
      "model.num_heads",
      m.num_heads,
      f"must divide model.hidden_dim={m.hidden_dim}",
  )
  check(
      0.0 <= m.dropout_rate < 1.0,
      "model.dropout_rate",
      m.dropout_rate,
      "must be in [0, 1)",
  )

  # Out-of-range warnings come once, from `create_loss` building the loss.
  losses.validate_loss_config(config.loss, warn=False)

  o = config.optim
  for key in ("learning_rate", "encoder_learning_rate", "grad_clip_norm"):
    check(o[key] > 0, f"optim.{key}", o[key], "must be > 0")
  for key in ("weight_decay", "encoder_weight_decay"):
    check(o[key] >= 0, f"optim.{key}", o[key], "must be >= 0")
  for key in ("b1", "b2"):
    check(0 <= o[key] < 1, f"optim.{key}", o[key], "must be in [0, 1)")
  check_int("optim.warmup_steps", o.warmup_steps, 0)
  check_int("optim.decay_steps", o.decay_steps, 0)

  tr = config.train
  for key in (
      "batch_size",
      "eval_batch_size",
      "num_steps",
      "log_every",
      "eval_every",
      "checkpoint_every",
      "keep_checkpoints",
      "max_consecutive_skipped",
  ):
    check_int(f"train.{key}", tr[key], 1)
  check_int("train.eval_max_documents", tr.eval_max_documents, 0)
  check_choice("train.best_metric", tr.best_metric, evaluation.EVAL_METRICS)
  check_choice("train.best_mode", tr.best_mode, ("min", "max"))
  check_choice(
      "train.threshold_metric", tr.threshold_metric, metrics.THRESHOLD_METRICS
  )
  check_choice("parallel.mode", config.parallel.mode, parallel.MODES)


def check_device_split(
    config: ml_collections.ConfigDict, num_devices: int, num_processes: int
) -> None:
  """Every global batch must split evenly over devices (and processes)."""
  for key in ("batch_size", "eval_batch_size"):
    value = config.train[key]
    check(
        value % num_devices == 0 and value % num_processes == 0,
        f"train.{key}",
        value,
        f"must be a multiple of the {num_devices} devices"
        + (f" and {num_processes} processes" if num_processes > 1 else ""),
    )


# ----------------------------------------------------------------------------
# Resuming a workdir.
# ----------------------------------------------------------------------------


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat |= _flat(value, f"{prefix}{key}.")
    else:
      # JSON has no tuples: compare sequences as lists.
      flat[f"{prefix}{key}"] = (
          list(value) if isinstance(value, (tuple, list)) else value
      )
  return flat


def check_resumable(
    saved: Mapping[str, Any], config: Mapping[str, Any]
) -> None:
  """Refuses to resume a run whose saved config differs from `config`.

  Only `RESUMABLE_KEYS` may differ; the error names every other key that
  does, with both values. Raising `train.num_steps` with
  `optim.decay_steps=0` would stretch the schedule already followed, so it
  asks for the old length to be fixed instead.
  """
  before, after = _flat(saved), _flat(config)
  changed = [
      f"{key} {before.get(key, '<absent>')!r} -> {after.get(key, '<absent>')!r}"
      for key in sorted(before.keys() | after.keys())
      if key not in RESUMABLE_KEYS and before.get(key) != after.get(key)
  ]
  if changed:
    raise ConfigError(
        "the workdir holds a run trained with another config: "
        f"{'; '.join(changed)} (may change on a resume: "
        f"{', '.join(RESUMABLE_KEYS)}; or use a new --workdir)"
    )
  old_steps = before.get("train.num_steps")
  if after.get("optim.decay_steps") == 0 and old_steps != after.get(
      "train.num_steps"
  ):
    raise ConfigError(
        f"train.num_steps {old_steps!r} -> {after['train.num_steps']!r} "
        "would change the learning-rate schedule of the steps already "
        f"trained (optim.decay_steps=0); add --config.optim.decay_steps="
        f"{old_steps} to keep it"
    )
