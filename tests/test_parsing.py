"""Tests for llmcls.parsing: the answer format, and reading it back from what real models write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcls.labels import LabelSpace, category_name
from llmcls.parsing import (
    ANSWER_SEPARATOR,
    ParseResult,
    answer_stop_strings,
    arxiv_name,
    format_labels,
    parse_labels,
)

AAPD_TRAIN = Path(__file__).resolve().parents[1] / "llmcls" / "resources" / "data" / "aapd-train.jsonl"
# Snapshot codes with hyphens in the archive, the subject or both, and archives without a subject.
SNAPSHOT_CODES = ["cond-mat.str-el", "physics.soc-ph", "hep-th", "math-ph", "quant-ph", "cond-mat.stat-mech",
                  "astro-ph.CO", "gr-qc", "nlin.AO", "q-bio.NC", "eess.SP", "econ.EM"]  # fmt: skip


def _aapd_space() -> LabelSpace:
    with open(AAPD_TRAIN, encoding="utf-8") as handle:
        return LabelSpace.from_label_lists(json.loads(line)["labels"] for line in handle if line.strip())


AAPD = _aapd_space()
REALISTIC = LabelSpace([*AAPD, *(code for code in SNAPSHOT_CODES if code not in AAPD)])
SMALL = LabelSpace(["cs.LG", "cs.CV", "cs.RO", "cs.AI", "cs.IT"])  # one "Machine Learning", one "Information Theory"


def parse(text: str, space=AAPD) -> ParseResult:
    return parse_labels(text, space)


# ---------------------------------------------------------------------------------------------------------------------
# The format


def test_format_joins_in_given_order():
    assert format_labels(["cs.IT", "math.IT"]) == "cs.IT, math.IT"
    assert format_labels(("math.IT", "cs.IT")) == "math.IT, cs.IT"
    assert ANSWER_SEPARATOR == ", "


def test_format_of_no_labels_is_empty_and_not_well_formed():
    assert format_labels([]) == ""
    assert parse("") == ParseResult(labels=[], unknown=[], well_formed=False)


def test_format_rejects_a_bare_string():
    with pytest.raises(TypeError, match="sequence of labels"):
        format_labels("cs.IT")


def test_canonical_answer_is_well_formed():
    assert parse("cs.IT, math.IT") == ParseResult(labels=["cs.IT", "math.IT"], unknown=[], well_formed=True)


@pytest.mark.parametrize(
    ("text", "well_formed"),
    [
        ("math.IT, cs.IT", True),  # the space's order is not something a model can know
        ("  cs.IT, math.IT\n", True),  # surrounding whitespace
        ("cs.IT,math.IT", False),
        ("cs.IT, math.IT.", False),
        ("cs.IT, cs.IT", False),
        ("cs.it, math.IT", False),  # the space spells it cs.IT
        ("cs.IT, cs.XY", False),
        ("cs.IT, , math.IT", False),
        ("Categories: cs.IT", False),
    ],
)
def test_well_formed_means_exactly_canonical(text, well_formed):
    assert parse(text).well_formed is well_formed


# ---------------------------------------------------------------------------------------------------------------------
# Lenient reading


def test_codes_in_any_case_come_back_in_space_spelling():
    result = parse("CS.it, Math.It, STAT.ML")
    assert result.labels == ["cs.IT", "math.IT", "stat.ML"]
    assert not result.well_formed


def test_lower_case_label_space_like_original_aapd():
    space = ["cs.it", "math.it", "cs.lg", "cs.ai"]
    assert parse_labels("cs.IT, Math.IT", space).labels == ["cs.it", "math.it"]
    assert parse_labels("cs.it, math.it", space).well_formed
    # Names still resolve: the taxonomy is looked up ignoring case.
    assert parse_labels("Artificial Intelligence", space).labels == ["cs.ai"]


@pytest.mark.parametrize(
    "text",
    ["cs.IT,math.IT,cs.LG", "cs.IT; math.IT; cs.LG", "cs.IT\nmath.IT\ncs.LG", "cs.IT, math.IT and cs.LG",
     "cs.IT, math.IT, and cs.LG", "cs.IT or math.IT or cs.LG", "cs.IT | math.IT | cs.LG", "cs.IT/math.IT/cs.LG",
     "cs.IT math.IT cs.LG", "cs.IT & math.IT & cs.LG"],
)  # fmt: skip
def test_separators(text):
    assert parse(text).labels == ["cs.IT", "math.IT", "cs.LG"]


@pytest.mark.parametrize(
    "text",
    ['["cs.IT", "math.IT"]', "['cs.IT', 'math.IT']", '{"categories": ["cs.IT", "math.IT"]}',
     '```json\n[\n  "cs.IT",\n  "math.IT"\n]\n```'],
)  # fmt: skip
def test_json_lists(text):
    assert parse(text).labels == ["cs.IT", "math.IT"]


@pytest.mark.parametrize(
    "text",
    ['"cs.IT", "math.IT"', "[cs.IT, math.IT]", "(cs.IT, math.IT)", "{cs.IT} {math.IT}", "**cs.IT**, **math.IT**",
     "`cs.IT`, `math.IT`", "\u201ccs.IT\u201d, \u201cmath.IT\u201d", "<cs.IT>, <math.IT>"],
)  # fmt: skip
def test_quotes_brackets_and_markdown(text):
    assert parse(text).labels == ["cs.IT", "math.IT"]


@pytest.mark.parametrize(
    "text",
    ["- cs.IT\n- math.IT", "* cs.IT\n* math.IT", "\u2022 cs.IT\n\u2022 math.IT", "1. cs.IT\n2. math.IT",
     "1) cs.IT\n2) math.IT", "  - **cs.IT**\n  - **math.IT**"],
)  # fmt: skip
def test_bullets_and_numbering(text):
    assert parse(text).labels == ["cs.IT", "math.IT"]


@pytest.mark.parametrize(
    "text",
    ["The categories are: cs.IT, math.IT", "Sure! Here are the categories:\n\ncs.IT, math.IT",
     "Based on the abstract, I would classify it as cs.IT and math.IT.", "Categories:\n- cs.IT\n- math.IT",
     "Answer: cs.IT, math.IT", "This abstract applies machine learning to robotics.\ncs.IT, math.IT"],
)  # fmt: skip
def test_preamble_is_skipped(text):
    # The last case: names inside the preamble's prose ("machine learning") are not part of the answer.
    assert parse(text).labels == ["cs.IT", "math.IT"]


@pytest.mark.parametrize(
    "text",
    ["cs.IT (Information Theory), cs.LG (Machine Learning)", "cs.IT - Information Theory\ncs.LG - Machine Learning",
     "cs.IT: Information Theory, cs.LG: Machine Learning", "Information Theory (cs.IT), Machine Learning (cs.LG)",
     "1. **cs.IT** (Information Theory)\n2. **cs.LG** (Machine Learning)"],
)  # fmt: skip
def test_code_with_its_name_counts_once(text):
    # In AAPD both names are ambiguous (cs.IT/math.IT, cs.LG/stat.ML): reading a name here would add unknowns.
    assert parse(text) == ParseResult(labels=["cs.IT", "cs.LG"], unknown=[], well_formed=False)


def test_names_instead_of_codes_when_unambiguous():
    result = parse("Machine Learning, Robotics, Artificial Intelligence", SMALL)
    assert result.labels == ["cs.LG", "cs.RO", "cs.AI"]
    assert result.unknown == []


def test_common_short_name_resolves():
    # "Computer Vision and Pattern Recognition" is usually written "Computer Vision".
    assert parse("Computer Vision", SMALL).labels == ["cs.CV"]


@pytest.mark.parametrize(
    ("text", "labels"),
    [("Computer Vision (CV), Machine Learning (ML)", ["cs.CV", "cs.LG"]),
     ("Artificial Intelligence (AI), Machine Learning (ML)", ["cs.AI", "cs.LG"]),
     ("cs.CL (NLP), cs.LG (ML)", ["cs.CL", "cs.LG"]), ("Machine Learning [ML]; Computer Vision", ["cs.LG", "cs.CV"]),
     ("Machine Learning (cs.LG, cs.CV)", ["cs.LG", "cs.CV"])],
)  # fmt: skip
def test_a_name_with_its_abbreviation_counts_once(text, labels):
    # The note after a name is part of it, as after a code; a note holding codes is not a note.
    space = LabelSpace(["cs.AI", "cs.LG", "cs.CV", "cs.CL"])
    assert parse(text, space) == ParseResult(labels=labels, unknown=[], well_formed=False)


@pytest.mark.parametrize(
    ("text", "labels"),
    [("Computer Science - Machine Learning", ["cs.LG"]), ("Computer Science > Computer Vision", ["cs.CV"]),
     ("cs.AI, Computer Science: Machine Learning", ["cs.AI", "cs.LG"]),
     ("Astrophysics - High Energy Astrophysical Phenomena", ["astro-ph.HE"]),
     ("Astrophysics, High Energy Astrophysical Phenomena", ["astro-ph", "astro-ph.HE"]),
     ("Machine Learning - Computer Vision", ["cs.LG", "cs.CV"])],
)  # fmt: skip
def test_the_archive_heading_a_name_is_not_a_label(text, labels):
    # arXiv's subject lines head a category's name with its archive's or group's ("Computer Science" also shortens
    # "Computer Science and Game Theory"; "Astrophysics" names the archive astro-ph, a label of its own).
    space = LabelSpace(["cs.AI", "cs.LG", "cs.CV", "cs.GT", "astro-ph", "astro-ph.HE"])
    assert parse(text, space) == ParseResult(labels=labels, unknown=[], well_formed=False)


def test_archive_labels_have_names_in_prompts_and_answers():
    """At --label_level archive the labels are archives: listed with their names, read back from them."""
    space = LabelSpace(["cs", "math", "stat", "nlin", "astro-ph"])
    assert [arxiv_name(label) for label in space.labels] == ["Computer Science", "Mathematics", "Statistics",
                                                             "Nonlinear Sciences", "Astrophysics"]
    assert parse("Computer Science, Statistics", space).labels == ["cs", "stat"]
    assert parse("physics is a field", LabelSpace(["cs.LG"])) == ParseResult(labels=[], unknown=[], well_formed=False)


@pytest.mark.parametrize(
    ("text", "labels", "unknown"),
    [("Statistics - Machine Learning", ["stat.ML"], []), ("Computer Science - Machine Learning", ["cs.LG"], []),
     ("Mathematics - Information Theory", ["math.IT"], []), ("Computer Science - Numerical Analysis", ["cs.NA"], []),
     ("Statistics - Statistics Theory", ["stat.TH"], []),
     ("Computer Science, Artificial Intelligence", ["cs.AI"], []),  # a group's name: not cs.GT, not a label
     ("Quantum Algebra", ["math.QA"], []),  # math.QA's full name, not q-alg's shortened "Quantum Algebra and ..."
     ("q-bio.AI, cs.LG", ["cs.LG"], ["q-bio.AI"]), ("q-fin.ML", [], ["q-fin.ML"]),  # made-up codes of q-* archives
     ("cs.IT - Information Theory", ["cs.IT"], []),  # a code's own name after it counts once
     ("cs.LG - Artificial Intelligence", ["cs.LG", "cs.AI"], [])],  # another label's name is that label
)  # fmt: skip
def test_names_two_labels_share_are_told_apart_by_their_heading(text, labels, unknown):
    space = LabelSpace(["cs.LG", "stat.ML", "cs.IT", "math.IT", "cs.NA", "math.NA", "math.ST", "stat.TH", "cs.AI",
                        "cs.GT", "q-alg", "math.QA"])
    assert parse(text, space) == ParseResult(labels=labels, unknown=unknown, well_formed=False)


@pytest.mark.parametrize(("text", "name"), [("Machine Learning", "Machine Learning"),
                                            ("information theory", "information theory")])  # fmt: skip
def test_a_name_two_labels_share_is_neither_label_nor_unknown(text, name):
    # cs.LG and stat.ML are both "Machine Learning"; cs.IT and math.IT both "Information Theory": no heading, no
    # choice, but the name is the space's, so it is no unknown label either (it raised the unknown-label rate)
    assert parse(text) == ParseResult(labels=[], unknown=[], well_formed=False, ambiguous=[name])
    assert parse(f"cs.AI, {text}, {text.upper()}, foo.bar") == ParseResult(
        labels=["cs.AI"], unknown=["foo.bar"], well_formed=False, ambiguous=[name])
    assert parse(text, LabelSpace(["cs.LG", "cs.IT"])).ambiguous == []  # one label of that name: it is that label


def test_name_of_a_category_outside_the_space_is_unknown():
    assert parse("Robotics, Machine Learning", LabelSpace(["cs.LG", "cs.AI"])).unknown == ["Robotics"]


def test_aliases_are_never_merged():
    space = LabelSpace(["cs.IT", "cs.LG"])
    assert parse("math.IT", space) == ParseResult(labels=[], unknown=["math.IT"], well_formed=False)
    assert parse("cs.IT", LabelSpace(["math.IT"])).labels == []


def test_duplicates_are_dropped():
    result = parse("cs.LG, cs.LG, CS.lg, stat.ML, cs.LG")
    assert result.labels == ["cs.LG", "stat.ML"]
    assert not result.well_formed


@pytest.mark.parametrize(
    "text",
    ["cs.LG, stat.ML\n\nExplanation: this paper uses cs.CV methods", "cs.LG, stat.ML. Also cs.CV",
     "cs.LG, stat.ML\nExplanation: the paper also touches on cs.CV", "cs.LG, stat.ML because, unlike cs.CV, it",
     "- cs.LG\n- stat.ML\n\nNote that cs.CV could apply too."],
)  # fmt: skip
def test_text_after_the_answer_is_ignored(text):
    assert parse(text).labels == ["cs.LG", "stat.ML"]


@pytest.mark.parametrize(
    "text",
    ["cs.LG, stat.ML<|im_end|>", "assistant\n\ncs.LG, stat.ML", "cs.LG, stat.ML<|eot_id|>", "cs.LG, stat.ML</s>",
     "<|start_header_id|>assistant<|end_header_id|>\n\ncs.LG, stat.ML<|eot_id|>", "Assistant: cs.LG, stat.ML",
     "cs.LG, stat.ML<end_of_turn>\n", "cs.LG, stat.ML<|endoftext|>",
     "<think>\nMaybe cs.CV?\n</think>\n\ncs.LG, stat.ML",
     "cs.LG, stat.ML<|im_end|>\n<|im_start|>user\ncs.CV, cs.AI<|im_end|>", "cs.LG, stat.ML\nuser\ncs.CV"],
)  # fmt: skip
def test_chat_template_debris(text):
    # Debris is not the model's fault (it comes from decoding), so a canonical answer inside it is well-formed.
    assert parse(text) == ParseResult(labels=["cs.LG", "stat.ML"], unknown=[], well_formed=True)


def test_unfinished_reasoning_has_no_answer():
    assert parse("<think>It could be cs.LG, or").labels == []


def test_unknown_labels_are_collected():
    result = parse("cs.LG, cs.XY, hep-th, CS.xy, Quantum Stuff, stat.ML")
    assert result.labels == ["cs.LG", "stat.ML"]
    # cs.XY is code-shaped, hep-th an arXiv code outside AAPD, "Quantum Stuff" a stray list item.
    assert result.unknown == ["cs.XY", "hep-th", "Quantum Stuff"]


@pytest.mark.parametrize("text", ["", "   \n", "I don't know.", "None of the categories apply.", "<|im_end|>"])
def test_no_answer(text):
    assert parse(text) == ParseResult(labels=[], unknown=[], well_formed=False)


def test_label_list_and_label_space_read_alike():
    text = "The categories: CS.lg (Machine Learning), hep-th, cs.AI and Robotics"
    assert parse_labels(text, list(SMALL)) == parse_labels(text, SMALL)


def test_lookup_tables_are_built_once_per_space():
    from llmcls.parsing import _index

    parse("cs.LG", REALISTIC)
    before = _index.cache_info()
    for _ in range(5):
        parse("cs.LG", REALISTIC)
    after = _index.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 5


def test_arxiv_name_ignores_case():
    assert arxiv_name("cs.it") == arxiv_name("CS.IT") == category_name("cs.IT") == "Information Theory"
    assert arxiv_name("nope") is None


def test_stop_strings_end_the_answer_not_a_canonical_answer():
    text = "cs.LG, stat.ML\n\nExplanation: this paper uses cs.CV methods"
    stops = answer_stop_strings()
    assert "\n\n" in stops
    cut = min(text.find(stop) for stop in stops if stop in text)
    assert parse(text[:cut]).labels == parse(text).labels == ["cs.LG", "stat.ML"]
    # No stop string can occur inside a canonical answer, whatever the labels.
    assert not any(stop in format_labels(list(REALISTIC)) for stop in stops)


# ---------------------------------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(REALISTIC.labels), min_size=1, max_size=12, unique=True))
def test_round_trip(labels):
    assert parse_labels(format_labels(labels), REALISTIC) == ParseResult(labels=labels, unknown=[], well_formed=True)


def _check_invariants(text: str, result: ParseResult, space) -> None:
    assert isinstance(result.labels, list) and isinstance(result.unknown, list)
    assert isinstance(result.well_formed, bool)
    assert len(set(result.labels)) == len(result.labels)
    assert set(result.labels) <= set(space)
    folded = text.lower()
    for label in result.labels:  # every label was written: as its code, or as a name of it
        assert label.lower() in folded or (arxiv_name(label) or label).lower().split(" and ")[0] in folded
    if result.well_formed:
        assert result.labels and not result.unknown


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text):
    _check_invariants(text, parse_labels(text, REALISTIC), REALISTIC)


PIECES = st.sampled_from(
    [*REALISTIC.labels[:20], *SNAPSHOT_CODES, "CS.lg", "Machine Learning", "Information Theory", "Robotics",
     "Computer Vision", "cs.XY", "e.g.", ", ", "; ", " and ", "\n", "\n\n", "- ", "1. ", "(", ")", "[", "]", '"',
     ":", "<|im_end|>", "<|eot_id|>", "assistant", "<think>", "</think>", "The categories are", "\u017f", "\u212a"]
)  # fmt: skip


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=4)), max_size=25), st.sampled_from([AAPD, REALISTIC, SMALL]))
def test_never_raises_on_mixtures_of_codes_and_junk(pieces, space):
    text = "".join(pieces)
    _check_invariants(text, parse_labels(text, space), space)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6).filter(str.strip), max_size=6, unique=True), st.text(max_size=40))
def test_never_raises_with_any_label_space(labels, text):
    space = [label.strip() for label in labels]
    _check_invariants(text, parse_labels(text, space), space)
