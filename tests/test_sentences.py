"""Tests for segjax.sentences: units with offsets that round-trip."""

import hypothesis
from hypothesis import strategies as st
import pytest

from segjax import data
from segjax import sentences


def assert_round_trip(text, spans):
  """Offsets point at the raw unit, in order, covering all visible text."""
  previous_end = 0
  for span in spans:
    raw = text[span.start : span.end]
    assert raw and raw == raw.strip()
    assert span.text == " ".join(raw.split())
    assert span.start >= previous_end
    previous_end = span.end
  visible = lambda s: "".join(s.split())
  assert "".join(visible(text[s.start : s.end]) for s in spans) == visible(text)


def texts(spans):
  return [s.text for s in spans]


@pytest.mark.parametrize("unit", sentences.UNITS)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t \r\n  ",
        "One sentence without a full stop",
        "Dr. Watson met Mr. Holmes at 221B Baker St. in London. They talked.",
        'He said "Stop." Then he left. "Why?" she asked.',
        "Café au lait coûte 3,50 €. Über alles? Ja!\nNaïve résumé.",
        "Line one.\r\nLine two continues\r\nhere.\r\n\r\nNew paragraph.\r\n",
        "First.\n\n\n\n   \n\nSecond.\n\n\n",
        "He left.. She stayed... And then?! Fine.",
        "  Leading and trailing space.   Two spaces.  ",
        "Tabs\tinside.\fForm feed.\vVertical tab.\u2028Line separator.",
        "Items:\n- apples\n- pears, and\n  more pears\n* plums",
    ],
)
def test_offsets_round_trip(text, unit):
  assert_round_trip(text, sentences.split(text, unit=unit))


def test_empty_and_blank_text_have_no_units():
  for unit in sentences.UNITS:
    assert sentences.split("", unit=unit) == []
    assert sentences.split(" \n\r\n\t", unit=unit) == []


def test_prose_sentences():
  text = (
      "Dr. Watson met Mr. Holmes at 221B Baker St. in London. They talked "
      "until 3 p.m. about e.g. tobacco, i.e. ash. It was 1895."
  )
  spans = sentences.split(text)
  assert texts(spans) == [
      "Dr. Watson met Mr. Holmes at 221B Baker St. in London.",
      "They talked until 3 p.m. about e.g. tobacco, i.e. ash.",
      "It was 1895.",
  ]
  assert [text[s.start : s.end] for s in spans] == texts(spans)
  assert (spans[1].start, spans[1].end) == (55, 109)


def test_quotes():
  text = (
      'He said "Stop." Then he left. “Why?” she asked. ' "'Because,' he said."
  )
  assert texts(sentences.split(text)) == [
      'He said "Stop."',
      "Then he left.",
      "“Why?” she asked.",
      "'Because,' he said.",
  ]


def test_non_ascii():
  text = "Ein Satz über Äpfel. Noch ein Satz, naïve café. 日本語の文です。次の文です。"
  spans = sentences.split(text)
  assert texts(spans)[:2] == [
      "Ein Satz über Äpfel.",
      "Noch ein Satz, naïve café.",
  ]
  assert_round_trip(text, spans)
  japanese = sentences.split("日本語の文です。次の文です。", language="ja")
  assert texts(japanese) == ["日本語の文です。", "次の文です。"]


def test_line_breaks_inside_a_paragraph_are_spaces_blank_lines_end_sentences():
  text = (
      "A hard-wrapped sentence runs over\r\nthree lines of the\r\ntext.\r\n"
      "\r\n\r\n\r\n"
      "A heading without a full stop\n\n  \n"
      "Last paragraph. Two sentences.\n"
  )
  spans = sentences.split(text)
  assert texts(spans) == [
      "A hard-wrapped sentence runs over three lines of the text.",
      "A heading without a full stop",
      "Last paragraph.",
      "Two sentences.",
  ]
  assert text[spans[0].start : spans[0].end] == (
      "A hard-wrapped sentence runs over\r\nthree lines of the\r\ntext."
  )
  assert_round_trip(text, spans)


def test_list_items_start_sentences():
  text = "Shopping:\n- apples\n- pears, and\n  more pears\n• plums"
  assert texts(sentences.split(text)) == [
      "Shopping:",
      "- apples",
      "- pears, and more pears",
      "• plums",
  ]


def test_punctuation_alone_joins_its_neighbour():
  # pysbd alone returns "He left.", ".", "She stayed.".
  assert texts(sentences.split("He left.. She stayed.")) == [
      "He left..",
      "She stayed.",
  ]
  assert texts(sentences.split("... so it began. Then more.")) == [
      "... so it began.",
      "Then more.",
  ]
  assert texts(sentences.split("* * *")) == ["* * *"]


