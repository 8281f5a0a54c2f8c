"""Tests of segjax.models: shapes, padding invariance, per-example dropout."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from segjax import config_lib
from segjax import models

NUM_BUCKETS = 101
SMALL = dict(
    num_buckets=NUM_BUCKETS,
    num_classes=2,
    sentence_encoder="hashed",
    token_layers=0,
    document_encoder="transformer",
    semantic_cohesion=False,
    dtype="float32",
    embed_dim=8,
    hidden_dim=16,
    num_layers=1,
    num_heads=2,
    mlp_dim=32,
    dropout_rate=0.2,
    max_sentences=12,
    cohesion_window=2,
)
ENCODERS = ("transformer", "bilstm")


def _model(**overrides) -> models.SegmentationModel:
  return models.SegmentationModel(**{**SMALL, **overrides})


def _batch(seed=0, batch_size=4, num_sentences=10, num_tokens=6):
  """Random tokens with some padding tokens and left-aligned sentence masks."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, NUM_BUCKETS, (batch_size, num_sentences, num_tokens))
  tokens *= rng.random(tokens.shape) < 0.8
  lengths = rng.integers(3, num_sentences + 1, batch_size)
  lengths[0] = num_sentences - 2  # Always some padding sentences.
  mask = np.arange(num_sentences)[None, :] < lengths[:, None]
  tokens = np.where(mask[..., None], tokens, 0)
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(mask)


def _example_rngs(batch_size, seed=0, step=3):
  """Keys as the trainer makes them: fold_in(fold_in(base, step), example)."""
  base = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda e: jax.random.fold_in(base, e))(jnp.arange(batch_size))


def _params(model, tokens):
  return models.init_params(
      model,
      jax.random.key(0),
      batch_size=2,
      max_sentences=tokens.shape[1],
      max_tokens=tokens.shape[2],
  )


@functools.partial(jax.jit, static_argnames=("model", "train"))
def _apply(model, params, tokens, mask, *, train=False, example_rngs=None):
  return model.apply(
      {"params": params}, tokens, mask, train=train, example_rngs=example_rngs
  )


_cohesion_features = jax.jit(models.cohesion_features, static_argnames="window")


@pytest.fixture(scope="module", params=ENCODERS)
def encoder_setup(request):
  model = _model(document_encoder=request.param)
  tokens, mask = _batch()
  return model, _params(model, tokens), tokens, mask


def test_output_shape_and_dtype(encoder_setup):
  model, params, tokens, mask = encoder_setup
  logits = _apply(model, params, tokens, mask)
  assert logits.shape == (*mask.shape, 2)
  assert logits.dtype == jnp.float32
  assert np.isfinite(logits).all()


def test_padding_sentences_do_not_change_real_sentences(encoder_setup):
  model, params, tokens, mask = encoder_setup
  expected = _apply(model, params, tokens, mask)
  noise = jax.random.randint(jax.random.key(1), tokens.shape, 1, NUM_BUCKETS)
  noisy_padding = jnp.where(mask[..., None], tokens, noise)
  longer_tokens = jnp.pad(tokens, ((0, 0), (0, 2), (0, 0)), constant_values=7)
  longer_mask = jnp.pad(mask, ((0, 0), (0, 2)))

  noisy = _apply(model, params, noisy_padding, mask)
  longer = _apply(model, params, longer_tokens, longer_mask)[:, : mask.shape[1]]

  real = np.asarray(mask)
  np.testing.assert_allclose(noisy[real], expected[real], atol=1e-5)
  np.testing.assert_allclose(longer[real], expected[real], atol=1e-5)


def test_empty_sentences_and_rows_are_finite_with_finite_gradients(
    encoder_setup,
):
  model, params, tokens, mask = encoder_setup
  tokens = tokens.at[0, :3].set(0).at[1].set(0)  # Empty sentences.
  mask = mask.at[2].set(False)  # A fully padded row.
  rngs = _example_rngs(mask.shape[0])

  def loss(p):
    logits = model.apply(
        {"params": p}, tokens, mask, train=True, example_rngs=rngs
    )
    return (logits**2).sum()

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_split_batch_equals_whole_batch_in_train_mode(encoder_setup):
  model, params, tokens, mask = encoder_setup
  rngs = _example_rngs(mask.shape[0])
  whole = _apply(model, params, tokens, mask, train=True, example_rngs=rngs)
  halves = [
      _apply(
          model,
          params,
          tokens[rows],
          mask[rows],
          train=True,
          example_rngs=rngs[rows],
      )
      for rows in (slice(0, 2), slice(2, 4))
  ]
  np.testing.assert_allclose(
      np.concatenate(halves), whole, rtol=1e-5, atol=1e-5
  )


