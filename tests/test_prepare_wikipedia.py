"""Tests for tools/prepare_wikipedia.py: a tiny dump and the real excerpt."""

import json
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from e2e_helpers import load_tool
from segjax import data

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOL = REPO_ROOT / "tools" / "prepare_wikipedia.py"
# CI clones the repository elsewhere and lays shared/ beside it.
EXCERPT = (
    REPO_ROOT.parent
    / "shared"
    / "data"
    / "enwiki-latest-pages-articles1.xml-p000000010p000030302-"
    "shortened.bz2"
)
HEADER = re.compile(r"^========,([1-9]\d*),(.+)\.$")
MARKUP_RESIDUE = ("{{", "}}", "[[", "]]", "<ref", "'''", "{|", "|}")
SPLITS = ("train", "dev", "test")


pw = load_tool("prepare_wikipedia")


def _run(input_path, output, *flags):
  """Runs the tool in-process; returns its exit code."""
  return pw.main(
      ["--input", str(input_path), "--output", str(output), *map(str, flags)]
  )


def _articles(output):
  """Maps split -> {file name: text} for a converted folder."""
  return {
      split: {
          p.name: p.read_text(encoding="utf-8")
          for p in sorted((output / split).iterdir())
      }
      for split in SPLITS
  }


def _segments(text):
  """Parses a Wiki-727K article into [(level, title, sentences)]."""
  segments = []
  for line in text.splitlines():
    match = HEADER.match(line)
    if match:
      segments.append((int(match[1]), match[2], []))
    else:
      segments[-1][2].append(line)
  return segments


# ---------------------------------------------------------------------------
# A tiny hand-written dump: one page per rule.
# ---------------------------------------------------------------------------

_TINY_PAGES = {
    1: ("Old name", 0, '<redirect title="Alpha" />', "#REDIRECT [[Alpha]]"),
    2: (
        "Thing (disambiguation)",
        0,
        "",
        "'''Thing''' may refer to:\n* [[Thing (band)]]\n* [[Thing (film)]]",
    ),
    3: (
        "Beta",
        0,
        "",
        "'''Beta''' may be a letter.\n* [[Beta (letter)]]\n{{disambig}}",
    ),
    4: (
        "Talk:Alpha",
        1,
        "",
        "This talk page has prose. It has two sentences.\n== A ==\n"
        "More prose is here. And here too.\n== B ==\nStill more. Yes.",
    ),
    5: (
        "Alpha",
        0,
        "",
        """\
        {{Infobox thing|name=Alpha}}
        '''Alpha''' is a [[test subject|subject]] of tests.<ref>A {{cite}}\
</ref> It is used in [[software testing]].<ref name="b" />
        [[File:Alpha.png|thumb|A caption that is not prose.]]
        <!-- An editor's comment. -->
        == History ==
        Alpha was first described in 1990. It became popular &amp; useful \
([http://example.com a site]).
        {| class="wikitable"
        |-
        | Cell one || Cell two
        |}
        * A list item that is dropped.
        # A numbered item that is dropped.
        : An indented line that is dropped.
        === Early [[years]] ===
        In the early years, Alpha was small. It grew slowly. <math>x^2</math>\
It was ''rarely'' used.
        == Short ==
        Only one sentence here.
        == References ==
        Prose under references is dropped. So is this.
        === Sub ===
        A subsection of references is dropped too. Really.
        == External links ==
        * [http://example.com Example]
        [[Category:Tests]]
        [[fr:Alpha]]
        """,
    ),
    6: (
        "Gamma",
        0,
        "",
        "Gamma is short. It has two sentences.\n== Only ==\n"
        "One section follows. It also has two.",
    ),
}


def _tiny_dump(path, namespace_version="0.11"):
  """Writes the tiny dump to `path`, using a given export schema version."""
  pages = []
  for page_id, (title, ns, redirect, text) in _TINY_PAGES.items():
    text = textwrap.dedent(text).replace("&", "&amp;").replace("<", "&lt;")
    pages.append(
        f"<page><title>{title}</title><ns>{ns}</ns><id>{page_id}</id>"
        f"{redirect}<revision><id>{page_id}00</id>"
        f'<text xml:space="preserve">{text}</text></revision></page>'
    )
  path.write_text(
      f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-'
      f'{namespace_version}/" version="{namespace_version}">\n'
      "<siteinfo><sitename>Test</sitename></siteinfo>\n"
      + "\n".join(pages)
      + "\n</mediawiki>\n",
      encoding="utf-8",
  )
  return path


