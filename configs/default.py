r"""Every key of a segjax config: its default, and the values it takes.

`configs/boundary.py` and `configs/cross_entropy.py` start from this file and
change only what they change; the trainer, the model and the tokenizer are
built from these sections, and no module repeats a default.

  python -m segjax.train --config=configs/boundary.py \
      --config.model.hidden_dim=128 --config.train.num_steps=2000

`configs/<file>.py:smoke` (any file) is a tiny, fast run for tests and a first
look; variants of a file are listed in its docstring. Keys that may change
when a workdir is resumed are `config_lib.RESUMABLE_KEYS`; any other change
stops the resume and names the keys.
"""

import ml_collections

# `:smoke`: a tiny model on a few documents; 20 steps in seconds on a CPU. It
# learns its own word embeddings (no encoder to load or cache to build); a
# later `minilm` (`:smoke,minilm`) puts the pretrained encoder back.
SMOKE = {
    "model.sentence_encoder": "hashed",
    "data.max_documents": 48,
    "data.max_sentences": 32,
    "tokenizer.num_buckets": 4096,
    "tokenizer.max_tokens": 16,
    "model.embed_dim": 16,
    "model.hidden_dim": 32,
    "model.mlp_dim": 32,
    "model.num_layers": 1,
    "model.num_heads": 2,
    "optim.learning_rate": 3e-3,
    "optim.warmup_steps": 2,
    "train.batch_size": 8,
    "train.eval_batch_size": 16,
    "train.num_steps": 20,
    "train.log_every": 5,
    "train.eval_every": 10,
    "train.checkpoint_every": 10,
}

# `:minilm`: sentence vectors from the pretrained all-MiniLM-L6-v2, frozen
# (the defaults; named for runs that combine it with other variants).
MINILM = {
    "model.sentence_encoder": "pretrained",
    "encoder.name": "all-MiniLM-L6-v2",
}

# `:hashed`: hashed-word embeddings learned from scratch, no pretrained
# encoder (the model before pretrained encoders; twice the Pk on pydoc).
HASHED = {"model.sentence_encoder": "hashed"}


