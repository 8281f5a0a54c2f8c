"""Boundary-aware cross-entropy on the embedded pydoc data (the default job).

  python -m segjax.train --config=configs/boundary.py --workdir=runs/boundary
  python -m segjax.train --config=configs/boundary.py:aggressive \
      --config.loss.boundary_weight=3.0 --workdir=runs/aggressive

Variants (`configs/boundary.py:<name>`, comma-separated, plus `smoke` for a
tiny run): aggressive, conservative, imbalanced, calibration.
"""

import ml_collections

from segjax import config_lib

VARIANTS = {
    # Push harder on transitions and smoothness inside segments.
    "aggressive": {
        "loss.boundary_weight": 3.0,
        "loss.segment_consistency_lambda": 0.1,
        "loss.conf_penalty_lambda": 0.02,
    },
    # Closer to the legacy loss.
    "conservative": {
        "loss.boundary_weight": 1.5,
        "loss.segment_consistency_lambda": 0.02,
        "loss.conf_penalty_lambda": 0.005,
    },
    # Boundaries are rare (~1 in 7 sentences): upweight class 1.
    "imbalanced": {
        "loss.class_weights": (1.0, 2.5),
        "loss.label_smoothing": 0.2,
    },
    # Better-calibrated probabilities for threshold tuning.
    "calibration": {
        "loss.label_smoothing": 0.25,
        "loss.conf_penalty_lambda": 0.03,
        "loss.conf_threshold": 0.85,
    },
}


def get_config(arg=None):
  config = config_lib.base_config()
  config.loss = ml_collections.ConfigDict(
      {
          "type": "boundary_aware",
          "num_classes": 2,
          "ignore_index": -100,
          "label_smoothing": 0.2,
          # None or one positive weight per class; a placeholder keeps the key
          # overridable from the command line (`--config.loss.class_weights=...`).
          "class_weights": ml_collections.FieldReference(
              None, field_type=tuple
          ),
          "entropy_lambda": 0.01,
          "boundary_weight": 2.0,
          "boundary_radius": 0,
          "segment_consistency_lambda": 0.05,
          "conf_penalty_lambda": 0.01,
          "conf_threshold": 0.95,
          "use_boundary_as_primary": True,
      }
  )
  return config_lib.apply_arg(
      config, arg, VARIANTS, config_file="configs/boundary.py"
  )