@pytest.fixture(name="tiny")
def fixture_tiny(tmp_path):
  """Converts the tiny dump; returns the output folder."""
  output = tmp_path / "out"
  dump = _tiny_dump(tmp_path / "tiny.xml")
  assert _run(dump, output, "--dev_fraction", 0, "--test_fraction", 0) == 0
  return output


def test_tiny_dump_writes_only_the_article(tiny):
  names = {split: sorted(texts) for split, texts in _articles(tiny).items()}
  assert names == {"train": ["5"], "dev": [], "test": []}


def test_tiny_article_text(tiny):
  assert (tiny / "train" / "5").read_text(encoding="utf-8") == (
      "========,1,preface.\n"
      "Alpha is a subject of tests.\n"
      "It is used in software testing.\n"
      "========,1,History.\n"
      "Alpha was first described in 1990.\n"
      "It became popular & useful (a site).\n"
      "========,2,Early years.\n"
      "In the early years, Alpha was small.\n"
      "It grew slowly.\n"
      "It was rarely used.\n"
  )


def test_tiny_output_reads_back_through_segjax(tiny):
  result = data.read_wiki727k_dir(tiny / "train")
  assert result.num_skipped == 0
  assert result.documents == [
      data.Document(
          segments=[
              [
                  "Alpha is a subject of tests.",
                  "It is used in software testing.",
              ],
              [
                  "Alpha was first described in 1990.",
                  "It became popular & useful (a site).",
              ],
              [
                  "In the early years, Alpha was small.",
                  "It grew slowly.",
                  "It was rarely used.",
              ],
          ],
          name="5",
      )
  ]


def test_headers_with_commas_and_levels_read_back(tmp_path):
  segments = [
      pw.Segment(1, "preface", ("One.", "Two.")),
      pw.Segment(2, "Cats, dogs, and 3,000 mice", ("Three.", "Four.")),
  ]
  text = pw.format_article(segments)
  assert text.splitlines()[3] == "========,2,Cats, dogs, and 3,000 mice."
  (tmp_path / "7").write_text(text, encoding="utf-8")
  (document,) = data.read_wiki727k_dir(tmp_path).documents
  assert document.segments == (("One.", "Two."), ("Three.", "Four."))
  with pytest.raises(ValueError, match="one non-empty line"):
    pw.format_article([pw.Segment(1, "Two\nlines", ("One.",))])


def test_tiny_stats_count_each_rule(tiny):
  stats = json.loads((tiny / "stats.json").read_text(encoding="utf-8"))
  assert stats["pages_seen"] == 6
  assert stats["articles_written"] == 1
  assert stats["skipped"] == {
      "redirect": 1,
      "disambiguation": 2,
      "namespace": 1,
      "too_few_segments": 1,
  }
  # References (with its subsection) and External links; Short.
  assert stats["sections_dropped"] == {"reference_type": 2, "too_short": 1}
  assert stats["splits"]["train"] == {
      "articles": 1,
      "segments": 3,
      "sentences": 7,
  }


def test_min_flags_change_what_is_kept(tmp_path):
  dump = _tiny_dump(tmp_path / "tiny.xml")
  assert (
      _run(
          dump,
          tmp_path / "out",
          "--dev_fraction",
          0,
          "--test_fraction",
          0,
          "--min_sentences",
          1,
          "--min_segments",
          2,
      )
      == 0
  )
  articles = _articles(tmp_path / "out")["train"]
  assert sorted(articles) == ["5", "6"]
  titles = [title for _, title, _ in _segments(articles["5"])]
  assert titles == ["preface", "History", "Early years", "Short"]


