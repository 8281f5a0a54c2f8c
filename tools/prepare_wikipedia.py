r"""Converts a MediaWiki XML dump into the Wiki-727K layout.

Usage:

  python tools/prepare_wikipedia.py \
      --input enwiki-latest-pages-articles1.xml.bz2 --output /data/wiki

The dump (`.xml` or `.xml.bz2`) is streamed page by page in constant memory.
The output follows Wiki-727K (Koshorek et al., 2018, "Text Segmentation as a
Supervised Learning Task"):

  OUTPUT/{train,dev,test}/<page_id>   one article a file, UTF-8, no extension
  OUTPUT/stats.json                   the counts printed at the end

Each file is a sequence of segments. A segment starts with a header line
`========,<level>,<title>.` followed by its sentences, one a line. Titles may
contain commas; readers take the level after the first comma. The header
line is `segjax.data.documents.wiki727k_header`'s, and
`segjax.data.read_wiki727k_dir` reads the output back.

Conventions:
  * Sections are segments. The text before the first heading is a segment
    titled `preface` at level 1, as in Wiki-727K.
  * Level = number of `=` in the wikitext heading minus one: `== X ==` is
    level 1, `=== X ===` level 2, and so on (`= X =`, which articles should
    not use, is clamped to level 1).
  * Reference-type sections (References, External links, See also, Further
    reading, Notes, Bibliography, Sources, Citations, ...) are dropped with all
    their subsections.
  * Templates, <ref>s, tables, files/images, galleries, categories,
    interlanguage links, HTML comments and math/code/pre blocks are dropped;
    wikilinks become their text, external links their title (bare URLs
    vanish), bold/italic marks are stripped.
  * List items (lines starting with `*`, `#`, `;` or `:`) are dropped rather
    than written as `***LIST***`: Wiki-727K readers discard those lines anyway.
  * Sentences come from pysbd, one paragraph at a time so that no sentence
    spans two paragraphs; whitespace is collapsed and fragments with fewer
    than two word characters are dropped.
  * Defaults follow the paper: segments with one sentence are dropped
    (`--min_sentences 2`) and so are articles left with fewer than three
    segments (`--min_segments 3`).
  * Redirects, disambiguation and set-index pages and pages outside the
    article namespace (ns 0) are skipped.
  * The split depends on the page id only (a SHA-256 hash mapped into
    [0, 1)), so an article stays in the same split whatever else the dump
    holds.
"""

import argparse
import bz2
import collections
import dataclasses
import hashlib
import itertools
import json
import pathlib
import re
import shutil
import sys
import time
from typing import Iterator, Sequence
import xml.etree.ElementTree as ET

import mwparserfromhell
from mwparserfromhell import nodes as mw_nodes
import pysbd

from segjax.data import documents

SPLITS = ("train", "dev", "test")
STATS_FILE = "stats.json"
PREFACE_TITLE = "preface"
ARTICLE_NAMESPACE = 0
MIN_WORD_CHARS = 2

# Wiki-727K kept prose only; these sections are link and citation lists.
REFERENCE_SECTIONS = frozenset(
    {
        "bibliography",
        "citations",
        "external links",
        "footnotes",
        "further reading",
        "notes",
        "notes and references",
        "references",
        "references and notes",
        "see also",
        "sources",
        "works cited",
    }
)

# Templates that mark a page as a disambiguation or set-index page; any
# template named "... disambiguation" counts too.
DISAMBIGUATION_TEMPLATES = frozenset(
    {
        "disambiguation",
        "disambig",
        "disamb",
        "dab",
        "geodis",
        "hndis",
        "set index article",
        "set index",
        "sia",
        "surname",
        "given name",
        "ship index",
        "mountain index",
        "road index",
        "sport index",
        "lake index",
    }
)

# Tags whose content is not prose (or is a table, whose cells are not
# sentences); every other tag keeps its content and loses its markup.
DROPPED_TAGS = frozenset(
    {
        "ref",
        "references",
        "gallery",
        "math",
        "chem",
        "ce",
        "code",
        "pre",
        "source",
        "syntaxhighlight",
        "timeline",
        "imagemap",
        "score",
        "hiero",
        "graph",
        "mapframe",
        "maplink",
        "templatedata",
        "table",
    }
)
LIST_MARKUP = frozenset("*#;:")
# Link namespaces that render as media or page metadata rather than text.
HIDDEN_LINK_NAMESPACES = frozenset({"file", "image", "media", "category"})
# An unpiped link with such a prefix, e.g. [[fr:Anarchisme]], is an
# interlanguage link shown in the sidebar, not in the text.
LANGUAGE_PREFIX = re.compile(r"[a-z]{2,3}(-[a-z]+)*")

