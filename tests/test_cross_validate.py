"""tools/cross_validate.py: folds, and two candidates x two folds end to end."""

import json

import numpy as np
import pytest

from e2e_helpers import load_tool

tool = load_tool("cross_validate")

TINY = (
    "train.num_steps=4",
    "train.eval_every=2",
    "train.log_every=2",
    "train.checkpoint_every=2",
)


def write_corpus(root, counts):
  """A Wiki-727K-layout corpus: `counts[split]` documents of 3 segments."""
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(50)]
  for split, count in counts.items():
    for i in range(count):
      lines = []
      for s in range(3):
        lines.append(f"========,1,topic {s}.")
        lines += [
            " ".join(rng.choice(words, 6)).capitalize() + "." for _ in range(4)
        ]
      path = root / split / f"{i // 5:02d}" / f"doc_{i}"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text("\n".join(lines) + "\n")
  return root


def test_folds_deal_train_and_dev_documents_once_and_never_test(tmp_path):
  root = write_corpus(tmp_path / "corpus", {"train": 17, "dev": 4, "test": 6})
  files = tool.pooled_documents(root)
  assert len(files) == 21
  assert not any("test" in f.relative_to(root).parts[0] for f in files)
  folds = tool.assign_folds(files, root, 4)
  assert folds == tool.assign_folds(list(files), root, 4)  # Deterministic.
  assert sorted(np.bincount(folds).tolist()) == [5, 5, 5, 6]
  roots = tool.write_fold_folders(files, folds, root, 4, tmp_path / "out")
  for k, fold_root in enumerate(roots):
    test = sorted(p.resolve() for p in (fold_root / "test").iterdir())
    train = sorted(p.resolve() for p in (fold_root / "train").iterdir())
    assert test == sorted(f for f, fold in zip(files, folds) if fold == k)
    assert sorted(test + train) == sorted(files)
  # The same folds again are fine; other folds in that output are refused.
  tool.write_fold_folders(files, folds, root, 4, tmp_path / "out")
  with pytest.raises(tool.compare_losses.CompareError, match="other folds"):
    tool.write_fold_folders(files, folds, root, 3, tmp_path / "out")


def test_bad_candidates_and_empty_corpora_are_named(tmp_path):
  with pytest.raises(tool.compare_losses.CompareError, match="bad name"):
    tool.parse_candidate("a/b:model.num_layers=1")
  assert tool.parse_candidate("deep:model.num_layers=3; optim.b1=0.8") == (
      "deep",
      ["model.num_layers=3", "optim.b1=0.8"],
  )
  (tmp_path / "test").mkdir()
  with pytest.raises(tool.compare_losses.CompareError, match="no files"):
    tool.pooled_documents(tmp_path)


@pytest.mark.slow
def test_every_candidate_is_scored_on_every_fold(tmp_path):
  root = write_corpus(tmp_path / "corpus", {"train": 10, "dev": 2, "test": 3})
  argv = [
      "--output",
      str(tmp_path / "out"),
      "--config",
      "configs/boundary.py:smoke",
      "--data_source",
      "wiki727k",
      "--data_path",
      str(root),
      "--folds",
      "2",
      "--candidate",
      "defaults",
      "--candidate",
      "wide:model.cohesion_window=8;model.dropout_rate=0.2",
  ]
  for text in TINY:
    argv += ["--set", text]
  report = tool.main(argv)
  assert [c["name"] for c in report["candidates"]] == ["defaults", "wide"]
  assert report["fold_sizes"] == [6, 6]
  for candidate in report["candidates"]:
    assert [r["fold"] for r in candidate["runs"]] == [0, 1]
    for run in candidate["runs"]:
      assert 0 <= run["pk"] <= 1 and run["best_step"] in (2, 4)
  wide = tmp_path / "out" / "runs" / "wide" / "fold1" / "seed0"
  saved = json.loads((wide / "config.json").read_text())
  assert saved["model"]["cohesion_window"] == 8
  assert saved["data"]["path"].endswith("folds/fold1")
  text = (tmp_path / "out" / "cross_validation.md").read_text()
  assert "| wide | model.cohesion_window=8 model.dropout_rate=0.2 |" in text
  # A rerun reuses the finished runs and reports the same scores.
  again = tool.main(argv)
  assert again["candidates"] == report["candidates"]
