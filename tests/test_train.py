"""End-to-end tests of `segjax.train` on the embedded pydoc data, tiny model."""

import json
import subprocess
import sys

import pytest

from e2e_helpers import REPO, cli, cli_env, one_step_on_devices, read_events, run_module, tiny_config, train_losses
from segjax import trainer as train


@pytest.mark.slow
def test_training_learns_and_writes_every_output(tmp_path):
  config = tiny_config(
      **{
          "train.num_steps": 24,
          "train.log_every": 4,
          "train.eval_every": 12,
          "train.checkpoint_every": 12,
      }
  )
  results = train.train_and_evaluate(config, tmp_path)

  events = read_events(tmp_path)
  losses = train_losses(events)
  assert sorted(losses) == [4, 8, 12, 16, 20, 24]
  assert losses[24] < losses[4], losses
  train_event = next(e for e in events if "train_loss" in e)
  for key in (
      "train_ce",
      "train_entropy",
      "train_boundary_ce",
      "train_consistency",
      "train_confidence_penalty",
      "train_boundary_fraction",
      "grad_norm",
      "learning_rate",
      "steps_per_second",
      "skipped_steps",
  ):
    assert key in train_event, key
  evals = [e for e in events if "val_pk" in e]
  assert [e["step"] for e in evals] == [12, 24]
  for key in (
      "val_loss",
      "val_boundary_f1",
      "val_pk",
      "val_window_diff",
      "val_complete_segments",
      "val_macro_f1",
      "val_ece",
      "val_threshold",
  ):
    assert evals[-1][key] is not None, key
  assert 0.0 <= evals[-1]["val_pk"] <= 1.0
  assert 0.0 < results["test_pk"] <= 1.0

  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["loss"]["type"] == "boundary_aware"
  steps = sorted(
      int(p.name)
      for p in (tmp_path / "checkpoints").iterdir()
      if p.name.isdigit()
  )
  assert steps == [12, 24]
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
  fixed = {
      "train.log_every": 1,
      "train.eval_every": 100,
      "train.checkpoint_every": 4,
      "optim.decay_steps": 8,
  }
  straight = tmp_path / "straight"
  train.train_and_evaluate(
      tiny_config(**fixed, **{"train.num_steps": 8}), straight
  )
  resumed = tmp_path / "resumed"
  train.train_and_evaluate(
      tiny_config(**fixed, **{"train.num_steps": 4}), resumed
  )
  train.train_and_evaluate(
      tiny_config(**fixed, **{"train.num_steps": 8}), resumed
  )
  expected = train_losses(read_events(straight))
  got = train_losses(read_events(resumed))
  assert sorted(got) == list(range(1, 9))
  assert got == expected


@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path):
  # A small learning rate: Adam turns float-reordering noise in near-zero
  # gradients into full-size steps (the gradient itself is tested exactly,
  # with SGD, in test_train_step_gradient_does_not_depend_on_device_count).
  args = [
      "--config=configs/boundary.py",
      "--config.train.num_steps=6",
      "--config.train.log_every=1",
      "--config.train.eval_every=6",
      "--config.optim.learning_rate=3e-4",
  ]
  one = cli(*args, f"--workdir={tmp_path / 'one'}", devices=1)
  assert one.returncode == 0, one.stderr[-3000:]
  four = cli(*args, f"--workdir={tmp_path / 'four'}", devices=4)
  assert four.returncode == 0, four.stderr[-3000:]
  assert "4 device(s)" in four.stderr and "= 2 per device" in four.stderr
  one_losses = train_losses(read_events(tmp_path / "one"))
  four_losses = train_losses(read_events(tmp_path / "four"))
  assert sorted(one_losses) == list(range(1, 7))
  for step, loss in one_losses.items():
    assert four_losses[step] == pytest.approx(loss, rel=1e-4), step
  val = lambda d: next(e for e in read_events(d) if "val_pk" in e)
  assert val(tmp_path / "four")["val_pk"] == pytest.approx(
      val(tmp_path / "one")["val_pk"], abs=1e-3
  )


