"""Evaluation at scale: chunked, per-process scoring and the dev subset.

Scores of documents scored in chunks, or in process shares whose statistics
are merged, are exactly those of all documents at once; the periodic dev
evaluations can score a fixed subset, the best checkpoint all of dev.
"""

import json
import math
import socket
import subprocess
import sys

import numpy as np
import pytest

from e2e_helpers import REPO, cli_env, read_events, tiny_config
from segjax import data
from segjax import evaluation
from segjax import metrics


def _random_documents(num_documents=24, seed=0):
  """(probs, gold) of documents of 1 to ~100 sentences."""
  rng = np.random.default_rng(seed)
  lengths = [1, 2, 3, 100, 97] + list(rng.integers(4, 60, num_documents - 5))
  probs, gold = [], []
  for n in lengths:
    labels = (rng.random(n) < 0.2).astype(np.int32)
    labels[-1] = 1
    probs.append(
        np.clip(0.4 * labels + 0.7 * rng.random(n), 0, 1).astype(np.float32)
    )
    gold.append(labels)
  gold[5][:-1] = 0  # A document of one segment.
  return probs, gold


def _same(a: dict, b: dict) -> bool:
  """Equal keys and values, NaN equal to NaN: exact, not approximate."""
  return a.keys() == b.keys() and all(
      a[k] == b[k]
      or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
      for k in a
  )


def test_chunked_scores_are_exactly_those_of_one_chunk(monkeypatch):
  probs, gold = _random_documents()
  whole = evaluation.score_documents(probs, gold)
  assert whole["num_documents"] == len(gold)
  assert _same(
      evaluation.score_documents(probs, gold, chunk_documents=3), whole
  )
  at = evaluation.score_documents(probs, gold, threshold=0.3)
  assert _same(
      evaluation.score_documents(probs, gold, threshold=0.3, chunk_documents=3),
      at,
  )
  # Chunks bounded by padded positions: one ~100-sentence document each.
  monkeypatch.setattr(evaluation, "CHUNK_POSITIONS", 128)
  assert _same(
      evaluation.score_documents(probs, gold, chunk_documents=3), whole
  )

  # The same numbers as the metrics on the padded batch (float32 sums).
  padded = data.pad_documents(probs, 0.0)
  labels = data.pad_documents(gold, 0)
  mask = data.pad_documents([np.ones(len(g), bool) for g in gold], False)
  threshold, best_pk = metrics.best_threshold(padded, labels, mask)
  assert whole["threshold"] == round(float(threshold), 4)
  assert whole["pk"] == pytest.approx(float(best_pk), rel=1e-6)
  assert whole["ece"] == pytest.approx(
      float(metrics.expected_calibration_error(padded, labels, mask)),
      rel=1e-5,
  )


def test_merged_process_shares_score_exactly_like_all_documents():
  probs, gold = _random_documents()
  whole = evaluation.score_documents(probs, gold)
  shares = [range(p, len(gold), 3) for p in range(3)]  # d % 3 == p
  part = lambda share, x: [x[d] for d in share]

  sweep = evaluation.merge_stats(
      *(evaluation.sweep_stats(part(s, probs), part(s, gold)) for s in shares)
  )
  threshold = evaluation.tune_threshold(sweep)
  assert threshold == evaluation.tune_threshold(
      evaluation.sweep_stats(probs, gold)
  )
  stats = evaluation.merge_stats(
      *(
          evaluation.document_stats(part(s, probs), part(s, gold), threshold)
          for s in shares
      )
  )
  assert _same(evaluation.scores_from_stats(stats, threshold), whole)
  # One process: merging across processes changes nothing.
  assert _same(
      evaluation.score_documents(probs, gold, across_processes=True), whole
  )
  # The bins: the calibration of the merged stats.
  bins = evaluation.calibration_bins(probs, gold)
  bins = metrics.CalibrationStats(**{k: np.asarray(v) for k, v in bins.items()})
  assert float(metrics.compute_calibration(bins)["ece"]) == whole["ece"]


def test_non_finite_documents_are_counted_and_make_calibration_nan():
  probs, gold = _random_documents(8)
  probs[2] = probs[2].copy()
  probs[2][1] = np.nan
  assert evaluation.non_finite_documents(probs, across_processes=True) == 1
  scores = evaluation.score_documents(probs, gold, threshold=0.5)
  assert math.isnan(scores["ece"]) and math.isnan(scores["brier"])
  assert scores["num_documents"] == 8


def _corpus(documents):
  return data.InMemoryCorpus(
      documents, data.Tokenizer(num_buckets=64, max_tokens=4, lowercase=True)
  )


