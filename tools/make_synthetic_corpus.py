r"""Writes a synthetic corpus shaped like Wiki-727K, for benchmarks and tests.

Usage:

  python tools/make_synthetic_corpus.py --output=/tmp/synth --documents=20000
  python tools/make_synthetic_corpus.py --output=/tmp/synth_jsonl \
      --documents=20000 --format=jsonl --seed=1

Layout (what `segjax.data.load_splits` reads with `source="wiki727k"` or
`source="jsonl"`):

  --format=wiki727k (default): OUTPUT/{train,dev,test}/TT/LL/doc_KKKKKKK, one
    document a file, the K-th of its split in folder TT = K // 10000, LL =
    K // 100 % 100 (100 files a folder; the real corpus nests its files too).
    A segment is a header line `========,<level>,<title>.` (the line
    `segjax.data.documents.wiki727k_header` writes) and then its sentences,
    one a line; `segjax.data.read_wiki727k_dir` reads the files.
  --format=jsonl: OUTPUT/{train,dev,test}.jsonl, one document a line,
    `{"segments": [["sentence", ...], ...]}` (`segjax.data.read_jsonl`).

Statistics, and where each target comes from:
  * Splits: Wiki-727K's shares, 582,160 / 72,354 / 73,232 of 727,746
    documents for train / dev / test (Koshorek et al. 2018, "Text
    Segmentation as a Supervised Learning Task"), i.e. 80.0 / 9.94 / 10.06 %;
    each split gets at least one document.
  * Sentences per document: about 54 on average, the shape measured on
    Wiki-727K-like data (20,000 documents held about 1.08M sentences).
  * Sentences per segment: lognormal with mean 13.6 (the Wiki-727K mean in
    Koshorek et al. 2018) and sigma 1, so most segments are short and a few
    run to hundreds of sentences; rounded, at least 1.
  * Segments per document: 1 + Poisson(3), mean 4, so that 4 x 13.6 gives
    the 54 sentences above; about 5% of documents have a single segment, as
    real corpora have some. The first document of every split has at least
    two, because `load_splits` refuses a split without any boundary.
  * Words per sentence: 3 + negative binomial (r = 4), mean 20, standard
    deviation about 9.5. With the vocabulary's word lengths a sentence line
    is about 140 bytes, the measured 155 MB of text per 1.08M sentences.
  * Words: a vocabulary of 40,000 made-up words (random syllables,
    deterministic from --seed) with Zipf-Mandelbrot frequencies
    (p(rank) ~ 1 / (rank + 2.7)). Every segment has a topic, a different one
    from the segment before it; 30% of its words come from the topic's own
    300 words (Zipf-distributed within the topic) and the rest from the
    whole vocabulary, so the boundaries can be found from the words alone.
    Titles are 1 to 3 words of the segment's topic; the first segment is at
    level 1, later ones at level 1 or 2.

Sentences are random words, so practically all of them are distinct. The same
--seed and --documents give the same bytes. The run ends with one summary
line (documents, segments, sentences and bytes per split).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from typing import Iterator, Sequence

from absl import app
from absl import flags
import numpy as np
import tqdm

SPLITS = ("train", "dev", "test")
FORMATS = ("wiki727k", "jsonl")
# Wiki-727K's documents per split (Koshorek et al. 2018).
WIKI727K_SPLIT_SIZES = {"train": 582_160, "dev": 72_354, "test": 73_232}

SEGMENTS_EXTRA_MEAN = 3.0  # Segments per document: 1 + Poisson(3).
SEGMENT_SENTENCES_MEAN = 13.6
SEGMENT_SENTENCES_SIGMA = 1.0
SENTENCE_WORDS_MIN = 3
SENTENCE_WORDS_MEAN = 20.0
SENTENCE_WORDS_DISPERSION = 4  # The negative binomial's r.
TITLE_WORDS_MAX = 3
LEVEL_2_SHARE = 0.4

VOCABULARY_SIZE = 40_000
# Syllables per word: 1 + Binomial(3, 0.35), 2.05 on average (a little more
# once duplicate short words are dropped), tuned to the ~143 bytes of text per
# sentence of the measured corpus.
SYLLABLE_SHARE = 0.35
ZIPF_OFFSET = 2.7
NUM_TOPICS = 1_000
TOPIC_WORDS = 300
# Topic words are drawn below the commonest ranks, which play the part of
# function words shared by every topic.
TOPIC_MIN_RANK = 300
TOPIC_SHARE = 0.3

# Documents rendered at a time: bounds memory (about 1M words a chunk) while
# keeping numpy's per-call overhead small.
CHUNK_DOCUMENTS = 1_000
FILES_PER_FOLDER = 100
MIN_DOCUMENTS = len(SPLITS)
# `segjax.data.documents.WIKI_HEADER_PREFIX`, which the tests compare with:
# importing `segjax.data` loads the input pipeline (grain), a second per run
# that writing text does not need.
WIKI_HEADER_PREFIX = "========"

_CONSONANTS = np.array(list("bcdfghjklmnprstvz"))
_VOWELS = np.array(list("aeiouy"))
_CODAS = np.array(["", "", "", "n", "r", "s", "l", "t", "m", "k"])


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """Everything word draws need, built once per seed.

  Attributes:
    words: the vocabulary, commonest first.
    cdf: cumulative Zipf-Mandelbrot probabilities over `words`.
    topic_words: (topics, words per topic) vocabulary ids.
    topic_cdf: cumulative Zipf probabilities over a topic's words.
    pieces: the text of a word id `i` at a line position: `pieces[i]` inside
      a line ("word "), `+ V` ending it ("word.\n"), `+ 2V` starting it
      ("Word "), `+ 3V` both ("Word.\n"); V = len(words).
  """

  words: np.ndarray
  cdf: np.ndarray
  topic_words: np.ndarray
  topic_cdf: np.ndarray
  pieces: np.ndarray


@dataclasses.dataclass
class SplitStats:
  """What was written for one split."""

  documents: int = 0
  segments: int = 0
  sentences: int = 0
  bytes: int = 0


def split_sizes(num_documents: int) -> dict[str, int]:
  """Documents per split in Wiki-727K's shares, at least one each."""
  if num_documents < MIN_DOCUMENTS:
    raise ValueError(f"need at least {MIN_DOCUMENTS} documents")
  total = sum(WIKI727K_SPLIT_SIZES.values())
  sizes = {
      split: max(1, round(num_documents * WIKI727K_SPLIT_SIZES[split] / total))
      for split in ("dev", "test")
  }
  return {"train": num_documents - sizes["dev"] - sizes["test"], **sizes}