@pytest.mark.parametrize(
    "config, args, message",
    [
        (
            "boundary.py",
            ["--config.train.batch_size=-4"],
            "train.batch_size=-4",
        ),
        (
            "boundary.py",
            ["--config.loss.boundary_weight=0.5"],
            "loss.boundary_weight=0.5",
        ),
        (
            "boundary.py",
            ["--config.model.document_encoder=gru"],
            "model.document_encoder='gru' is invalid: valid values: "
            "transformer, bilstm",
        ),
        (
            "boundary.py",
            ["--config.data.source=mystery"],
            "data.source='mystery'",
        ),
        (
            "boundary.py",
            ["--config.loss.focal_gamma=2.0"],
            "unknown config key 'loss.focal_gamma'",
        ),
        (
            "boundary.py",
            ["--config.loss.boundry_weight=3"],
            "did you mean 'loss.boundary_weight'?",
        ),
        (
            "cross_entropy.py",
            ["--config.loss.boundary_weight=3"],
            "loss.boundary_weight is a boundary_aware key but "
            "loss.type='cross_entropy'",
        ),
        (
            "boundary.py:agressive",
            [],
            "unknown variant 'agressive'; valid variants: aggressive",
        ),
        ("missing.py", [], "config file 'configs/missing.py' does not exist"),
        (
            "boundary.py",
            ["--config.loss.label_smoothing=abc"],
            "--config.loss.label_smoothing=abc: could not convert",
        ),
        (
            "boundary.py",
            ["--config.train.batch_size=6"],
            "train.batch_size=6 is invalid: must be a multiple of the 4 "
            "devices",
        ),
        (
            "boundary.py",
            ["--config.train.eval_batch_size=6"],
            "train.eval_batch_size=6 is invalid: must be a multiple of the 4 "
            "devices",
        ),
    ],
)
def test_bad_configs_exit_with_one_line_naming_the_key(
    tmp_path, config, args, message
):
  # Not through train_flags: a bad file or variant must be seen as given.
  result = run_module(
      "segjax.train",
      f"--config=configs/{config}",
      f"--workdir={tmp_path}",
      *args,
      devices=4,
  )
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("segjax.train: error: "), result.stderr[-2000:]
  assert message in last, last
  assert "Traceback" not in result.stderr


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  workdir = tmp_path / "file"
  workdir.write_text("not a folder")
  result = cli("--config=configs/boundary.py", f"--workdir={workdir}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"segjax.train: error: workdir {str(workdir)!r} is not a folder"
  )


def test_running_out_of_device_memory_is_one_line_naming_the_sizes(tmp_path):
  # A real allocation failure (2**58 bytes, past any address space), raised
  # where a run raises it: from inside train_and_evaluate.
  code = (
      "import jax, jax.numpy as jnp\n"
      "from absl import app\n"
      "from segjax import cli, train, trainer\n"
      "def out_of_memory(config, workdir):\n"
      "  jax.jit(lambda: jnp.ones((2**58,), jnp.uint8))().block_until_ready()\n"
      "trainer.train_and_evaluate = out_of_memory\n"
      "app.run(train.main, flags_parser=cli.parse_flags)\n"
  )
  result = subprocess.run(
      [
          sys.executable,
          "-c",
          code,
          "--config=configs/boundary.py",
          f"--workdir={tmp_path}",
          "--config.encoder.fine_tune=True",
          "--config.train.batch_size=8",
      ],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=cli_env(),
      timeout=300,
      check=False,
  )
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "segjax.train: error: out of device memory (RESOURCE_EXHAUSTED: Out of"
      " memory allocating 288230376151711744 bytes.); lower"
      " train.batch_size=8, train.eval_batch_size=32, data.max_sentences=64,"
      " encoder.max_tokens=0; the checkpoints written so far are kept"
  )


def test_malformed_data_file_names_file_and_line(tmp_path):
  for split in ("train", "dev", "test"):
    (tmp_path / "data" / split).mkdir(parents=True)
    (tmp_path / "data" / split / "doc1").write_text(
        "========,1,preface.\nFirst sentence.\n========,x,Broken.\nMore.\n"
    )
  result = cli(
      "--config=configs/boundary.py",
      f"--workdir={tmp_path / 'w'}",
      "--config.data.source=wiki727k",
      f"--config.data.path={tmp_path / 'data'}",
  )
  assert result.returncode != 0
  assert "doc1:3" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_train_step_gradient_does_not_depend_on_device_count(mode):
  """One SGD step on 4 devices moves the weights exactly as on 1 device.

  SGD, not Adam: Adam is invariant to a constant gradient scale and would
  hide a gradient that is N times too large.
  """
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from segjax import data, losses, models  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  model = models.model_from_config(config)
  tx = optax.apply_if_finite(optax.sgd(1.0), max_consecutive_errors=10)
  host_state = train.create_train_state(config, model, tx)
  docs = data.pydoc_documents("train", num_documents=16)
  batch = next(
      data.make_train_iterator(
          docs,
          data.Tokenizer(**config.tokenizer),
          global_batch_size=8,
          max_sentences=config.data.max_sentences,
          seed=0,
          ignore_index=config.loss.ignore_index,
      )
  )
  step = functools.partial(
      train.train_step,
      model=model,
      loss_fn=losses.create_loss(config.loss),
      schedule=lambda count: 1.0,
  )

  def one_step(num_devices):
    return one_step_on_devices(step, host_state, batch, num_devices, mode)

  params_1, loss_1 = one_step(1)
  params_4, loss_4 = one_step(4)
  np.testing.assert_allclose(loss_4, loss_1, rtol=1e-6)
  moved = jax.tree.map(
      lambda a, b: np.abs(a - b).max(), params_1, host_state.params
  )
  assert max(jax.tree.leaves(moved)) > 1e-3  # the step did something
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      params_4,
      params_1,
  )