def get_config() -> ml_collections.ConfigDict:
  """The defaults: boundary-aware loss on the embedded pydoc corpus."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # int: parameter init, dropout and data order

  config.data = d = ml_collections.ConfigDict()
  d.source = "pydoc"  # pydoc | choi | wiki727k | jsonl | auto (detect format)
  d.path = ""  # folder with train/ dev/ test/ (every source but pydoc)
  d.dev_fraction = 0.1  # (0, 1): share of train held out when there is no dev/
  d.max_documents = 0  # int >= 0: first documents kept per split; 0 = all
  d.max_sentences = 64  # int >= 2: sentences per window
  d.train_stride = 0  # int >= 0: training window step; 0 = max_sentences
  d.eval_stride = 0  # int >= 0: evaluation window step; 0 = max_sentences // 2
  # Corpus folders are read once into shards of records (`segjax.preprocess`)
  # kept here, one folder per corpus and tokenizer; "" = <workdir>/data.
  d.cache_dir = ""

  # The hashed-word tokenizer (`segjax.data.Tokenizer(**config.tokenizer)`).
  config.tokenizer = t = ml_collections.ConfigDict()
  t.num_buckets = 2**15  # int >= 2: token id space, the embedding table's rows
  t.max_tokens = 32  # int >= 1: tokens kept per sentence
  t.lowercase = True  # bool: lower-case words before hashing

  # `segjax.models.SegmentationModel`; one key per field.
  config.model = m = ml_collections.ConfigDict()
  # pretrained (`encoder`'s sentence vectors) | hashed (word embeddings
  # learned from scratch). Pretrained halves pydoc's test Pk (RESULTS.md).
  m.sentence_encoder = "pretrained"
  m.token_layers = 0  # int >= 0, hashed: transformer blocks before pooling
  m.document_encoder = "transformer"  # transformer | bilstm
  m.embed_dim = 32  # int >= 1: token embedding size
  m.hidden_dim = 64  # int >= 1: sentence vector and document encoder width
  m.num_layers = 2  # int >= 1: document encoder layers
  m.num_heads = 4  # int >= 1, divides hidden_dim: attention heads
  m.mlp_dim = 128  # int >= 1: transformer MLP width
  m.dropout_rate = 0.1  # [0, 1): word, feature and residual dropout
  # int >= 0: block similarities of up to this many sentences either side of
  # each gap, the topic-independent signal that carries over to unseen
  # topics; 0 disables them.
  m.cohesion_window = 5
  # bool, pretrained: block cosines of the sentence embeddings too.
  m.semantic_cohesion = True
  m.dtype = "float32"  # float32 | bfloat16 (TPU): compute dtype

  # The pretrained sentence encoder of model.sentence_encoder="pretrained".
  config.encoder = e = ml_collections.ConfigDict()
  e.name = "all-MiniLM-L6-v2"  # a registered name or a model folder
  e.max_tokens = 0  # int >= 0: wordpieces kept per sentence; 0 = the model's
  e.num_layers = 0  # int >= 0: first blocks kept; 0 = all
  # bool: False = frozen, each distinct sentence encoded once into an on-disk
  # cache (CPU, large corpora); True = trained end to end (GPU/TPU).
  e.fine_tune = False
  e.batch_size = 64  # int >= 1, frozen: sentences per encoding batch
  e.cache_dir = ""  # frozen: embedding cache; "" = <workdir>/embeddings

  # `segjax.losses.create_loss(config.loss)`; SPEC sections 3 and 4.
  config.loss = l = ml_collections.ConfigDict()
  l.type = "boundary_aware"  # boundary_aware | cross_entropy
  l.num_classes = 2  # int >= 2: 0 = inside a segment, 1 = ends one
  l.ignore_index = -100  # int outside [0, num_classes): padding, document end
  l.label_smoothing = 0.2  # [0, 1); 0-0.3 recommended
  # None or one positive weight per class, e.g. (1.0, 2.5); a typed
  # placeholder keeps it overridable (`--config.loss.class_weights=...`).
  l.class_weights = ml_collections.FieldReference(None, field_type=tuple)
  l.entropy_lambda = 0.01  # >= 0: entropy bonus against collapse
  # The keys below are boundary_aware only (`losses.BOUNDARY_KEYS`).
  l.boundary_weight = 2.0  # >= 1: weight of tokens at transitions; 1-5
  l.boundary_radius = 0  # int >= 0: transition neighbourhood half-width
  l.segment_consistency_lambda = 0.05  # >= 0; 0-0.2 recommended
  l.conf_penalty_lambda = 0.01  # >= 0; 0-0.05 recommended
  l.conf_threshold = 0.95  # (1 / num_classes, 1): hinge on the top probability
  l.use_boundary_as_primary = True  # bool: primary (True) or supplement

  # AdamW with linear warmup, cosine decay and global-norm clipping.
  config.optim = o = ml_collections.ConfigDict()
  o.learning_rate = 1e-3  # > 0: peak learning rate
  o.warmup_steps = 50  # int >= 0
  # int >= 0: cosine decay length; 0 = train.num_steps. Fix it to extend a run
  # later (raise train.num_steps and rerun) with the same schedule so far.
  o.decay_steps = 0
  o.weight_decay = 0.01  # >= 0
  o.b1 = 0.9  # [0, 1)
  o.b2 = 0.98  # [0, 1)
  o.grad_clip_norm = 1.0  # > 0: global gradient norm limit
  o.encoder_learning_rate = 2e-5  # > 0, encoder.fine_tune: its peak rate
  o.encoder_weight_decay = 0.01  # >= 0, encoder.fine_tune

  config.train = tr = ml_collections.ConfigDict()
  tr.batch_size = 32  # int >= 1: global windows per step, split over devices
  tr.eval_batch_size = 32  # int >= 1: global windows per evaluation batch
  tr.num_steps = 600  # int >= 1
  tr.log_every = 25  # int >= 1: steps per console/metrics.jsonl line
  tr.eval_every = 100  # int >= 1: steps per dev evaluation
  tr.eval_max_documents = 0  # int >= 0: dev documents per evaluation; 0 = all
  tr.checkpoint_every = 100  # int >= 1: steps per checkpoint
  tr.keep_checkpoints = 2  # int >= 1: latest checkpoints kept (plus the best)
  # int >= 1: updates skipped in a row (non-finite gradients) that stop a run
  tr.max_consecutive_skipped = 10
  # The dev metric that ranks checkpoints (`evaluation.EVAL_METRICS`).
  tr.best_metric = "val_window_diff"
  tr.best_mode = "min"  # min | max: whether lower best_metric is better
  # pk | window_diff | boundary_f1 | ...: the dev metric the decision
  # threshold is tuned for at every evaluation (`metrics.THRESHOLD_METRICS`).
  tr.threshold_metric = "pk"

  config.parallel = p = ml_collections.ConfigDict()
  p.mode = "pmap"  # pmap | shard_map: same numbers, shard_map is jit-based
  return config