def test_paragraph_and_line_units():
  text = "Title\r\n\r\nFirst line\nsecond line.\n   \n\n  Third\tparagraph.  \n"
  paragraphs = sentences.split(text, unit="paragraph")
  assert texts(paragraphs) == [
      "Title",
      "First line second line.",
      "Third paragraph.",
  ]
  assert text[paragraphs[1].start : paragraphs[1].end] == (
      "First line\nsecond line."
  )
  lines = sentences.split(text, unit="line")
  assert texts(lines) == [
      "Title",
      "First line",
      "second line.",
      "Third paragraph.",
  ]
  assert text[lines[3].start : lines[3].end] == "Third\tparagraph."
  # Lines are those of `split_sentences(one_per_line=True)`.
  assert texts(lines) == data.split_sentences(text, one_per_line=True)


def test_plain_prose_agrees_with_the_regular_expression_splitter():
  text = (
      "The module defines a class. It has three methods! Does it work? "
      "Yes, it does.\n\nA second paragraph follows here. It ends now."
  )
  assert texts(sentences.split(text)) == data.split_sentences(text)


def test_long_paragraph_goes_to_pysbd_in_pieces_with_the_same_sentences():
  expected = [
      f"Sentence number {i} mentions Mr. Smith and the U.S. army."
      for i in range(300)
  ]
  # Two sentences per line, no blank line: one paragraph of ~17,000 chars.
  text = "\n".join(
      " ".join(expected[i : i + 2]) for i in range(0, len(expected), 2)
  )
  line_ranges = next(sentences._paragraph_line_ranges(text))
  assert len(list(sentences._chunks(text, line_ranges))) > 5
  spans = sentences.split(text)
  assert texts(spans) == expected
  assert_round_trip(text, spans)


def test_ranges_survive_pieces_that_pysbd_changed():
  text = "Alpha beta.  Gamma delta. Epsilon."
  # Whitespace lost or added, a piece altered, a piece missing: every
  # visible character still lands in exactly one range.
  for pieces in (
      ["Alpha beta.", "Gammadelta.", "Epsilon."],
      ["Alpha  beta. ", "Gamma delta.", "Epsi lon."],
      ["Alpha beta.", "Gamma DELTA.", "Epsilon."],
      ["Alpha beta.", "Epsilon."],
      ["Zeta.", "Gamma delta. Epsilon."],
      [],
  ):
    ranges = sentences._sentence_ranges(text, pieces)
    spans = [sentences._span(text, s, e) for s, e in ranges]
    assert_round_trip(text, spans)
  three = [(0, 11), (13, 25), (26, 34)]
  assert sentences._sentence_ranges(text, ["Alpha beta.", "Gammadelta."]) == (
      three[:1] + [(13, 34)]
  )
  assert (
      sentences._sentence_ranges(
          text, ["Alpha beta. ", "Gamma  delta.", "Epsilon."]
      )
      == three
  )
  # The changed piece stays with the sentence before it.
  assert sentences._sentence_ranges(
      text, ["Alpha beta.", "Gamma DELTA.", "Epsilon."]
  ) == [(0, 25), (26, 34)]


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    st.lists(
        st.sampled_from(
            [
                "word",
                "Mr.",
                "U.S.",
                "end.",
                "Why?",
                "Wow!",
                '"Quoted."',
                "“curly”",
                "café",
                "日本。",
                "...",
                ".",
                "-",
                " ",
                "  ",
                "\t",
                "\n",
                "\r\n",
                "\n\n",
                "\r\n\r\n",
                "\u00a0",
            ]
        ),
        max_size=40,
    ),
    st.sampled_from(sentences.UNITS),
)
def test_offsets_round_trip_on_random_text(pieces, unit):
  text = "".join(
      p if p.isspace() or i == 0 else " " + p for i, p in enumerate(pieces)
  )
  assert_round_trip(text, sentences.split(text, unit=unit))


def test_bad_unit_and_language():
  with pytest.raises(ValueError, match="unit"):
    sentences.split("Text.", unit="word")
  with pytest.raises(ValueError, match="language"):
    sentences.split("Text.", language="xx")


def test_long_sentence_warning():
  short = sentences.split("A short one. Another.")
  assert sentences.long_spans(short) == []
  assert sentences.long_sentence_warning(short) is None
  rows = "\n".join(f"row {i} value {i * 7}" for i in range(60))
  spans = sentences.split("Intro. \n\n" + rows)
  assert sentences.long_spans(spans) == [1]
  message = sentences.long_sentence_warning(spans)
  assert "1 of 2 sentences" in message and "240 words" in message
  assert "unit='line'" in message
  assert len(sentences.split(rows, unit="line")) == 60