@pytest.mark.slow
def test_evaluate_prints_every_metric_of_the_best_checkpoint(trained_run):
  result = run_module(
      "segjax.evaluate",
      f"--workdir={trained_run}",
      "--split=test",
      "--format=json",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout)
  for key in (
      "pk",
      "window_diff",
      "boundary_f1",
      "complete_segments",
      "macro_f1",
      "ece",
      "threshold",
  ):
    assert isinstance(scores[key], float), key
  best = next(e for e in reversed(read_events(trained_run)) if "test_pk" in e)
  # The same checkpoint, threshold and documents as the trainer's own test
  # evaluation give the same numbers.
  assert scores["step"] == best["best_step"]
  assert scores["pk"] == pytest.approx(best["test_pk"], abs=1e-6)
  assert scores["threshold"] == pytest.approx(best["test_threshold"])
  table = run_module(
      "segjax.evaluate", f"--workdir={trained_run}", "--split=dev"
  )
  assert table.returncode == 0 and "window_diff" in table.stdout


@pytest.mark.slow
def test_evaluate_scores_another_dataset_and_constrained_decoding(
    trained_run, tmp_path
):
  # The cross-domain protocol: the pydoc model on a Choi-format dataset.
  documents = train.data.pydoc_documents("dev", 6)
  for split in ("train", "test"):
    train.data.write_choi_dir(documents, tmp_path / "choi" / split)
  other = run_module(
      "segjax.evaluate",
      f"--workdir={trained_run}",
      "--data_source=choi",
      f"--data_path={tmp_path / 'choi'}",
      "--format=json",
  )
  assert other.returncode == 0, other.stderr[-3000:]
  assert json.loads(other.stdout)["num_documents"] == 6
  constrained = run_module(
      "segjax.evaluate",
      f"--workdir={trained_run}",
      "--min_segment_sentences=2",
      "--max_segment_sentences=4",
      "--format=json",
  )
  assert constrained.returncode == 0, constrained.stderr[-3000:]
  scores = json.loads(constrained.stdout)
  plain = json.loads(
      run_module(
          "segjax.evaluate", f"--workdir={trained_run}", "--format=json"
      ).stdout
  )
  # Calibration is the probabilities'; the segmentation is the decoder's.
  assert scores["ece"] == plain["ece"]
  assert scores["boundary_precision"] != plain["boundary_precision"]
  bad = run_module(
      "segjax.evaluate",
      f"--workdir={trained_run}",
      "--min_segment_sentences=5",
      "--max_segment_sentences=2",
  )
  assert bad.returncode == 1
  assert (
      bad.stderr.strip().splitlines()[-1].startswith("segjax.evaluate: error:")
  )


@pytest.mark.slow
def test_segment_splits_raw_text_at_predicted_boundaries(trained_run):
  text = (
      "The cat sat on the mat. It was warm there.\n\n"
      "Stocks fell sharply today. Investors were worried.\n"
  )
  result = run_module(
      "segjax.segment",
      f"--workdir={trained_run}",
      "--format=json",
      "--threshold=0.0",
      "-",
      stdin=text,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout)
  assert out["sentences"] == [
      "The cat sat on the mat.",
      "It was warm there.",
      "Stocks fell sharply today.",
      "Investors were worried.",
  ]
  assert len(out["boundary_probabilities"]) == 4
  # Threshold 0: a cut after every sentence.
  assert out["segments"] == [[s] for s in out["sentences"]]
  plain = run_module(
      "segjax.segment",
      f"--workdir={trained_run}",
      "--one_per_line",
      "--threshold=1.0",
      "-",
      stdin=text,
  )
  assert plain.returncode == 0, plain.stderr[-3000:]
  assert "==========" not in plain.stdout
  assert plain.stdout.splitlines()[0] == (
      "The cat sat on the mat. It was warm there."
  )


@pytest.mark.parametrize(
    "module, args", [("segjax.evaluate", []), ("segjax.segment", ["-"])]
)
def test_segment_and_evaluate_name_a_missing_workdir(tmp_path, module, args):
  result = run_module(
      module, f"--workdir={tmp_path / 'nothing'}", *args, stdin="One sentence."
  )
  assert result.returncode != 0
  assert "nothing" in result.stderr and "Traceback" not in result.stderr