def split_starts(num_documents: int) -> list[int]:
  """Index of each split's first document; splits are consecutive blocks."""
  sizes = split_sizes(num_documents)
  return [sum(sizes[s] for s in SPLITS[:i]) for i in range(len(SPLITS))]


def zipf_cdf(size: int, offset: float = ZIPF_OFFSET) -> np.ndarray:
  """Cumulative Zipf-Mandelbrot probabilities, p(rank) ~ 1/(rank + offset)."""
  weights = 1.0 / (np.arange(1, size + 1) + offset)
  cdf = np.cumsum(weights)
  return cdf / cdf[-1]


def make_vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
  """`size` distinct lower-case made-up words of 1 to 4 syllables.

  Word lengths do not depend on rank, so frequent words are as long as rare
  ones and the bytes per sentence follow from the words per sentence.
  """
  # Duplicates (mostly among one-syllable words) are dropped, hence the
  # margin.
  candidates = 2 * size + 1_000
  syllables = np.char.add(
      np.char.add(
          rng.choice(_CONSONANTS, (candidates, 4)),
          rng.choice(_VOWELS, (candidates, 4)),
      ),
      rng.choice(_CODAS, (candidates, 4)),
  )
  count = 1 + rng.binomial(3, SYLLABLE_SHARE, candidates)
  syllables[np.arange(4) >= count[:, None]] = ""
  words = syllables[:, 0]
  for i in range(1, 4):
    words = np.char.add(words, syllables[:, i])
  _, first = np.unique(words, return_index=True)
  if len(first) < size:
    raise ValueError(f"could not make {size} distinct words")
  # The draw order, not the alphabet, decides ranks.
  return words[np.sort(first)[:size]]