def test_xml_with_other_schema_version_and_bz2(tmp_path):
  import bz2  # pylint: disable=g-import-not-at-top

  plain = _tiny_dump(tmp_path / "tiny.xml", namespace_version="0.10")
  packed = tmp_path / "tiny.xml.bz2"
  packed.write_bytes(bz2.compress(plain.read_bytes()))
  assert (
      _run(packed, tmp_path / "out", "--dev_fraction", 0, "--test_fraction", 0)
      == 0
  )
  assert sorted(_articles(tmp_path / "out")["train"]) == ["5"]


# ---------------------------------------------------------------------------
# Errors and the output folder.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, line",
    [
        (
            '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">\n'
            "<page><title>A</title>\n",
            3,
        ),
        (
            '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/">\n'
            "<page><title>A</page>\n</mediawiki>\n",
            2,
        ),
    ],
)
def test_malformed_xml_names_file_and_line(tmp_path, capsys, content, line):
  dump = tmp_path / "broken.xml"
  dump.write_text(content, encoding="utf-8")
  assert _run(dump, tmp_path / "out") != 0
  error = capsys.readouterr().err
  assert f"{dump}: invalid XML" in error
  assert f"line {line}," in error


def test_not_a_mediawiki_export(tmp_path, capsys):
  dump = tmp_path / "other.xml"
  dump.write_text("<html><body/></html>", encoding="utf-8")
  assert _run(dump, tmp_path / "out") != 0
  assert f"{dump}: root element is <html>" in capsys.readouterr().err


def test_corrupt_bz2_names_file(tmp_path, capsys):
  dump = tmp_path / "corrupt.xml.bz2"
  dump.write_bytes(b"not bzip2 data")
  assert _run(dump, tmp_path / "out") != 0
  assert str(dump) in capsys.readouterr().err


