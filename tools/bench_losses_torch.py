r"""Times the boundary-aware loss in eager PyTorch (forward + backward).

The reference side of `tools/bench_losses.py --torch_python=PYTHON`, which
launches this script with that interpreter; it needs torch and numpy, not
segjax or JAX. Make such an environment apart from the project's venv with
`tools/requirements-torch.txt` (torch==2.13.0+cpu):

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install -r tools/requirements-torch.txt
  python tools/bench_losses.py --torch_python=/tmp/torchvenv/bin/python

Standalone:

  /tmp/torchvenv/bin/python tools/bench_losses_torch.py --inputs FILE.npz \
      [--repeats 30] [--hyperparameters JSON]

`FILE.npz` holds `logits` [B, T, C] float32 and `labels` [B, T] int32 (what
bench_losses writes). Prints one JSON object: the median seconds of
the loss and `loss.backward()` (gradient of the logits), the loss value (bench_losses checks
it against segjax's) and the torch version. The loss is SPEC section 4
written the way a PyTorch trainer writes it: `F.cross_entropy` per token,
shifted masks for transitions and segment pairs, `max_pool1d` for the
boundary window.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def boundary_aware_loss(
    logits,
    labels,
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    class_weights=None,
    entropy_lambda=0.0,
    boundary_weight=2.0,
    boundary_radius=0,
    segment_consistency_lambda=0.0,
    conf_penalty_lambda=0.0,
    conf_threshold=0.95,
):
  """SPEC section 4, primary strategy, for logits [B, T, C]."""
  num_classes = logits.shape[-1]
  tiny = torch.finfo(torch.float32).tiny
  valid = labels != ignore_index
  mask = valid.float()
  target = torch.where(valid, labels, 0)
  x = torch.where(valid[..., None], logits.float(), 0.0)
  weights = (
      torch.ones(num_classes)
      if class_weights is None
      else torch.tensor(class_weights, dtype=torch.float32)
  )
  ce = F.cross_entropy(
      x.reshape(-1, num_classes),
      target.reshape(-1),
      weight=weights,
      label_smoothing=label_smoothing,
      reduction="none",
  ).reshape(labels.shape)
  target_weight = weights[target]
  both_valid = valid[:, 1:] & valid[:, :-1]
  transition = F.pad(both_valid & (labels[:, 1:] != labels[:, :-1]), (1, 0))
  same = (both_valid & (labels[:, 1:] == labels[:, :-1])).float()
  r = boundary_radius
  window = F.pad(transition.float(), (r, r + 1))[:, None]
  near = F.max_pool1d(window, 2 * r + 2, stride=1)[:, 0] > 0
  boundary = (valid & near).float()
  factor = 1.0 + (boundary_weight - 1.0) * boundary
  boundary_ce = (mask * factor * ce).sum() / (
      mask * factor * target_weight
  ).sum().clamp_min(tiny)
  log_probs = F.log_softmax(x, dim=-1)
  probs = log_probs.exp()
  count = mask.sum().clamp_min(1.0)
  entropy = (mask * -(probs * log_probs).sum(-1)).sum() / count
  jumps = 0.5 * (probs[:, 1:] - probs[:, :-1]).square().sum(-1)
  consistency = (same * jumps).sum() / same.sum().clamp_min(1.0)
  top = probs.max(dim=-1).values
  penalty = (mask * F.relu(top - conf_threshold)).sum() / count
  return (
      boundary_ce
      - entropy_lambda * entropy
      + segment_consistency_lambda * consistency
      + conf_penalty_lambda * penalty
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--inputs", required=True)
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument(
      "--hyperparameters",
      default="{}",
      help="JSON object of boundary_aware_loss keyword arguments",
  )
  args = parser.parse_args()
  data = np.load(args.inputs)
  logits = torch.from_numpy(data["logits"])
  labels = torch.from_numpy(data["labels"]).long()
  kw = json.loads(args.hyperparameters)

  leaf = logits.requires_grad_(True)

  def step():
    leaf.grad = None
    loss = boundary_aware_loss(leaf, labels, **kw)
    loss.backward()
    return loss

  for _ in range(3):
    loss = step()
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  print(
      json.dumps(
          {
              "seconds": statistics.median(times),
              "loss": float(loss),
              "torch_version": torch.__version__,
              "threads": torch.get_num_threads(),
          }
      )
  )


if __name__ == "__main__":
  main()