def test_dropout_depends_on_example_key_and_mode(encoder_setup):
  model, params, tokens, mask = encoder_setup
  train = lambda rngs: _apply(
      model, params, tokens, mask, train=True, example_rngs=rngs
  )
  batch_size = mask.shape[0]
  first = train(_example_rngs(batch_size, step=3))
  assert not np.allclose(first, train(_example_rngs(batch_size, step=4)))
  assert not np.allclose(first, _apply(model, params, tokens, mask))


def test_no_dropout_train_equals_eval():
  model = _model(dropout_rate=0.0)
  tokens, mask = _batch()
  params = _params(model, tokens)
  np.testing.assert_allclose(
      _apply(model, params, tokens, mask, train=True),
      _apply(model, params, tokens, mask),
      atol=1e-6,
  )


def test_train_with_dropout_needs_example_rngs():
  model = _model()
  tokens, mask = _batch()
  params = _params(model, tokens)
  with pytest.raises(ValueError, match="example_rngs"):
    model.apply({"params": params}, tokens, mask, train=True)


def test_sentence_transformer_and_bfloat16():
  model = _model(token_layers=1, dtype="bfloat16")
  tokens, mask = _batch()
  params = _params(model, tokens)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = _apply(
      model,
      params,
      tokens,
      mask,
      train=True,
      example_rngs=_example_rngs(mask.shape[0]),
  )
  assert logits.shape == (*mask.shape, 2)
  assert logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  # Same parameters in float32: the same function up to bfloat16 rounding.
  full = model.clone(dtype="float32")
  np.testing.assert_allclose(
      _apply(model, params, tokens, mask),
      _apply(full, params, tokens, mask),
      atol=0.1,
  )


def test_cohesion_window_zero_has_no_cohesion_parameters():
  with_cohesion = _params(_model(), _batch()[0])
  without = _params(_model(cohesion_window=0), _batch()[0])
  assert "cohesion_projection" in with_cohesion
  assert "cohesion_projection" not in without


def test_count_params():
  params = {"a": jnp.zeros((2, 3)), "b": {"c": jnp.zeros(4)}}
  assert models.count_params(params) == 10


# ----------------------------------------------------------------------------
# Lexical-cohesion features.
# ----------------------------------------------------------------------------


def _reference_gap_similarities(tokens, weights, window):
  """Block cosines from explicit bags of words (numpy)."""
  batch_size, num_sentences, _ = tokens.shape
  bags = np.zeros((batch_size, num_sentences, len(weights)))
  for index in np.ndindex(tokens.shape):
    token = tokens[index]
    if token:
      bags[index[0], index[1], token] += weights[token]
  out = np.zeros((batch_size, num_sentences, window))
  for b, i, k in np.ndindex(batch_size, num_sentences, window):
    before = bags[b, max(0, i - k) : i + 1].sum(0)
    after = bags[b, i + 1 : i + k + 2].sum(0)
    norms = np.linalg.norm(before) * np.linalg.norm(after)
    out[b, i, k] = before @ after / norms if norms else 0.0
  return out


def test_gap_similarities_match_explicit_bags_of_words():
  window = 3
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 20, (2, 9, 5))
  weights = rng.uniform(0.5, 1.5, 20).astype(np.float32)
  band = models.sentence_gram_band(
      jnp.asarray(tokens), jnp.asarray(weights[tokens]), 2 * window - 1
  )
  actual = models.gap_similarities(models.band_to_matrix(band), window)
  np.testing.assert_allclose(
      actual, _reference_gap_similarities(tokens, weights, window), atol=1e-5
  )


