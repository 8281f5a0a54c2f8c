"""Legacy cross-entropy (the PyTorch trainer's loss) on the embedded pydoc data.

  python -m segjax.train --config=configs/cross_entropy.py --workdir=runs/ce

Variants (`configs/cross_entropy.py:<name>`, plus `smoke`): imbalanced.
"""

import ml_collections

from segjax import config_lib

VARIANTS = {
    # Boundaries are rare (~1 in 7 sentences): upweight class 1.
    "imbalanced": {
        "loss.class_weights": (1.0, 2.5),
        "loss.label_smoothing": 0.2,
    },
}


def get_config(arg=None):
  config = config_lib.base_config()
  config.loss = ml_collections.ConfigDict(
      {
          "type": "cross_entropy",
          "num_classes": 2,
          "ignore_index": -100,
          "label_smoothing": 0.1,
          "class_weights": ml_collections.FieldReference(
              None, field_type=tuple
          ),
          "entropy_lambda": 0.01,
      }
  )
  return config_lib.apply_arg(
      config, arg, VARIANTS, config_file="configs/cross_entropy.py"
  )