def test_a_non_finite_gradient_skips_the_update():
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from segjax import data, losses, models, parallel  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  model = models.model_from_config(config)
  tx, schedule = train.make_optimizer(config.optim, 10)
  state = train.create_train_state(config, model, tx)
  batch = next(
      data.make_train_iterator(
          data.pydoc_documents("train", num_documents=8),
          data.Tokenizer(**config.tokenizer),
          global_batch_size=4,
          max_sentences=config.data.max_sentences,
          seed=0,
          ignore_index=config.loss.ignore_index,
      )
  )
  good_loss = losses.create_loss(config.loss)

  def poisoned_loss(logits, labels, axis_name=None):
    loss, aux = good_loss(logits, labels, axis_name=axis_name)
    return loss * jnp.nan, aux

  def step(loss_fn, state):
    return jax.pmap(
        functools.partial(
            train.train_step, model=model, loss_fn=loss_fn, schedule=schedule
        ),
        axis_name=parallel.AXIS,
        devices=jax.local_devices()[:1],
    )(
        jax.tree.map(lambda x: np.asarray(x)[None], state),
        jax.tree.map(lambda x: x[None], batch),
    )

  first = jax.tree.map(lambda x: np.asarray(x[0]), step(poisoned_loss, state))
  skipped_state, metrics = first
  assert int(metrics["skipped_steps"]) == 1
  jax.tree.map(
      np.testing.assert_array_equal, skipped_state.params, state.params
  )
  # The skipped step froze the optimizer's own count, whose schedule starts
  # at learning rate 0: the second good step is the first that moves.
  recovered = skipped_state
  for _ in range(2):
    recovered, metrics = jax.tree.map(
        lambda x: np.asarray(x[0]), step(good_loss, recovered)
    )
  assert int(metrics["skipped_steps"]) == 1
  assert np.isfinite(metrics["train_loss"])
  changed = jax.tree.leaves(
      jax.tree.map(
          lambda a, b: not np.array_equal(a, b), recovered.params, state.params
      )
  )
  assert any(changed)


# ----------------------------------------------------------------------------
# The config is the value the code uses, and a resume keeps it.
# ----------------------------------------------------------------------------

_SHORT_RUN = {
    "train.num_steps": 4,
    "train.log_every": 1,
    "train.eval_every": 4,
    "train.checkpoint_every": 4,
}


@pytest.mark.slow
def test_ignore_index_is_the_label_of_padding_everywhere(tmp_path):
  # Labels are built by the pipeline, so the choice of ignore_index must not
  # change a single number; with a hard-coded -100 somewhere, -1 would put
  # padding and document ends into the loss.
  runs = {}
  for ignore_index in (-100, -1):
    workdir = tmp_path / str(ignore_index)
    results = train.train_and_evaluate(
        tiny_config(**_SHORT_RUN, **{"loss.ignore_index": ignore_index}),
        workdir,
    )
    runs[ignore_index] = (train_losses(read_events(workdir)), results)
  (losses_a, results_a), (losses_b, results_b) = runs.values()
  assert sorted(losses_a) == [1, 2, 3, 4]
  assert losses_a == losses_b
  assert results_a["val_loss"] == results_b["val_loss"]
  assert results_a["test_pk"] == results_b["test_pk"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("short")
  train.train_and_evaluate(tiny_config(**_SHORT_RUN), workdir)
  return workdir


@pytest.mark.slow
def test_resume_with_another_config_stops_before_building_anything(
    short_run, monkeypatch
):
  saved = (short_run / "config.json").read_bytes()

  def must_not_run(*args, **kwargs):
    raise AssertionError("the model was built")

  monkeypatch.setattr(train.models, "model_from_config", must_not_run)
  changed = {"model.hidden_dim": 64, "loss.label_smoothing": 0.1}
  with pytest.raises(train.config_lib.ConfigError) as error:
    train.train_and_evaluate(tiny_config(**_SHORT_RUN, **changed), short_run)
  message = str(error.value)
  assert "loss.label_smoothing 0.2 -> 0.1" in message
  assert "model.hidden_dim 32 -> 64" in message
  assert "\n" not in message
  # Raising num_steps would stretch the schedule already followed.
  with pytest.raises(train.config_lib.ConfigError, match="decay_steps=4"):
    train.train_and_evaluate(
        tiny_config(**{**_SHORT_RUN, "train.num_steps": 8}), short_run
    )
  assert (short_run / "config.json").read_bytes() == saved


def test_a_run_stopped_by_bad_data_keeps_the_workdir_config(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text('{"from": "an earlier run"}')
  (tmp_path / "data" / "train").mkdir(parents=True)
  (tmp_path / "data" / "train" / "doc").write_text("========,x,Broken.\n")
  config = tiny_config(
      **{"data.source": "wiki727k", "data.path": str(tmp_path / "data")}
  )
  with pytest.raises(train.data.DataError, match="doc:1"):
    train.train_and_evaluate(config, workdir)
  assert (workdir / "config.json").read_text() == '{"from": "an earlier run"}'
