"""The migration validation tool passes on the repo's configs and catches breakage."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

from segjax import losses

REPO = pathlib.Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "validate_migration.py"


@pytest.fixture(scope="module")
def tool():
  spec = importlib.util.spec_from_file_location("validate_migration", TOOL)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def test_every_config_and_variant_passes_every_check():
  result = subprocess.run(
      [sys.executable, str(TOOL)],
      capture_output=True,
      text=True,
      cwd=REPO,
      check=False,
      timeout=600,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  columns = result.stdout.splitlines()[0].split()
  assert {
      "cross_entropy",
      "boundary",
      "boundary:aggressive",
      "boundary:conservative",
      "boundary:imbalanced",
      "boundary:calibration",
      "cross_entropy:imbalanced",
  } <= set(columns)
  assert "FAILED" not in result.stdout
  assert f"{7 * len(columns)} passed, 0 failed" in result.stdout


def test_a_loss_that_ignores_boundary_weight_fails_sensitivity(
    tool, monkeypatch
):
  def without_boundary_weight(logits, labels, **kw):
    kw["boundary_weight"] = 1.0
    return losses.boundary_aware_loss(logits, labels, **kw)

  monkeypatch.setitem(
      losses.LOSS_FUNCTIONS, "boundary_aware", without_boundary_weight
  )
  results = tool.run_checks("boundary", str(REPO / "configs" / "boundary.py"))
  assert results["forward"] is None
  assert "boundary_weight" in results["sensitivity"]


def test_a_loss_that_leaks_padding_fails_the_padding_check(tool, monkeypatch):
  def leaky(logits, labels, **kw):
    loss, aux = losses.cross_entropy_loss(logits, labels, **kw)
    return loss + 0.0 * logits.sum(), aux

  monkeypatch.setitem(losses.LOSS_FUNCTIONS, "cross_entropy", leaky)
  results = tool.run_checks(
      "cross_entropy", str(REPO / "configs" / "cross_entropy.py")
  )
  assert "garbage nan" in results["padding"]


def test_a_config_that_does_not_load_fails_the_config_check(tool, tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text(
      "import ml_collections\n"
      "def get_config(arg=None):\n"
      "  c = ml_collections.ConfigDict()\n"
      "  c.loss = {'type': 'boundary_aware', 'num_classes': 2}\n"
      "  return c\n"
  )
  results = tool.run_checks("bad", str(bad))
  assert "loss.ignore_index is missing" in results["config"]
  table = tool.format_table({"bad": results})
  assert "FAILED config [bad]" in table
