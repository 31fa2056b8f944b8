"""THE answer format: `format_labels` writes it (prompts, SFT targets), `parse_labels` reads it back from model output.

The canonical answer is the label codes, spelled as in the label space, joined by ", " on one line and nothing
else: ``cs.IT, math.IT``. `parse_labels` is lenient about everything else real models write (case, other
separators, JSON lists, bullets, a preamble, names instead of codes, chat-template debris, text after the answer)
and reports through `ParseResult.well_formed` whether the output was exactly canonical, so every generative run
can report its rate of well-formed outputs and of unknown labels.

How an output is read:

1. Debris is removed: reasoning before ``</think>``, end-of-turn and other special tokens (the answer ends at the
   first one), a leading role header (``assistant``), a line holding only a role word (a new turn).
2. Candidates are found left to right: codes of the space (any case; each code maps only to itself, aliases are
   never merged), other arXiv codes and code-shaped strings (``xx.YY``, reported as unknown), and arXiv names
   (``Information Theory``), resolved to a code only when exactly one code of the space has that name (a name two
   codes of the space share is reported as ambiguous, a name outside the space as unknown). A code
   followed by its name (``cs.IT (Information Theory)``) or a name followed by its code counts once, and so does a
   name with a note (``Computer Vision (CV)``); an archive's or group's name heading a name of it (arXiv's subject
   line ``Computer Science - Machine Learning``) is not a label.
3. Candidates separated only by separators (commas, semicolons, "and", "or", line breaks, bullets, numbering,
   quotes, brackets) form a run; a blank line or prose ends it. Short stray items between separators inside a
   run are kept as unknown labels. The answer is the first run that holds a code (less any names in the prose
   before its first code) or starts its line (after an optional ``Preamble:``); failing that, the first run.
   Everything after it is ignored.

Pure Python: the standard library and `llmcls.labels` only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from llmcls.labels import ARCHIVE_NAMES, GROUPS, CategoryInfo, LabelSpace, taxonomy

__all__ = ["ANSWER_SEPARATOR", "ParseResult", "answer_stop_strings", "arxiv_name", "format_labels", "parse_labels"]

ANSWER_SEPARATOR = ", "

# ---------------------------------------------------------------------------------------------------------------------
# Writing


def format_labels(labels: Sequence[str]) -> str:
    """The canonical answer: ``labels`` joined by ", " in the order given (``"cs.IT, math.IT"``).

    Callers pass label-space order, which is the canonical order, so that one label set always has one spelling
    (SFT targets and few-shot answers are then consistent). An empty list gives ``""``; `parse_labels` reads that
    back as no labels and not well-formed, since a model that answers nothing has not followed the format.
    """
    if isinstance(labels, str):
        raise TypeError(f"format_labels expects a sequence of labels, not the string {labels!r}")
    return ANSWER_SEPARATOR.join(labels)


def answer_stop_strings() -> list[str]:
    """Strings after which generation may stop: the answer is over once one appears.

    Only a blank line. The canonical answer is one line, but lenient answers may span lines (a bulleted list, a
    JSON list over several lines, a ``Categories:`` line above the codes), so stopping at "\\n" would cut them
    short; a blank line is where models start their explanation or, for a base model, the next example. A chat
    model ends its turn with its end-of-turn token anyway, which the backend stops on; the stop strings matter most
    for the plain completion layout.
    """
    return ["\n\n"]


# ---------------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class ParseResult:
    """What `parse_labels` read from one output.

    ``labels``: labels of the space in order of first appearance, without duplicates, spelled as in the space.
    ``unknown``: strings of the answer that looked like labels but are not in the space (as written, deduplicated
    ignoring case). ``well_formed``: the output, once debris is stripped, was exactly canonical (see
    `parse_labels`). ``ambiguous``: names of the answer that the space gives to two or more labels (arXiv calls both
    cs.LG and stat.ML "Machine Learning"), as written and deduplicated ignoring case: read as neither label, and
    not unknown either.
    """

    labels: list[str]
    unknown: list[str]
    well_formed: bool
    ambiguous: list[str] = field(default_factory=list)


def parse_labels(text: str, label_space: LabelSpace | Sequence[str]) -> ParseResult:
    """Read the labels of ``label_space`` from a model's output; never raises on any text.

    ``well_formed`` is True when the output, after stripping surrounding whitespace and chat debris (special
    tokens, a leading role header, a ``<think>`` block), is a non-empty list of distinct labels of the space,
    spelled exactly as in the space and joined by ", ", with nothing else. The order of the labels is not checked:
    a model cannot be expected to know the space's order. Outputs that are not well-formed may still yield labels.
    """
    index = _index(_labels_of(label_space))
    answer = _strip_debris(text if isinstance(text, str) else "" if text is None else str(text))
    labels: list[str] = []
    unknown: list[str] = []
    ambiguous: list[str] = []
    seen: set[str] = set()  # lower-cased unknown and ambiguous strings
    for cand in _answer_run(answer, index):
        if cand.label is not None:
            if cand.label not in labels:
                labels.append(cand.label)
        elif cand.text.lower() not in seen:
            seen.add(cand.text.lower())
            (ambiguous if not cand.strong and cand.text.lower() in index.shared else unknown).append(cand.text)
    return ParseResult(labels=labels, unknown=unknown, well_formed=_is_canonical(answer, index), ambiguous=ambiguous)


def arxiv_name(code: str) -> str | None:
    """arXiv's name for ``code`` (a category or an archive), ignoring case (AAPD spells its labels ``cs.it``); None
    for other strings."""
    info = _taxonomy_folded().get(code.lower())
    return info.name if info else ARCHIVE_NAMES.get(code.lower())


# -- label-space lookup -----------------------------------------------------------------------------------------------


class _Index(NamedTuple):
    """Per-space lookup tables, built once per space (parse_labels runs on every output of a run)."""

    exact: frozenset[str]  # the labels as spelled in the space
    codes: dict[str, str | None]  # lower-cased code -> label; None: an arXiv code outside the space, or ambiguous
    names: dict[str, str | None]  # lower-cased name -> label; None: not the name of exactly one label of the space
    shared: frozenset[str]  # lower-cased names that two or more labels of the space share
    pattern: re.Pattern[str]  # finds every candidate: group "lit" a code or name, group "shape" a code-like string


class _Candidate(NamedTuple):
    start: int
    end: int
    text: str  # as written (the code or name, without a consumed tail)
    label: str | None  # the label of the space, or None for an unknown label
    strong: bool  # a code (or code-shaped string) rather than a name


# A code-shaped string: archive (2+ letters, or one before a hyphen as in q-bio, maybe hyphenated) dot subject. A
# single letter before the dot is left out so "e.g." and "i.e." do not read as labels.
_CODE_SHAPE = r"(?:[A-Za-z]{2,}|[A-Za-z](?=-))(?:-[A-Za-z]+)*\.[A-Za-z]{2,}(?:-[A-Za-z]+)*"
# Candidates stand alone: not inside a longer code ("math.IT" holds "IT"; "cond-mat.str-el" holds "cond-mat").
_BEFORE = r"(?<![\w.\-])"
_AFTER = r"(?![\w\-]|\.\w)"


def _labels_of(label_space: LabelSpace | Sequence[str]) -> tuple[str, ...]:
    if isinstance(label_space, LabelSpace):
        return label_space.labels
    if isinstance(label_space, str):
        return (label_space,)
    return tuple(label_space)


@functools.cache
def _taxonomy_folded() -> dict[str, CategoryInfo]:
    return {code.lower(): info for code, info in taxonomy().items()}


@functools.lru_cache(maxsize=16)
def _index(labels: tuple[str, ...]) -> _Index:
    # Non-strings and blank strings cannot be written by a model; skipping them keeps parse_labels total.
    labels = tuple(label for label in labels if isinstance(label, str) and label.strip())
    codes: dict[str, str | None] = {}
    for label in labels:
        # Two labels that differ only in case make the folded spelling ambiguous; exact spellings still resolve.
        codes[label.lower()] = None if label.lower() in codes else label
    for code in taxonomy():
        codes.setdefault(code.lower(), None)
    names, shared = _name_table(labels)
    literals = sorted({*labels, *codes, *names}, key=lambda s: (-len(s), s))
    lit = "|".join(re.escape(s) for s in literals)
    pattern = re.compile(f"{_BEFORE}(?:(?P<lit>{lit})|(?P<shape>{_CODE_SHAPE})){_AFTER}", re.IGNORECASE)
    return _Index(frozenset(labels), codes, names, shared, pattern)


def _name_table(labels: tuple[str, ...]) -> tuple[dict[str, str | None], frozenset[str]]:
    """Lower-cased arXiv name (and short form) -> the one label of the space it names, else None; and the names
    that two or more labels of the space share. A label's full name wins over another's short form ("Quantum
    Algebra" is math.QA, not q-alg's "Quantum Algebra and Topology")."""
    full: dict[str, set[str]] = {}
    short: dict[str, set[str]] = {}
    for label in labels:
        name = arxiv_name(label)
        for form in _name_forms(name) if name else ():
            (full if form == name.lower() else short).setdefault(form, set()).add(label)
    table = {form: next(iter(found)) if len(found) == 1 else None for form, found in full.items()}
    for form, found in short.items():
        table.setdefault(form, next(iter(found)) if len(found) == 1 else None)
    shared = frozenset(form for form, label in table.items() if label is None)
    # Names of arXiv categories outside the space still look like labels: report them as unknown; so do the groups'
    # names, which head a category's name in arXiv's subject lines ("Statistics - Machine Learning").
    for info in taxonomy().values():
        for form in _name_forms(info.name):
            table.setdefault(form, None)
    for group in GROUPS:
        table.setdefault(group.lower(), None)
    return table, shared


def _name_forms(name: str) -> list[str]:
    # Models shorten "Computer Vision and Pattern Recognition" to "Computer Vision"; a head of one word
    # ("Computation" of "Computation and Language") or with commas is too vague to keep, and so is a group's name
    # ("Computer Science" of "Computer Science and Game Theory" names all of cs).
    forms = [name.lower()]
    head = name.split(" and ")[0]
    if head != name and "," not in head and len(head.split()) >= 2 and head not in GROUPS:
        forms.append(head.lower())
    return forms


# -- debris -----------------------------------------------------------------------------------------------------------


_SPECIAL = re.compile(
    r"<\|[^<>|\n]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|<(?:eos|bos|pad|unk|end_of_text|endoftext)>|\[/?INST\]",
    re.IGNORECASE,
)
_LEADING_ROLE = re.compile(r"(?:assistant|model|gpt|bot)[ \t]*(?::|(?=\n)|(?=<)|\Z)", re.IGNORECASE)
_ROLE_LINE = re.compile(r"^[ \t]*(?:assistant|user|system|human|model)[ \t]*:?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_THINK_END = re.compile(r"</think>", re.IGNORECASE)
_SPACES = re.compile(r"\s*")
_THINK_START = re.compile(r"<think>", re.IGNORECASE)


def _strip_debris(text: str) -> str:
    """The model's answer without chat-template debris, reasoning, or anything after its turn ended."""
    ends = list(_THINK_END.finditer(text))
    if ends:
        text = text[ends[-1].end() :]
    start = _THINK_START.search(text)
    if start:  # reasoning that never closed: no answer follows it
        text = text[: start.start()]
    text = _strip_leading_headers(text)
    special = _SPECIAL.search(text)
    if special:  # the first special token after the answer's start ends the turn
        text = text[: special.start()]
    role = _ROLE_LINE.search(text)
    if role:  # a line with only a role word opens another turn
        text = text[: role.start()]
    return text.strip()


def _strip_leading_headers(text: str) -> str:
    # Decoding with skip_special_tokens turns "<|start_header_id|>assistant<|end_header_id|>" into "assistant".
    pos = 0
    while True:
        pos = _SPACES.match(text, pos).end()
        match = _SPECIAL.match(text, pos) or _LEADING_ROLE.match(text, pos)
        if not match:
            return text[pos:]
        pos = match.end()


def _is_canonical(answer: str, index: _Index) -> bool:
    parts = answer.split(ANSWER_SEPARATOR)
    return bool(answer) and len(set(parts)) == len(parts) and all(part in index.exact for part in parts)


# -- candidates -------------------------------------------------------------------------------------------------------


# Markdown or quotes closing a code before its note: "**cs.IT** (Information Theory)".
_CLOSER = "[*_`'\"\u201d\u2019]*"
# A parenthetical or bracketed note after a code: "cs.IT (Information Theory)".
_CODE_NOTE = re.compile(_CLOSER + r"[ \t]*(?:\(([^()\n]{0,120})\)|\[([^\[\]\n]{0,120})\])")
# A name after a code: "cs.IT - Information Theory", "cs.IT: Information Theory".
_NAME_LEAD = re.compile(_CLOSER + r"[ \t]*[-\u2013\u2014:][ \t]*[*_`'\"\u201c\u2018]*")
# Between an archive's name and a name of it: "Computer Science - Machine Learning", "Astrophysics > ...".
_HEADING_LEAD = re.compile(r"[ \t]*[-\u2013\u2014:>][ \t]*")
_GROUP_NAMES = frozenset(group.lower() for group in GROUPS)
# A code in brackets after a name: "Information Theory (cs.IT)".
_BRACKET_OPEN = re.compile(r"[ \t]*[(\[][ \t]*")
_BRACKET_CLOSE = re.compile(r"[ \t]*[)\]]")


def _candidates(text: str, index: _Index) -> list[_Candidate]:
    found: list[_Candidate] = []
    pos = 0
    while match := index.pattern.search(text, pos):
        cand = _skip_heading(text, _classify(match, index), index)
        if cand.label is None and not cand.strong and cand.text.lower() in _GROUP_NAMES:
            pos = cand.end  # a group's name alone ("Physics", "Computer Science") names no category: not a label
            continue
        cand = _absorb_name_tail(text, cand, index) if not cand.strong else _absorb_code_tail(text, cand, index)
        found.append(cand)
        pos = cand.end
    return found


def _classify(match: re.Match[str], index: _Index) -> _Candidate:
    written = match.group()
    start, end = match.span()
    if match.group("shape") is not None and written not in index.exact:
        return _Candidate(start, end, written, None, True)
    if written in index.exact:
        return _Candidate(start, end, written, written, True)
    folded = written.lower()
    if folded in index.codes:
        return _Candidate(start, end, written, index.codes[folded], True)
    # Case folding can differ between re and str.lower() for rare characters: an unmatched spelling is unknown.
    return _Candidate(start, end, written, index.names.get(folded), False)


def _absorb_note(text: str, cand: _Candidate, index: _Index) -> _Candidate:
    """Extend a candidate over a bracketed note without a code after it: "cs.IT (Information Theory)", "Computer
    Vision (CV)"."""
    note = _CODE_NOTE.match(text, cand.end)
    if note and not _holds_code(note.group(1) or note.group(2) or "", index):
        return cand._replace(end=note.end())
    return cand


def _absorb_code_tail(text: str, cand: _Candidate, index: _Index) -> _Candidate:
    """Extend a code over the name or note that follows it, so "cs.IT (Information Theory)" counts once."""
    noted = _absorb_note(text, cand, index)
    if noted.end != cand.end:
        return noted
    lead = _NAME_LEAD.match(text, cand.end)
    if lead:
        name = index.pattern.match(text, lead.end())
        own = _name_forms(arxiv_name(cand.label or cand.text) or "")
        if name and name.group("lit") is not None and name.group().lower() in own:  # its own name, said once more
            return cand._replace(end=name.end())
    return cand


def _absorb_name_tail(text: str, cand: _Candidate, index: _Index) -> _Candidate:
    """A name followed by a bracketed code stands for that code: "Information Theory (cs.IT)"; a note without a
    code is part of the name, as after a code: "Computer Vision (CV)" counts once."""
    opening = _BRACKET_OPEN.match(text, cand.end)
    code = index.pattern.match(text, opening.end()) if opening else None
    if code:
        inner = _classify(code, index)
        closing = _BRACKET_CLOSE.match(text, inner.end)
        if inner.strong and closing:
            return inner._replace(start=cand.start, end=closing.end())
    return _absorb_note(text, cand, index)


def _skip_heading(text: str, cand: _Candidate, index: _Index) -> _Candidate:
    """The name of an archive or group heading a name of it stands for nothing: "Computer Science - Machine
    Learning" (arXiv's subject lines) is the name after the heading (starting at the heading)."""
    lead = _HEADING_LEAD.match(text, cand.end)
    name = index.pattern.match(text, lead.end()) if lead and not cand.strong else None
    heading = cand.text.lower()
    if not name or name.group("lit") is None or name.group().lower() not in _headed().get(heading, ()):
        return cand
    named = _classify(name, index)._replace(start=cand.start)
    if named.label is None:  # a name two labels share, told apart by the heading: "Statistics - Machine Learning"
        under = [label for label in sorted(index.exact) if heading in _headings_of(label)
                 and name.group().lower() in _name_forms(arxiv_name(label) or "")]
        if len(under) == 1:
            return named._replace(label=under[0])
    return named


def _headings_of(label: str) -> set[str]:
    """The lower-cased headings a label's name can follow: its group's name and its archive's name."""
    table = _taxonomy_folded()
    info = table.get(label.lower())
    if info is None:
        return set()
    archive = table.get(info.archive.lower())
    return {info.group.lower(), *([archive.name.lower()] if archive else [])}


@functools.cache
def _headed() -> dict[str, frozenset[str]]:
    """Lower-cased name of an archive or group -> the lower-cased names (and short forms) of its categories."""
    table = _taxonomy_folded()
    headed: dict[str, set[str]] = {}
    for info in table.values():
        archive = table.get(info.archive.lower())  # astro-ph (Astrophysics); cs has none, only its group
        for heading in {info.group, archive.name if archive else info.group}:
            headed.setdefault(heading.lower(), set()).update(_name_forms(info.name))
    return {heading: frozenset(names) for heading, names in headed.items()}


def _holds_code(text: str, index: _Index) -> bool:
    return any(_classify(m, index).strong for m in index.pattern.finditer(text))


# -- runs -------------------------------------------------------------------------------------------------------------


_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_CONNECTOR = re.compile(r"\b(?:and|or)\b", re.IGNORECASE)
# Characters that separate or decorate list items: quotes, brackets, bullets, markdown, numbering.
_DECORATION_CHARS = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb[](){}<>*_#~\u2022\u00b7+-\u2013\u2014/&.:=!?0123456789"
_NOT_DECORATION = re.compile(f"[^\\s{re.escape(_DECORATION_CHARS)}]")
_HARD_SEPARATOR = re.compile(r"([,;|\n])")
_BULLET = re.compile(r"[ \t]*(?:[-*+\u2022\u00b7]|\d{1,3}[.)])[ \t]")
_SENTENCE = re.compile(r"[.!?:]\s")
_MAX_ITEM_WORDS, _MAX_ITEM_CHARS = 6, 60


def _answer_run(text: str, index: _Index) -> list[_Candidate]:
    """The candidates of the answer, stray items included (see the module docstring, step 3)."""
    runs: list[list[_Candidate]] = []
    for cand in _candidates(text, index):
        items = _gap_items(text, runs[-1][-1].end, cand.start) if runs else None
        if items is None:
            runs.append([cand])
        else:
            runs[-1].extend([*items, cand])
    for run in runs:
        if any(c.strong for c in run):
            return _drop_prose_lead(text, run)
        if _starts_line(text, run[0].start):
            return run
    return runs[0] if runs else []


def _drop_prose_lead(text: str, run: list[_Candidate]) -> list[_Candidate]:
    # "... applies machine learning to robotics.\ncs.LG, cs.RO": names inside the preamble's prose are not answers.
    first = next(i for i, c in enumerate(run) if c.strong or _starts_line(text, c.start))
    return run[first:]


def _is_decoration(text: str) -> bool:
    return not _NOT_DECORATION.search(_CONNECTOR.sub("", text))


def _gap_items(text: str, start: int, end: int) -> list[_Candidate] | None:
    """None when ``text[start:end]`` ends a run; otherwise the stray items it holds between separators (as unknown
    candidates; usually there are none)."""
    gap = text[start:end]
    if _BLANK_LINE.search(gap):
        return None
    parts = _HARD_SEPARATOR.split(gap)
    pieces, separators = parts[0::2], parts[1::2]
    if not (_is_decoration(pieces[0]) and _is_decoration(pieces[-1])):
        return None
    items = []
    offset = start + len(pieces[0])
    for before, piece in zip(separators, pieces[1:-1], strict=False):
        offset += len(before)
        if not _is_decoration(piece):
            # A line of prose between list lines ends the list; a bulleted line is a stray item of it.
            if before == "\n" and not _BULLET.match(piece):
                return None
            item = _item_text(piece)
            if _SENTENCE.search(item) or len(item) > _MAX_ITEM_CHARS or len(item.split()) > _MAX_ITEM_WORDS:
                return None
            items.append(_Candidate(offset, offset + len(piece), item, None, False))
        offset += len(piece)
    return items


def _item_text(piece: str) -> str:
    bullet = _BULLET.match(piece)
    if bullet:
        piece = piece[bullet.end() :]
    return piece.strip().strip(_DECORATION_CHARS.replace("0123456789", "")).strip()


def _starts_line(text: str, start: int) -> bool:
    """Nothing but decoration, or a ``Preamble:``, precedes ``start`` on its line."""
    prefix = text[text.rfind("\n", 0, start) + 1 : start]
    return _is_decoration(prefix.rsplit(":", 1)[-1])