def test_window_document_frequency_counts_sentences_per_id():
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 12, (3, 7, 5))
  expected = np.zeros_like(tokens)
  for b, i, l in np.ndindex(tokens.shape):
    expected[b, i, l] = (tokens[b] == tokens[b, i, l]).any(axis=1).sum()
  np.testing.assert_array_equal(
      models.window_document_frequency(jnp.asarray(tokens)), expected
  )


def test_window_idf_discounts_words_spread_over_the_window():
  # Id 3 is in every sentence, id 4 in one; 0 is padding.
  tokens = jnp.array([[[3, 4], [3, 0], [3, 0], [0, 0]]])
  mask = jnp.array([[True, True, True, False]])
  np.testing.assert_allclose(
      jax.jit(models.window_idf)(tokens, mask)[0],
      [
          [np.log(4 / 3.5), np.log(4 / 1.5)],
          [np.log(4 / 3.5), 0.0],
          [np.log(4 / 3.5), 0.0],
          [0.0, 0.0],
      ],
      rtol=1e-6,
  )


def test_cohesion_is_higher_for_repeated_sentences_than_disjoint_ones():
  # Sentences 0-1 repeat one sentence; sentence 2 shares no word with them.
  tokens = jnp.array([[[5, 6, 7, 0], [5, 6, 7, 0], [8, 9, 0, 0]]])
  mask = jnp.ones((1, 3), bool)
  features = _cohesion_features(tokens, mask, window=1)
  # Columns: gap before, gap after, gap after next, has previous, has next.
  gap_after = features[0, :, 1]
  assert gap_after[0] > gap_after[1]
  np.testing.assert_allclose(gap_after, [1.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(features[0, :, 0], [0.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(features[0, :, 3], [0, 1, 1])
  np.testing.assert_allclose(features[0, :, 4], [1, 1, 0])


def test_cohesion_features_of_empty_sentences_are_zero_not_nan():
  tokens = jnp.zeros((1, 4, 3), jnp.int32)
  features = _cohesion_features(tokens, jnp.ones((1, 4), bool), window=2)
  assert np.isfinite(features).all()
  np.testing.assert_array_equal(features[..., :-2], 0.0)


# ----------------------------------------------------------------------------
# Per-example dropout.
# ----------------------------------------------------------------------------


def test_per_example_dropout_keeps_expectation_and_ignores_batch_position():
  layer = models.PerExampleDropout(0.5)
  x = jnp.ones((3, 2000))
  rngs = _example_rngs(3)
  out = layer.apply({}, x, rngs, deterministic=False)
  assert set(np.unique(out)) <= {0.0, 2.0}
  np.testing.assert_allclose(out.mean(), 1.0, atol=0.05)
  reversed_out = layer.apply({}, x, rngs[::-1], deterministic=False)
  np.testing.assert_array_equal(reversed_out, out[::-1])
  np.testing.assert_array_equal(layer.apply({}, x, None, deterministic=True), x)


# ----------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------


def _run_config(**model_overrides):
  """A whole run config: the model section plus the facts other sections own."""
  model = dict(
      sentence_encoder="hashed",
      token_layers=0,
      document_encoder="bilstm",
      semantic_cohesion=True,
      embed_dim=24,
      hidden_dim=32,
      num_layers=3,
      num_heads=2,
      mlp_dim=48,
      dropout_rate=0.3,
      cohesion_window=4,
      dtype="bfloat16",
  )
  return ml_collections.ConfigDict(
      dict(
          model=model | model_overrides,
          tokenizer=dict(num_buckets=512),
          loss=dict(num_classes=3),
          data=dict(max_sentences=20),
      )
  )


def test_model_from_config_sets_every_field():
  model = models.model_from_config(_run_config())
  assert model == models.SegmentationModel(
      num_buckets=512,
      num_classes=3,
      embed_dim=24,
      hidden_dim=32,
      num_layers=3,
      num_heads=2,
      mlp_dim=48,
      dropout_rate=0.3,
      sentence_encoder="hashed",
      token_layers=0,
      document_encoder="bilstm",
      max_sentences=20,
      cohesion_window=4,
      semantic_cohesion=True,
      dtype="bfloat16",
  )


@pytest.mark.parametrize(
    "key,value,choices",
    [
        ("sentence_encoder", "cnn", "hashed, pretrained"),
        ("document_encoder", "gru", "transformer, bilstm"),
        ("dtype", "float16", "float32, bfloat16"),
    ],
)
def test_model_from_config_names_a_bad_key_and_the_choices(key, value, choices):
  with pytest.raises(ValueError, match=f"model.{key}.*{value}.*{choices}"):
    models.model_from_config(_run_config(**{key: value}))


# ----------------------------------------------------------------------------
# Learning.
# ----------------------------------------------------------------------------


def test_a_few_adam_steps_fit_a_toy_batch():
  model = _model(dropout_rate=0.0)
  tokens, mask = _batch()
  labels = jax.random.bernoulli(jax.random.key(2), 0.3, mask.shape)
  params = _params(model, tokens)
  optimizer = optax.adam(1e-2)

  def loss(p):
    logits = model.apply({"params": p}, tokens, mask, train=False)
    per_sentence = optax.softmax_cross_entropy_with_integer_labels(
        logits, labels.astype(jnp.int32)
    )
    return (per_sentence * mask).sum() / mask.sum()

  @jax.jit
  def step(p, state):
    value, grads = jax.value_and_grad(loss)(p)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state, value

  state = optimizer.init(params)
  first = None
  for _ in range(40):
    params, state, value = step(params, state)
    first = value if first is None else first
  assert loss(params) < 0.5 * first


# ----------------------------------------------------------------------------
# Pretrained sentence embeddings.
# ----------------------------------------------------------------------------


def _pretrained(**overrides):
  return _model(
      sentence_encoder="pretrained", semantic_cohesion=True, **overrides
  )


def _embeddings(mask, dim=12, seed=1):
  rng = np.random.default_rng(seed)
  vectors = rng.normal(size=mask.shape + (dim,)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
  return jnp.asarray(np.where(mask[..., None], vectors, 0.0))


def test_pretrained_model_reads_embeddings_and_ignores_padding_ones():
  model = _pretrained()
  tokens, mask = _batch()
  embeddings = _embeddings(mask)
  params = models.init_params(
      model,
      jax.random.key(0),
      batch_size=2,
      max_sentences=tokens.shape[1],
      max_tokens=tokens.shape[2],
      embedding_dim=embeddings.shape[-1],
  )
  apply = jax.jit(
      lambda e: model.apply({"params": params}, tokens, mask, e, train=False)
  )
  logits = apply(embeddings)
  assert logits.shape == mask.shape + (2,)
  garbage = jnp.where(mask[..., None], embeddings, 1e4)
  np.testing.assert_allclose(apply(garbage)[mask], logits[mask], atol=1e-5)
  changed = apply(embeddings.at[0, 0].multiply(-1.0))
  assert not np.allclose(changed[0, :3], logits[0, :3])
  with pytest.raises(ValueError, match="needs embeddings"):
    model.apply({"params": params}, tokens, mask, train=False)


def test_semantic_cohesion_is_the_cosine_of_summed_block_embeddings():
  _, mask = _batch(batch_size=1, num_sentences=8)
  mask = jnp.ones_like(mask)
  embeddings = _embeddings(mask, dim=5)
  window = 2
  features = models.semantic_cohesion_features(embeddings, mask, window)
  e = np.asarray(embeddings[0], np.float64)
  cosine = lambda a, b: a @ b / np.sqrt((a @ a) * (b @ b))
  # Column window + k - 1 holds block size k at the gap after sentence i.
  for i in range(1, 6):
    for k in (1, 2):
      before = e[max(i - k + 1, 0) : i + 1].sum(0)
      after = e[i + 1 : i + 1 + k].sum(0)
      np.testing.assert_allclose(
          features[0, i, window + k - 1], cosine(before, after), rtol=1e-5
      )


def test_a_model_section_of_another_version_is_refused_naming_its_keys():
  """A run trained by another segjax version: one error, every odd key."""
  from e2e_helpers import tiny_config  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  with config.unlocked():
    del config.model["token_layers"]
    config.model.sentence_layers = 1
  with pytest.raises(config_lib.ConfigError) as e:
    models.model_from_config(config)
  assert "model.sentence_layers is not a key of this version" in str(e.value)
  assert "model.token_layers is missing" in str(e.value)