# Sentinel that marks a list line while rendering; XML 1.0 text cannot hold it.
_LIST_MARK = "\x00"
# Lines left over from markup the parser could not structure (broken tables).
_TABLE_RESIDUE = re.compile(r"^\s*(\{\||\|\}|\|-|\||!)")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_BOLD_ITALIC = re.compile(r"'{2,}")
# HTML tags the parser left as text because they were not balanced.
_STRAY_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
# Dropped templates leave debris such as "(; singular alga )", "(ANSI, )",
# "between, and" or "name,, and"; these tidy the punctuation around them.
_PUNCT_AFTER_OPEN = re.compile(r"\(\s*[,;:]\s*")
_PUNCT_BEFORE_CLOSE = re.compile(r"\s*[,;:]\s*\)")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_SPACE_INSIDE_PARENS = re.compile(r"(?<=\()\s+|\s+(?=\))")
_PUNCT_RUN = re.compile(r"([,;:])(?:\s*[,;:])+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_WHITESPACE = re.compile(r"\s+")
_WORD_CHAR = re.compile(r"\w")
_MARKUP_RESIDUE = ("{{", "}}", "[[", "]]", "{|", "|}", "<ref", "</ref")


class ConversionError(Exception):
  """A problem with the input or output that ends the conversion."""


@dataclasses.dataclass(frozen=True)
class Page:
  """One <page> of the dump, reduced to what the conversion needs."""

  page_id: int
  title: str
  namespace: int
  is_redirect: bool
  text: str


@dataclasses.dataclass(frozen=True)
class Segment:
  """A section of an article: its header fields and its sentences."""

  level: int
  title: str
  sentences: tuple[str, ...]


# ---------------------------------------------------------------------------
# Reading the dump.
# ---------------------------------------------------------------------------


def _open_dump(path: pathlib.Path):
  """Opens a `.xml` or `.xml.bz2` dump for binary streaming."""
  if path.suffix == ".bz2":
    return bz2.open(path, "rb")
  return open(path, "rb")


def _export_namespace(path: pathlib.Path, root_tag: str) -> str:
  """Returns the `{uri}` prefix of the export schema, whatever its version."""
  if not root_tag.endswith("mediawiki"):
    raise ConversionError(
        f"{path}: root element is <{root_tag}>, not a MediaWiki export"
    )
  return root_tag[: -len("mediawiki")]


def _page_from_element(elem: ET.Element, ns: str) -> Page:
  """Builds a Page from a complete <page> element."""
  text = elem.findtext(f"{ns}revision/{ns}text") or ""
  # Old dumps have no <redirect> element; the wikitext still says so.
  is_redirect = (
      elem.find(f"{ns}redirect") is not None
      or text.lstrip()[:9].upper() == "#REDIRECT"
  )
  return Page(
      page_id=int(elem.findtext(f"{ns}id")),
      title=elem.findtext(f"{ns}title") or "",
      namespace=int(elem.findtext(f"{ns}ns") or ARTICLE_NAMESPACE),
      is_redirect=is_redirect,
      text=text,
  )


def iter_pages(path: pathlib.Path) -> Iterator[Page]:
  """Yields the pages of a dump, keeping only the current page in memory.

  Args:
    path: a MediaWiki XML export, optionally bz2-compressed.

  Yields:
    Pages in dump order.

  Raises:
    ConversionError: the file is missing, unreadable or not valid XML; the
      message names the file (and the line, for XML errors).
  """
  try:
    with _open_dump(path) as stream:
      ns = None
      root = None
      for event, elem in ET.iterparse(stream, events=("start", "end")):
        if root is None:
          root, ns = elem, _export_namespace(path, elem.tag)
        elif event == "end" and elem.tag == f"{ns}page":
          yield _page_from_element(elem, ns)
          # Finished pages stay attached to the root unless removed.
          root.clear()
  except ET.ParseError as e:
    # The message ends with "line L, column C".
    raise ConversionError(f"{path}: invalid XML: {e}") from e
  except (OSError, EOFError) as e:
    raise ConversionError(f"{path}: cannot read ({e})") from e


# ---------------------------------------------------------------------------
# Wikitext to plain text.
# ---------------------------------------------------------------------------


def _normalize_name(name) -> str:
  """Lower-cases a template or section name and collapses its spacing."""
  return _WHITESPACE.sub(" ", str(name).replace("_", " ")).strip().lower()


def is_disambiguation(title: str, wikicode) -> bool:
  """Whether a page is a disambiguation or set-index page."""
  if title.rstrip().endswith("(disambiguation)"):
    return True
  for template in wikicode.ifilter_templates(recursive=False):
    name = _normalize_name(template.name).removeprefix("template:")
    if name in DISAMBIGUATION_TEMPLATES or name.endswith(" disambiguation"):
      return True
  return False


def _render_link(link: mw_nodes.Wikilink) -> str:
  """Returns the text a reader sees for a wikilink ('' for media, etc.)."""
  target = _render(link.title).strip()
  prefix, has_prefix, _ = target.partition(":")
  if has_prefix:
    if _normalize_name(prefix) in HIDDEN_LINK_NAMESPACES:
      return ""
    if link.text is None and LANGUAGE_PREFIX.fullmatch(prefix):
      return ""
  text = _render(link.text) if link.text is not None else ""
  return text if text.strip() else target.lstrip(":#")


def _render_tag(tag: mw_nodes.Tag) -> str:
  """Returns the visible prose of a tag, or '' for non-prose tags."""
  name = str(tag.tag).strip().lower()
  if tag.wiki_markup and tag.wiki_markup in LIST_MARKUP:
    return _LIST_MARK
  if name in DROPPED_TAGS:
    return ""
  if name == "hr":
    return "\n"
  if name == "br":
    return " "
  return _render(tag.contents) if tag.contents is not None else ""


def _render(wikicode) -> str:
  """Renders wikicode to text; list lines hold `_LIST_MARK`."""
  parts = []
  for node in wikicode.nodes:
    if isinstance(node, mw_nodes.Text):
      parts.append(node.value)
    elif isinstance(node, mw_nodes.Wikilink):
      parts.append(_render_link(node))
    elif isinstance(node, mw_nodes.ExternalLink):
      parts.append(_render(node.title) if node.title is not None else "")
    elif isinstance(node, mw_nodes.Tag):
      parts.append(_render_tag(node))
    elif isinstance(node, mw_nodes.HTMLEntity):
      parts.append(node.normalize())
    # Templates, comments, arguments and stray headings render to nothing.
  return "".join(parts)


def _clean_line(line: str) -> str:
  """Removes markup left in a rendered line and collapses its whitespace."""
  for pattern in (_MAGIC_WORD, _BOLD_ITALIC, _STRAY_TAG):
    line = pattern.sub("", line)
  line = _PUNCT_AFTER_OPEN.sub("(", line)
  line = _PUNCT_BEFORE_CLOSE.sub(")", line)
  line = _EMPTY_PARENS.sub("", line)
  line = _SPACE_INSIDE_PARENS.sub("", line)
  line = _PUNCT_RUN.sub(r"\1", line)
  line = _WHITESPACE.sub(" ", line).strip()
  return _SPACE_BEFORE_PUNCT.sub(r"\1", line)


def paragraphs(wikicode) -> list[str]:
  """Returns the prose paragraphs of wikicode, lists and tables removed."""
  result = []
  for line in _render(wikicode).split("\n"):
    if _LIST_MARK in line or _TABLE_RESIDUE.match(line):
      continue
    line = _clean_line(line)
    if line:
      result.append(line)
  return result


def heading_title(heading: mw_nodes.Heading) -> str:
  """Returns a heading's visible title on one line."""
  return _clean_line(_render(heading.title))


def is_sentence(text: str) -> bool:
  """Whether a split fragment is a sentence and not markup debris."""
  if len(_WORD_CHAR.findall(text)) < MIN_WORD_CHARS:
    return False
  return not any(residue in text for residue in _MARKUP_RESIDUE)


# ---------------------------------------------------------------------------
# Articles to segments.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _RawSection:
  """A section before sentence splitting: header fields and body nodes."""

  level: int
  title: str
  nodes: list


def raw_sections(wikicode) -> list[_RawSection]:
  """Splits an article at its top-level headings, lead section first."""
  sections = [_RawSection(1, PREFACE_TITLE, [])]
  for node in wikicode.nodes:
    if isinstance(node, mw_nodes.Heading):
      sections.append(
          _RawSection(max(1, node.level - 1), heading_title(node), [])
      )
    else:
      sections[-1].nodes.append(node)
  return sections


def without_reference_sections(
    sections: Sequence[_RawSection], counts: collections.Counter
) -> list[_RawSection]:
  """Drops reference-type sections and their subsections."""
  kept = []
  dropped_level = None
  for section in sections:
    if dropped_level is not None and section.level > dropped_level:
      continue
    dropped_level = None
    if _normalize_name(section.title) in REFERENCE_SECTIONS:
      dropped_level = section.level
      counts["sections_dropped_reference"] += 1
      continue
    kept.append(section)
  return kept


class Converter:
  """Turns an article's wikitext into Wiki-727K segments."""

  def __init__(self, min_sentences: int):
    self._min_sentences = min_sentences
    self._segmenter = pysbd.Segmenter(language="en", clean=False)

  def sentences(self, section: _RawSection) -> tuple[str, ...]:
    """Splits a section body into sentences, one paragraph at a time."""
    body = mwparserfromhell.wikicode.Wikicode(section.nodes)
    result = []
    for paragraph in paragraphs(body):
      for sentence in self._segmenter.segment(paragraph):
        sentence = _WHITESPACE.sub(" ", sentence).strip()
        if is_sentence(sentence):
          result.append(sentence)
    return tuple(result)

  def segments(self, wikicode, counts: collections.Counter) -> list[Segment]:
    """Returns the segments kept from an article, counting those dropped."""
    result = []
    for section in without_reference_sections(raw_sections(wikicode), counts):
      sentences = self.sentences(section)
      if len(sentences) < self._min_sentences:
        counts["sections_dropped_too_short"] += 1
        continue
      result.append(
          Segment(section.level, section.title or "untitled", sentences)
      )
    return result


def format_article(segments: Sequence[Segment]) -> str:
  """Returns the Wiki-727K text of an article (`segjax.data` reads it)."""
  lines = []
  for segment in segments:
    lines.append(documents.wiki727k_header(segment.level, segment.title))
    lines.extend(segment.sentences)
  return "\n".join(lines) + "\n"


def split_of(page_id: int, dev_fraction: float, test_fraction: float) -> str:
  """Returns the split of a page from a stable hash of its id."""
  digest = hashlib.sha256(str(page_id).encode("ascii")).digest()
  position = int.from_bytes(digest[:8], "big") / 2**64
  if position < test_fraction:
    return "test"
  if position < test_fraction + dev_fraction:
    return "dev"
  return "train"


# ---------------------------------------------------------------------------
# The conversion.
# ---------------------------------------------------------------------------


def prepare_output(output: pathlib.Path, overwrite: bool) -> None:
  """Creates the split folders, refusing to mix with an earlier output.

  With `overwrite`, only what this tool writes (the split folders and
  stats.json) is removed, so a mistyped `--output` cannot wipe other files.
  """
  if output.exists() and not output.is_dir():
    raise ConversionError(f"{output}: exists and is not a directory")
  if output.is_dir() and any(output.iterdir()):
    if not overwrite:
      raise ConversionError(
          f"{output}: directory is not empty; pass --overwrite to replace "
          "an earlier conversion"
      )
    for split in SPLITS:
      shutil.rmtree(output / split, ignore_errors=True)
    (output / STATS_FILE).unlink(missing_ok=True)
  for split in SPLITS:
    (output / split).mkdir(parents=True, exist_ok=True)


def classify(
    page: Page,
    converter: Converter,
    min_segments: int,
    counts: collections.Counter,
) -> tuple[str | None, list[Segment]]:
  """Returns why a page is skipped (or None) and the segments of an article.

  Section drops are counted for every article examined, including those then
  skipped for having too few segments.
  """
  # Namespace and redirect are known without parsing the wikitext.
  if page.namespace != ARTICLE_NAMESPACE:
    return "namespace", []
  if page.is_redirect:
    return "redirect", []
  wikicode = mwparserfromhell.parse(page.text)
  if is_disambiguation(page.title, wikicode):
    return "disambiguation", []
  segments = converter.segments(wikicode, counts)
  if len(segments) < min_segments:
    return "too_few_segments", []
  return None, segments


def convert(args: argparse.Namespace) -> dict:
  """Converts the dump named by `args`, writes the files and the stats.

  Args:
    args: the parsed command-line flags.

  Returns:
    The statistics also written to `stats.json`.

  Raises:
    ConversionError: bad input, bad flags or an output folder in the way.
  """
  input_path = pathlib.Path(args.input)
  output = pathlib.Path(args.output)
  # Check the input first so that a typo, or a file that is not a dump, does
  # not leave empty folders: reading up to the first page finds either.
  if not input_path.is_file():
    raise ConversionError(f"{input_path}: no such file")
  pages = iter_pages(input_path)
  first = next(pages, None)
  prepare_output(output, args.overwrite)
  converter = Converter(args.min_sentences)
  counts = collections.Counter()
  per_split = {split: collections.Counter() for split in SPLITS}
  for page in itertools.chain([first] if first else [], pages):
    counts["pages_seen"] += 1
    reason, segments = classify(page, converter, args.min_segments, counts)
    if reason is not None:
      counts[f"skipped_{reason}"] += 1
      continue
    split = split_of(page.page_id, args.dev_fraction, args.test_fraction)
    (output / split / str(page.page_id)).write_text(
        format_article(segments), encoding="utf-8"
    )
    per_split[split].update(
        articles=1,
        segments=len(segments),
        sentences=sum(len(s.sentences) for s in segments),
    )
    counts["articles_written"] += 1
    if counts["articles_written"] == args.max_articles:
      break
  stats = build_stats(args, counts, per_split)
  (output / STATS_FILE).write_text(
      json.dumps(stats, indent=2) + "\n", encoding="utf-8"
  )
  return stats


def build_stats(
    args: argparse.Namespace,
    counts: collections.Counter,
    per_split: dict[str, collections.Counter],
) -> dict:
  """Gathers the counts (all keys present, zeros included) and the options."""
  return {
      # The file name only, so that stats do not depend on where it lives.
      "input": pathlib.Path(args.input).name,
      "options": {
          "min_sentences": args.min_sentences,
          "min_segments": args.min_segments,
          "dev_fraction": args.dev_fraction,
          "test_fraction": args.test_fraction,
          "max_articles": args.max_articles,
      },
      "pages_seen": counts["pages_seen"],
      "articles_written": counts["articles_written"],
      "skipped": {
          reason: counts[f"skipped_{reason}"]
          for reason in (
              "redirect",
              "disambiguation",
              "namespace",
              "too_few_segments",
          )
      },
      "sections_dropped": {
          "reference_type": counts["sections_dropped_reference"],
          "too_short": counts["sections_dropped_too_short"],
      },
      "splits": {
          split: {
              key: per_split[split][key]
              for key in ("articles", "segments", "sentences")
          }
          for split in SPLITS
      },
  }


def format_stats(stats: dict) -> str:
  """Returns the statistics as a short human-readable report."""
  skipped = ", ".join(f"{k} {v}" for k, v in stats["skipped"].items())
  dropped = ", ".join(f"{k} {v}" for k, v in stats["sections_dropped"].items())
  lines = [
      f"pages seen: {stats['pages_seen']}",
      f"articles written: {stats['articles_written']}",
      f"pages skipped: {skipped}",
      f"sections dropped: {dropped}",
  ]
  for split, c in stats["splits"].items():
    lines.append(
        f"{split}: {c['articles']} articles, {c['segments']} "
        f"segments, {c['sentences']} sentences"
    )
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------


def _fraction(value: str) -> float:
  """Parses a flag value in [0, 1]."""
  fraction = float(value)
  if not 0.0 <= fraction <= 1.0:
    raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
  return fraction


def _count(value: str) -> int:
  """Parses a non-negative integer flag value."""
  count = int(value)
  if count < 0:
    raise argparse.ArgumentTypeError(f"{value} is negative")
  return count


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """Parses and checks the command-line flags."""
  parser = argparse.ArgumentParser(
      prog="prepare_wikipedia",
      description="Convert a MediaWiki XML dump to the Wiki-727K layout.",
  )
  parser.add_argument(
      "--input", required=True, help="MediaWiki XML dump, .xml or .xml.bz2"
  )
  parser.add_argument(
      "--output",
      required=True,
      help="folder to create train/ dev/ test/ and " "stats.json in",
  )
  parser.add_argument(
      "--min_sentences",
      type=_count,
      default=2,
      help="drop sections with fewer sentences",
  )
  parser.add_argument(
      "--min_segments",
      type=_count,
      default=3,
      help="drop articles left with fewer segments",
  )
  parser.add_argument("--dev_fraction", type=_fraction, default=0.1)
  parser.add_argument("--test_fraction", type=_fraction, default=0.1)
  parser.add_argument(
      "--max_articles",
      type=_count,
      default=0,
      help="stop after writing this many articles (0 = all)",
  )
  parser.add_argument(
      "--overwrite",
      action="store_true",
      help="replace the output of an earlier conversion",
  )
  args = parser.parse_args(argv)
  if args.dev_fraction + args.test_fraction > 1.0:
    parser.error("--dev_fraction + --test_fraction must not exceed 1")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the conversion; returns the process exit code."""
  args = parse_args(argv)
  start = time.perf_counter()
  try:
    stats = convert(args)
  except ConversionError as e:
    print(f"prepare_wikipedia: error: {e}", file=sys.stderr)
    return 1
  print(format_stats(stats))
  print(f"took {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
