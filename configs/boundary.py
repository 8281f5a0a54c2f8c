"""Boundary-aware cross-entropy on the embedded pydoc data (the default job).

  python -m segjax.train --config=configs/boundary.py --workdir=runs/boundary
  python -m segjax.train --config=configs/boundary.py:aggressive \
      --config.loss.boundary_weight=3.0 --workdir=runs/aggressive

Variants (`configs/boundary.py:<name>`, comma-separated, plus `smoke` for a
tiny run): aggressive, conservative, imbalanced, calibration, hashed
(hashed-word embeddings instead of the pretrained sentence encoder), minilm
(the pretrained encoder, the default). Every key and its default:
`configs/default.py`.
"""

from segjax import config_lib

default = config_lib.sibling_module(__file__, "default.py")

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
    "hashed": default.HASHED,
    "minilm": default.MINILM,
    "smoke": default.SMOKE,
}


def get_config(arg=None):
  return config_lib.apply_variants(
      default.get_config(), arg, VARIANTS, config_file=__file__
  )