def test_missing_input_exits_nonzero_from_the_command_line(tmp_path):
  missing = tmp_path / "missing.xml.bz2"
  result = subprocess.run(
      [
          sys.executable,
          str(TOOL),
          "--input",
          str(missing),
          "--output",
          str(tmp_path / "out"),
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode != 0
  assert f"{missing}: no such file" in result.stderr
  assert not (tmp_path / "out").exists()


def test_non_empty_output_needs_overwrite(tmp_path, capsys):
  dump = _tiny_dump(tmp_path / "tiny.xml")
  output = tmp_path / "out"
  (output / "train").mkdir(parents=True)
  (output / "train" / "999").write_text("stale\n", encoding="utf-8")
  (output / "notes.txt").write_text("keep me\n", encoding="utf-8")
  assert _run(dump, output) != 0
  assert "--overwrite" in capsys.readouterr().err
  assert (
      _run(
          dump, output, "--overwrite", "--dev_fraction", 0, "--test_fraction", 0
      )
      == 0
  )
  assert sorted(_articles(output)["train"]) == ["5"]
  assert (output / "notes.txt").read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize(
    "flags",
    [
        ("--dev_fraction", "0.6", "--test_fraction", "0.6"),
        ("--dev_fraction", "-0.1"),
        ("--min_segments", "-1"),
    ],
)
def test_bad_flags_exit_nonzero(tmp_path, flags):
  with pytest.raises(SystemExit) as exit_info:
    pw.main(["--input", "x.xml", "--output", str(tmp_path), *flags])
  assert exit_info.value.code != 0


# ---------------------------------------------------------------------------
# Units.
# ---------------------------------------------------------------------------


def test_split_of_is_stable_and_follows_fractions():
  splits = [pw.split_of(i, 0.1, 0.2) for i in range(20_000)]
  assert splits == [pw.split_of(i, 0.1, 0.2) for i in range(20_000)]
  assert splits.count("test") / 20_000 == pytest.approx(0.2, abs=0.02)
  assert splits.count("dev") / 20_000 == pytest.approx(0.1, abs=0.02)
  assert {pw.split_of(i, 0.0, 0.0) for i in range(100)} == {"train"}
  assert {pw.split_of(i, 0.0, 1.0) for i in range(100)} == {"test"}


@pytest.mark.parametrize(
    "title, text, expected",
    [
        ("Mercury (disambiguation)", "Mercury may be:", True),
        ("Mercury", "Mercury may be:\n{{Disambiguation|geo}}", True),
        ("Mercury", "x\n{{dab}}", True),
        ("Mercury", "x\n{{Set index article}}", True),
        ("Mercury", "x\n{{hospital disambiguation}}", True),
        ("Mercury", "Mercury is a planet.{{Infobox planet}}", False),
    ],
)
def test_is_disambiguation(title, text, expected):
  import mwparserfromhell  # pylint: disable=g-import-not-at-top

  assert pw.is_disambiguation(title, mwparserfromhell.parse(text)) is expected


# ---------------------------------------------------------------------------
# The real dump excerpt.
# ---------------------------------------------------------------------------

# Enough articles to cover every split and skip reason while staying fast.
_FEW, _MORE = 10, 25


@pytest.fixture(name="excerpt_runs", scope="module")
def fixture_excerpt_runs(tmp_path_factory):
  """Converts the first articles of the excerpt: twice the same, once more."""
  if not EXCERPT.is_file():
    pytest.skip(
        f"real dump excerpt not found at {EXCERPT} (it lives in "
        "shared/data beside the repository)"
    )
  root = tmp_path_factory.mktemp("excerpt")
  runs = {}
  for name, count in (("first", _FEW), ("again", _FEW), ("more", _MORE)):
    assert _run(EXCERPT, root / name, "--max_articles", count) == 0
    runs[name] = root / name
  return runs


def test_excerpt_layout_and_headers(excerpt_runs):
  output = excerpt_runs["more"]
  articles = _articles(output)
  assert sum(map(len, articles.values())) == _MORE
  for split in SPLITS:
    for name, text in articles[split].items():
      assert name.isdigit()
      lines = text.splitlines()
      assert HEADER.match(lines[0]), (name, lines[0])
      assert all(line.strip() == line and line for line in lines), name


def test_excerpt_has_no_markup_residue(excerpt_runs):
  for texts in _articles(excerpt_runs["more"]).values():
    for name, text in texts.items():
      for line in text.splitlines():
        assert not any(r in line for r in MARKUP_RESIDUE), (name, line)
        assert not line.startswith(("*", "#", "***LIST***")), (name, line)


def test_excerpt_respects_minimums(excerpt_runs):
  for texts in _articles(excerpt_runs["more"]).values():
    for name, text in texts.items():
      segments = _segments(text)
      assert len(segments) >= 3, name
      assert all(len(sentences) >= 2 for _, _, sentences in segments), name
      assert not {t.lower() for _, t, _ in segments} & {
          "references",
          "external links",
          "see also",
      }, name


def test_excerpt_stats_match_files(excerpt_runs):
  output = excerpt_runs["more"]
  stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
  assert stats["skipped"]["redirect"] > 0
  assert stats["sections_dropped"]["reference_type"] > 0
  assert stats["articles_written"] == _MORE
  for split, texts in _articles(output).items():
    segments = [_segments(text) for text in texts.values()]
    assert stats["splits"][split] == {
        "articles": len(texts),
        "segments": sum(map(len, segments)),
        "sentences": sum(len(s) for article in segments for _, _, s in article),
    }


def test_excerpt_reads_back_through_segjax(excerpt_runs):
  output = excerpt_runs["more"]
  for split, texts in _articles(output).items():
    if not texts:
      continue
    result = data.read_wiki727k_dir(output / split)
    assert result.num_skipped == 0
    assert [d.name for d in result.documents] == list(texts)
    for document in result.documents:
      expected = _segments(texts[document.name])
      assert document.segments == tuple(tuple(s) for _, _, s in expected)


def test_excerpt_is_deterministic(excerpt_runs):
  assert _articles(excerpt_runs["first"]) == _articles(excerpt_runs["again"])
  assert (excerpt_runs["first"] / "stats.json").read_bytes() == (
      excerpt_runs["again"] / "stats.json"
  ).read_bytes()


def test_excerpt_split_depends_on_id_only(excerpt_runs):
  few, more = _articles(excerpt_runs["first"]), _articles(excerpt_runs["more"])
  for split in SPLITS:
    for name, text in few[split].items():
      assert more[split].get(name) == text, (split, name)
