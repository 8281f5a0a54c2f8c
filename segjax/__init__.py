"""segjax: supervised text segmentation in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
  # `segjax.Segmenter` without importing JAX for `import segjax`.
  if name == "Segmenter":
    from segjax.segmenter import Segmenter  # pylint: disable=g-import-not-at-top

    return Segmenter
  raise AttributeError(f"module 'segjax' has no attribute {name!r}")
