r"""Writes PyTorch golden values for the legacy cross-entropy term.

Usage, from a virtual environment with torch==2.13.0 and numpy (torch is not a
dependency of segjax or of its tests; keep it out of the project's venv):

  python tools/make_torch_golden.py [--output tests/data/torch_ce_golden.npz]

Every case is fixed random inputs from a seeded numpy generator, fed to

  F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1), weight=w,
                  ignore_index=ignore_index, label_smoothing=eps,
                  reduction="mean")

once in float64 (the float32 inputs cast to double; also its gradient w.r.t.
the logits) and once in float32.

The cases are the product of C in {2, 3, 5}, [B, T] in {(4, 17), (1, 1),
(3, 64)}, eps in {0.0, 0.1, 0.25} and class weights absent or a positive random
vector; the logit scale (standard normal times 1 or 10) and the padding pattern
(none, random positions, trailing padding, one fully padded sequence) are
cycled over them. A [1, 1] batch is never padded, and every case but the last
has at least one valid token. The last case has every label ignored: torch's
mean is then 0/0 = NaN, recorded as returned and flagged by `all_ignored`
(segjax returns 0 there on purpose).

Keys of the .npz (i in 0 .. num_cases - 1):

  num_cases              int64 scalar
  torch_version          str scalar
  case{i}_logits         float32 [B, T, C]
  case{i}_labels         int32 [B, T], ignore_index at padded positions
  case{i}_weights        float32 [C], all ones when has_weights is False
  case{i}_has_weights    bool scalar; False means torch got weight=None
  case{i}_eps            float64 scalar, the label smoothing
  case{i}_ignore_index   int64 scalar
  case{i}_scale          float64 scalar, the logits' standard deviation
  case{i}_padding        str scalar, the padding pattern
  case{i}_all_ignored    bool scalar
  case{i}_loss64         float64 scalar, mean loss in float64
  case{i}_loss32         float32 scalar, mean loss in float32
  case{i}_grad64         float64 [B, T, C], d loss64 / d logits
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20240601
IGNORE_INDEX = -100
NUM_CLASSES = (2, 3, 5)
SHAPES = ((4, 17), (1, 1), (3, 64))
LABEL_SMOOTHING = (0.0, 0.1, 0.25)
SCALES = (1.0, 10.0)
PADDINGS = ("none", "random", "trailing", "full_sequence")


def _pad(labels: np.ndarray, pattern: str, rng: np.random.Generator):
  """Sets some labels to IGNORE_INDEX following `pattern`, in place."""
  b, t = labels.shape
  if pattern == "none" or b * t == 1:
    return "none"
  if pattern == "random":
    mask = rng.random((b, t)) < 0.3
    mask.flat[rng.integers(b * t)] = False  # Keep one valid token at least.
    labels[mask] = IGNORE_INDEX
    return pattern
  if pattern == "trailing":
    for row in range(b):
      labels[row, rng.integers(1, t + 1) :] = IGNORE_INDEX
    return pattern
  if pattern == "full_sequence":
    if b == 1:
      return _pad(labels, "random", rng)
    labels[rng.integers(b)] = IGNORE_INDEX
    full = (labels == IGNORE_INDEX).all(axis=1)
    for row in np.flatnonzero(~full):  # Trailing padding on one other row.
      labels[row, rng.integers(1, t + 1) :] = IGNORE_INDEX
      break
    return pattern
  raise ValueError(pattern)


def _torch_losses(logits, labels, weights, has_weights, eps):
  """Returns (loss64, loss32, grad64) from torch."""
  c = logits.shape[-1]
  target = torch.from_numpy(labels.astype(np.int64)).reshape(-1)

  def loss(x, dtype):
    w = torch.from_numpy(weights).to(dtype) if has_weights else None
    return F.cross_entropy(
        x.reshape(-1, c),
        target,
        weight=w,
        ignore_index=IGNORE_INDEX,
        label_smoothing=eps,
        reduction="mean",
    )

  x64 = torch.from_numpy(logits).to(torch.float64).requires_grad_(True)
  loss64 = loss(x64, torch.float64)
  loss64.backward()
  with torch.no_grad():
    loss32 = loss(torch.from_numpy(logits), torch.float32)
  return (
      np.float64(loss64.item()),
      np.float32(loss32.item()),
      x64.grad.numpy().astype(np.float64),
  )


def make_cases(rng: np.random.Generator) -> list[dict]:
  """The cases' inputs, before any torch call."""
  cases = []
  grid = itertools.product(NUM_CLASSES, SHAPES, LABEL_SMOOTHING, (False, True))
  for i, (c, (b, t), eps, has_weights) in enumerate(grid):
    scale = SCALES[(i // 2) % len(SCALES)]
    logits = (scale * rng.standard_normal((b, t, c))).astype(np.float32)
    labels = rng.integers(0, c, size=(b, t)).astype(np.int32)
    padding = _pad(labels, PADDINGS[(i + i // 6) % len(PADDINGS)], rng)
    weights = (
        rng.uniform(0.2, 3.0, size=c).astype(np.float32)
        if has_weights
        else np.ones(c, np.float32)
    )
    assert (labels != IGNORE_INDEX).any()
    cases.append(
        dict(
            logits=logits,
            labels=labels,
            weights=weights,
            has_weights=has_weights,
            eps=eps,
            scale=scale,
            padding=padding,
            all_ignored=False,
        )
    )
  # Every label ignored: torch's mean is 0/0.
  c, b, t = 3, 2, 5
  cases.append(
      dict(
          logits=rng.standard_normal((b, t, c)).astype(np.float32),
          labels=np.full((b, t), IGNORE_INDEX, np.int32),
          weights=rng.uniform(0.2, 3.0, size=c).astype(np.float32),
          has_weights=True,
          eps=0.1,
          scale=1.0,
          padding="all",
          all_ignored=True,
      )
  )
  return cases


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", default="tests/data/torch_ce_golden.npz")
  args = parser.parse_args()

  torch.use_deterministic_algorithms(True)
  cases = make_cases(np.random.default_rng(SEED))
  out = {
      "num_cases": np.int64(len(cases)),
      "torch_version": np.str_(torch.__version__),
  }
  for i, case in enumerate(cases):
    loss64, loss32, grad64 = _torch_losses(
        case["logits"],
        case["labels"],
        case["weights"],
        case["has_weights"],
        case["eps"],
    )
    if not case["all_ignored"]:
      assert np.isfinite(loss64) and np.isfinite(loss32), i
    p = f"case{i}_"
    out.update(
        {
            p + "logits": case["logits"],
            p + "labels": case["labels"],
            p + "weights": case["weights"],
            p + "has_weights": np.bool_(case["has_weights"]),
            p + "eps": np.float64(case["eps"]),
            p + "ignore_index": np.int64(IGNORE_INDEX),
            p + "scale": np.float64(case["scale"]),
            p + "padding": np.str_(case["padding"]),
            p + "all_ignored": np.bool_(case["all_ignored"]),
            p + "loss64": loss64,
            p + "loss32": loss32,
            p + "grad64": grad64,
        }
    )
  np.savez_compressed(args.output, **out)
  print(
      f"wrote {len(cases)} cases (torch {torch.__version__}) to "
      f"{args.output}"
  )


if __name__ == "__main__":
  main()