def test_eval_subset_depends_on_the_names_only():
  documents = [
      data.Document([[f"s{i}", "t"], ["u"]], name=f"doc{i}.txt")
      for i in range(40)
  ]
  chosen = evaluation.evaluation_subset(_corpus(documents), 5)
  names = [d.name for d in chosen.documents]
  assert len(names) == 5
  # Another order of the same documents: the same ones, in that order.
  shuffled = [documents[i] for i in np.random.default_rng(1).permutation(40)]
  again = evaluation.evaluation_subset(_corpus(shuffled), 5)
  assert sorted(d.name for d in again.documents) == sorted(names)
  assert [d.name for d in again.documents] == [
      d.name for d in shuffled if d.name in names
  ]
  # A prefix of the ranking: a larger subset holds the smaller one.
  assert set(names) <= {
      d.name
      for d in evaluation.evaluation_subset(_corpus(documents), 9).documents
  }
  whole = _corpus(documents)
  assert evaluation.evaluation_subset(whole, 0) is whole
  assert evaluation.evaluation_subset(whole, 40) is whole


@pytest.mark.slow
def test_dev_subset_during_training_and_all_of_dev_at_the_end(tmp_path):
  from segjax import checkpoints  # pylint: disable=g-import-not-at-top
  from segjax import trainer  # pylint: disable=g-import-not-at-top

  config = tiny_config(
      **{
          "train.num_steps": 4,
          "train.eval_every": 2,
          "train.checkpoint_every": 2,
          "train.eval_max_documents": 2,
      }
  )
  results = trainer.train_and_evaluate(config, tmp_path)
  events = read_events(tmp_path)
  periodic = [e for e in events if "val_pk" in e]
  assert [e["step"] for e in periodic] == [2, 4]
  assert all(e["val_num_documents"] == 2 for e in periodic)
  num_dev = len(data.load_splits(config.data)["dev"])
  assert num_dev > 2
  (final,) = [e for e in events if "final_val_pk" in e]
  assert final["final_val_num_documents"] == num_dev
  assert results["final_val_num_documents"] == num_dev
  assert results["val_num_documents"] == 2
  # The threshold tuned on all of dev scores test, and is the one recorded
  # for the best step (what `segjax.evaluate` uses).
  assert results["test_threshold"] == results["final_val_threshold"]
  checkpointer = checkpoints.Checkpointer(
      tmp_path,
      best_metric=config.train.best_metric,
      best_mode=config.train.best_mode,
  )
  try:
    assert (
        checkpointer.threshold(final["best_step"], {})
        == results["final_val_threshold"]
    )
  finally:
    checkpointer.close()
  assert (tmp_path / trainer.CALIBRATION_FILE).is_file()


def test_without_a_subset_there_is_no_final_dev_evaluation(trained_run):
  events = read_events(trained_run)
  assert any("test_pk" in e for e in events)
  assert not any("final_val_pk" in e for e in events)


# A process of a multi-process evaluation (or the single-process reference):
# window predictions of a fixed function of the tokens, each process
# stitching and scoring its share. Prints its scores as JSON.
_WORKER = r"""
import json, sys
import jax
import jax.numpy as jnp
import numpy as np

port, num_processes, process_id = map(int, sys.argv[1:])
if num_processes > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id
  )
from segjax import data, evaluation, parallel as parallel_lib

documents = data.pydoc_documents("dev", 10)
batches = data.make_eval_batches(
    documents, data.Tokenizer(num_buckets=512, max_tokens=8, lowercase=True),
    global_batch_size=4,
    max_sentences=8, process_index=jax.process_index(),
    process_count=jax.process_count(), ignore_index=-100,
)

def eval_step(scale, batch):
  probs = jax.nn.sigmoid(jnp.sin(scale * jnp.sum(batch["tokens"], -1)))
  valid = batch["labels"] != -100
  tokens = jax.lax.psum(jnp.sum(valid), "batch")
  loss = jax.lax.psum(jnp.sum(jnp.where(valid, probs, 0.0)), "batch")
  return probs, {"loss": loss / jnp.maximum(tokens, 1), "tokens": tokens}

parallel = parallel_lib.DataParallel("pmap")
share = evaluation.process_share(len(documents))
probs, loss = evaluation.predict_documents(
    parallel, parallel.map_rows(eval_step),
    parallel.put_state(np.float32(0.37)), batches,
    data.document_lengths(documents), indices=share,
)
gold = [data.boundary_labels(documents[d]) for d in share]
print(json.dumps({
    "scores": evaluation.score_documents(probs, gold, across_processes=True),
    "bins": evaluation.calibration_bins(probs, gold, across_processes=True),
    "bad": evaluation.non_finite_documents(probs, across_processes=True),
    "loss": loss,
    "share": len(share),
}))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_score_exactly_like_one():
  port = _free_port()
  runs = [
      subprocess.Popen(
          [sys.executable, "-c", _WORKER, str(port), str(count), str(index)],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
          cwd=REPO,
          env=cli_env(devices=2 // count),
      )
      for count, index in ((2, 0), (2, 1), (1, 0))
  ]
  outputs = []
  for run in runs:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    outputs.append(json.loads(stdout.strip().splitlines()[-1]))
  first, second, single = outputs
  assert (first["share"], second["share"], single["share"]) == (5, 5, 10)
  for process in (first, second):
    assert _same(process["scores"], single["scores"])
    assert process["bins"] == single["bins"]
    assert process["bad"] == 0
    assert process["loss"] == pytest.approx(single["loss"], rel=1e-6)
  assert single["scores"]["num_documents"] == 10