def make_lexicon(
    rng: np.random.Generator,
    vocabulary_size: int = VOCABULARY_SIZE,
    num_topics: int = NUM_TOPICS,
    topic_words: int = TOPIC_WORDS,
) -> Lexicon:
  """The vocabulary, its topics and the text pieces of every word."""
  words = make_vocabulary(rng, vocabulary_size)
  min_rank = min(TOPIC_MIN_RANK, vocabulary_size // 2)
  topics = rng.integers(min_rank, vocabulary_size, (num_topics, topic_words))
  capitalised = np.char.capitalize(words)
  pieces = np.concatenate(
      [
          np.char.add(words, " "),
          np.char.add(words, ".\n"),
          np.char.add(capitalised, " "),
          np.char.add(capitalised, ".\n"),
      ]
  ).astype(object)
  return Lexicon(
      words=words,
      cdf=zipf_cdf(vocabulary_size),
      topic_words=topics,
      topic_cdf=zipf_cdf(topic_words),
      pieces=pieces,
  )


def document_shapes(
    rng: np.random.Generator, n: int, multi_segment: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
  """Segments per document and sentences per segment of `n` documents.

  Args:
    rng: the generator to draw from.
    n: the number of documents.
    multi_segment: documents that get at least two segments.

  Returns:
    (segments per document, shape (n,); sentences per segment, shape (sum of
    the former,), documents' segments one after another).
  """
  segments = 1 + rng.poisson(SEGMENTS_EXTRA_MEAN, n)
  segments[list(multi_segment)] = np.maximum(segments[list(multi_segment)], 2)
  mu = np.log(SEGMENT_SENTENCES_MEAN) - SEGMENT_SENTENCES_SIGMA**2 / 2
  lengths = rng.lognormal(mu, SEGMENT_SENTENCES_SIGMA, segments.sum())
  return segments, np.maximum(1, np.rint(lengths)).astype(np.int64)


def _starts(counts: np.ndarray) -> np.ndarray:
  """Exclusive prefix sums: where each run of `counts` starts."""
  return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def sentence_words(rng: np.random.Generator, n: int) -> np.ndarray:
  """Words per sentence of `n` sentences."""
  extra = SENTENCE_WORDS_MEAN - SENTENCE_WORDS_MIN
  r = SENTENCE_WORDS_DISPERSION
  return SENTENCE_WORDS_MIN + rng.negative_binomial(r, r / (r + extra), n)


def render_documents(
    rng: np.random.Generator,
    lexicon: Lexicon,
    segments_per_document: np.ndarray,
    sentences_per_segment: np.ndarray,
) -> list[str]:
  """The Wiki-727K text of documents of the given shapes.

  A segment is a title line and its sentence lines; every line's words are
  drawn at once for all documents, and a document's text is a single join of
  word pieces (a word with its trailing space, or period and newline).
  """
  num_words = len(lexicon.words)
  num_segments = len(sentences_per_segment)
  first_segment = _starts(segments_per_document)
  topic_steps = rng.integers(1, len(lexicon.topic_words), num_segments)
  topic_steps[first_segment] = rng.integers(
      0, len(lexicon.topic_words), len(first_segment)
  )
  # Steps in [1, topics) keep neighbouring segments on different topics.
  topics = np.cumsum(topic_steps) % len(lexicon.topic_words)
  levels = 1 + (rng.random(num_segments) < LEVEL_2_SHARE)
  levels[first_segment] = 1

  # Lines: each segment's title, then its sentences.
  lines_per_segment = 1 + sentences_per_segment
  title_line = _starts(lines_per_segment)
  words_per_line = sentence_words(rng, lines_per_segment.sum())
  words_per_line[title_line] = rng.integers(
      1, TITLE_WORDS_MAX + 1, num_segments
  )
  line_segment = np.repeat(np.arange(num_segments), lines_per_segment)
  line_start = _starts(words_per_line)

  word_line = np.repeat(np.arange(len(words_per_line)), words_per_line)
  total = len(word_line)
  ids = np.searchsorted(lexicon.cdf, rng.random(total), side="right")
  in_title = np.zeros(len(words_per_line), bool)
  in_title[title_line] = True
  topical = np.flatnonzero(
      in_title[word_line] | (rng.random(total) < TOPIC_SHARE)
  )
  ranks = np.searchsorted(
      lexicon.topic_cdf, rng.random(len(topical)), side="right"
  )
  ids[topical] = lexicon.topic_words[
      topics[line_segment[word_line[topical]]], ranks
  ]
  ids[line_start + words_per_line - 1] += num_words
  ids[line_start] += 2 * num_words
  pieces = lexicon.pieces[ids]

  prefixes = np.array(
      [f"{WIKI_HEADER_PREFIX},{level}," for level in (1, 2)], object
  )
  pieces = np.insert(pieces, line_start[title_line], prefixes[levels - 1])
  words_per_segment = np.add.reduceat(words_per_line, title_line)
  pieces_per_document = segments_per_document + np.add.reduceat(
      words_per_segment, first_segment
  )
  ends = np.cumsum(pieces_per_document).tolist()
  pieces = pieces.tolist()
  return ["".join(pieces[a:b]) for a, b in zip([0] + ends[:-1], ends)]


def jsonl_line(text: str, sentences_per_segment: Sequence[int]) -> str:
  """A document's JSONL line from its Wiki-727K text (headers dropped)."""
  lines = text.split("\n")
  segments, position = [], 0
  for length in sentences_per_segment:
    segments.append(lines[position + 1 : position + 1 + length])
    position += 1 + length
  return json.dumps({"segments": segments}) + "\n"


def document_path(split: str, index: int, num_in_split: int) -> str:
  """Where the `index`-th document of a split goes, relative to the output.

  Zero padding wide enough for the split keeps the sorted order of paths
  (the readers' order) the order of the documents.
  """
  top = max(2, len(str((num_in_split - 1) // FILES_PER_FOLDER**2)))
  name = max(7, len(str(num_in_split - 1)))
  return (
      f"{split}/{index // FILES_PER_FOLDER**2:0{top}d}/"
      f"{index // FILES_PER_FOLDER % FILES_PER_FOLDER:02d}/doc_{index:0{name}d}"
  )


def check_output(path: pathlib.Path) -> str | None:
  """Why `path` cannot take a new corpus, or None if it can."""
  if path.exists() and not path.is_dir():
    return "exists and is not a folder"
  if path.is_dir() and any(path.iterdir()):
    return "exists and is not empty"
  return None


def _document_splits(num_documents: int) -> Iterator[tuple[str, int]]:
  """(split, index within the split) of every document, in order."""
  for split, size in split_sizes(num_documents).items():
    for index in range(size):
      yield split, index


def generate(
    output: pathlib.Path,
    num_documents: int,
    seed: int = 0,
    output_format: str = "wiki727k",
    progress: bool = False,
) -> dict[str, SplitStats]:
  """Writes a corpus of `num_documents` documents to `output`.

  Raises:
    ValueError: fewer than 3 documents, an unknown format, or an output
      that exists and is not an empty folder.
  """
  if output_format not in FORMATS:
    raise ValueError(f"unknown format {output_format!r}")
  problem = check_output(output)
  if problem:
    raise ValueError(f"{output}: {problem}")
  sizes = split_sizes(num_documents)
  # Independent streams: the vocabulary does not shift with the document
  # count, nor one chunk's words with another's.
  lexicon_seed, shape_seed, chunk_seed = np.random.SeedSequence(seed).spawn(3)
  lexicon = make_lexicon(np.random.default_rng(lexicon_seed))
  segments, lengths = document_shapes(
      np.random.default_rng(shape_seed),
      num_documents,
      multi_segment=split_starts(num_documents),
  )
  segment_starts = _starts(segments)
  num_chunks = -(-num_documents // CHUNK_DOCUMENTS)
  stats = {split: SplitStats() for split in SPLITS}
  places = _document_splits(num_documents)
  output.mkdir(parents=True, exist_ok=True)
  jsonl_files = (
      {s: open(output / f"{s}.jsonl", "wb") for s in SPLITS}
      if output_format == "jsonl"
      else {}
  )
  try:
    with tqdm.tqdm(
        total=num_documents, unit="doc", disable=not progress
    ) as bar:
      for chunk, rng_seed in enumerate(chunk_seed.spawn(num_chunks)):
        first = chunk * CHUNK_DOCUMENTS
        last = min(first + CHUNK_DOCUMENTS, num_documents)
        segment_range = slice(
            segment_starts[first],
            segment_starts[last - 1] + segments[last - 1],
        )
        texts = render_documents(
            np.random.default_rng(rng_seed),
            lexicon,
            segments[first:last],
            lengths[segment_range],
        )
        chunk_lines = {s: [] for s in jsonl_files}
        for doc, text in zip(range(first, last), texts):
          split, index = next(places)
          doc_lengths = lengths[
              segment_starts[doc] : segment_starts[doc] + segments[doc]
          ]
          if jsonl_files:
            data = jsonl_line(text, doc_lengths.tolist()).encode()
            chunk_lines[split].append(data)
          else:
            data = text.encode()
            path = output / document_path(split, index, sizes[split])
            if index % FILES_PER_FOLDER == 0:
              path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
          split_stats = stats[split]
          split_stats.documents += 1
          split_stats.segments += int(segments[doc])
          split_stats.sentences += int(doc_lengths.sum())
          split_stats.bytes += len(data)
        for split, lines in chunk_lines.items():
          jsonl_files[split].write(b"".join(lines))
        bar.update(last - first)
  finally:
    for file in jsonl_files.values():
      file.close()
  return stats


def summary(stats: dict[str, SplitStats], seconds: float) -> str:
  """The one-line report of a run."""
  parts = [
      f"{split} {s.documents:,} documents {s.segments:,} segments "
      f"{s.sentences:,} sentences {s.bytes:,} bytes"
      for split, s in stats.items()
  ]
  return f"make_synthetic_corpus: {'; '.join(parts)} ({seconds:.1f} s)"


def define_flags() -> None:
  """Defines the command line's flags.

  Only the program defines them: a test importing this module alongside
  `segjax.segment`, which has a `--format` too, would otherwise fail on the
  duplicate flag.
  """
  flags.DEFINE_string(
      "output", None, "Folder to create (or an empty one) for the corpus."
  )
  flags.DEFINE_integer(
      "documents", None, "Number of documents, over all splits (at least 3)."
  )
  flags.DEFINE_integer("seed", 0, "Random seed; same seed, same bytes.")
  flags.DEFINE_enum(
      "format",
      "wiki727k",
      FORMATS,
      "wiki727k: a file per document in split folders; jsonl: a file per"
      " split.",
  )
  flags.mark_flags_as_required(["output", "documents"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad flag is one line naming it."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"make_synthetic_corpus: error: {str(e).splitlines()[0]}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  options = flags.FLAGS
  if options.documents < MIN_DOCUMENTS:
    sys.exit(
        f"make_synthetic_corpus: error: --documents={options.documents}: need"
        f" at least {MIN_DOCUMENTS} (one per split)"
    )
  output = pathlib.Path(options.output)
  problem = check_output(output)
  if problem:
    sys.exit(f"make_synthetic_corpus: error: --output={output}: {problem}")
  start = time.perf_counter()
  stats = generate(
      output, options.documents, options.seed, options.format, progress=True
  )
  print(summary(stats, time.perf_counter() - start))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
