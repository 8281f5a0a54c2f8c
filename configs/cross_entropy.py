"""Legacy cross-entropy (the PyTorch trainer's loss) on the embedded pydoc data.

  python -m segjax.train --config=configs/cross_entropy.py --workdir=runs/ce

Variants (`configs/cross_entropy.py:<name>`, plus `smoke`): imbalanced,
hashed (hashed-word embeddings instead of the pretrained sentence encoder),
minilm (the pretrained encoder, the default).
Every other key and its default: `configs/default.py`.
"""

from segjax import config_lib
from segjax import losses

default = config_lib.sibling_module(__file__, "default.py")

VARIANTS = {
    # Boundaries are rare (~1 in 7 sentences): upweight class 1.
    "imbalanced": {
        "loss.class_weights": (1.0, 2.5),
        "loss.label_smoothing": 0.2,
    },
    "hashed": default.HASHED,
    "minilm": default.MINILM,
    "smoke": default.SMOKE,
}


def get_config(arg=None):
  config = default.get_config()
  config.loss.type = "cross_entropy"
  config.loss.label_smoothing = 0.1
  for key in losses.BOUNDARY_KEYS:
    del config.loss[key]
  return config_lib.apply_variants(config, arg, VARIANTS, config_file=__file__)
