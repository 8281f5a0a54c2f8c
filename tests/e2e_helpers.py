"""Shared test helpers: `:smoke` configs, CLI runs, metric events, tools."""

import importlib.util
import os
import pathlib
import subprocess
import sys
import time

from segjax import config_lib
from segjax.metric_writers import read_events  # pylint: disable=unused-import

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_tool(name):
  """tools/<name>.py as a module (the tools import each other by name)."""
  tools = str(REPO / "tools")
  if tools not in sys.path:
    sys.path.insert(0, tools)
  spec = importlib.util.spec_from_file_location(
      name, REPO / "tools" / f"{name}.py"
  )
  module = importlib.util.module_from_spec(spec)
  # dataclasses resolve string annotations through sys.modules.
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def assert_same_batches(a, b):
  """Two lists of batches (dicts of arrays) are equal, key by key."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def one_step_on_devices(step, host_state, batch, num_devices, mode="pmap"):
  """(params, train_loss) as numpy after `step` on `num_devices` devices.

  `step(state, batch)` is a per-device train step (`trainer.train_step`
  with its partials); the batch is split over the devices by pmap or
  shard_map, as the trainer does.
  """
  import flax.jax_utils  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from segjax import parallel  # pylint: disable=g-import-not-at-top

  devices = jax.local_devices()[:num_devices]
  if mode == "pmap":
    mapped = jax.pmap(step, axis_name=parallel.AXIS, devices=devices)
    state = flax.jax_utils.replicate(host_state, devices=devices)
    sharded = jax.tree.map(
        lambda x: x.reshape(num_devices, -1, *x.shape[1:]), batch
    )
    new_state, metrics = mapped(state, sharded)
    return jax.tree.map(
        lambda x: np.asarray(x[0]), (new_state.params, metrics["train_loss"])
    )
  mesh = jax.sharding.Mesh(
      np.array(devices),
      (parallel.AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,),
  )
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
  mapped = jax.jit(
      jax.shard_map(
          step, mesh=mesh, in_specs=(P(), P("batch")), out_specs=(P(), P())
      )
  )
  new_state, metrics = mapped(host_state, batch)
  return jax.tree.map(np.asarray, (new_state.params, metrics["train_loss"]))


def with_smoke(spec):
  """`configs/x.py[:variants]` with the `smoke` variant added first.

  First, so that a named `minilm` puts back the pretrained encoder that
  `smoke` replaces with hashed words.
  """
  path, _, variants = spec.partition(":")
  return f"{path}:smoke{',' + variants if variants else ''}"


def tiny_config(spec="configs/boundary.py", **overrides):
  """`spec:smoke` with `overrides`, as `--config.key=value` would set them."""
  return config_lib.load_config(str(REPO / with_smoke(spec)), overrides)


def train_losses(events):
  """step -> train_loss; a step logged twice (rerun after a kill) keeps the last."""
  return {e["step"]: e["train_loss"] for e in events if "train_loss" in e}


def cli_env(devices=1):
  return dict(
      os.environ,
      XLA_FLAGS=(f"--xla_force_host_platform_device_count={devices}"),
      JAX_PLATFORMS="cpu",
  )


def train_flags(config_flag, *args):
  """`--config=<file>:...,smoke args` (--config must come first)."""
  return [f"--config={with_smoke(config_flag.split('=', 1)[1])}", *args]


def train_command(config_flag, *args):
  return [
      sys.executable,
      "-m",
      "segjax.train",
      *train_flags(config_flag, *args),
  ]


def run_module(module, *args, stdin=None, devices=1, timeout=300):
  """`python -m module args` from the repo root; the CompletedProcess."""
  return subprocess.run(
      [sys.executable, "-m", module, *args],
      input=stdin,
      capture_output=True,
      text=True,
      cwd=REPO,
      env=cli_env(devices),
      timeout=timeout,
      check=False,
  )


def cli(config_flag, *args, devices=1):
  """Runs the train command to completion; returns the CompletedProcess."""
  return run_module(
      "segjax.train",
      *train_flags(config_flag, *args),
      devices=devices,
      timeout=600,
  )


def start_training(
    workdir, *args, devices=2, config_flag="--config=configs/boundary.py"
):
  """The train command in the background (stdout/stderr piped)."""
  return subprocess.Popen(
      train_command(
          config_flag,
          f"--workdir={workdir}",
          "--config.train.log_every=1",
          *args,
      ),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=REPO,
      env=cli_env(devices),
  )


def wait_for_step(workdir, step, process, timeout=300):
  """Blocks until metrics.jsonl has logged `step` (the run is mid-training)."""
  deadline = time.time() + timeout
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  while time.time() < deadline:
    assert process.poll() is None, process.communicate()[1][-3000:]
    if metrics.exists() and step in train_losses(read_events(workdir)):
      return
    time.sleep(0.1)
  raise TimeoutError(f"step {step} not reached in {timeout} s")


def checkpoint_steps(workdir):
  folder = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
