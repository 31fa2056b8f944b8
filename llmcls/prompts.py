"""Prompts: render `prompts/*.jinja` (the user message body) and wrap it for a model, chat or plain.

A template receives these fields (a template that uses any other is an error, and so is one that never shows the
abstract):

- ``title``: the paper's title, ``""`` when the data has none (AAPD);
- ``abstract``: the abstract;
- ``labels``: the label space as a list of ``{"code", "name", "display"}`` (``"cs.IT"``, ``"Information Theory"``,
  ``"cs.IT (Information Theory)"``; name ``""`` and display the bare code for labels that are not arXiv codes);
- ``label_list``: the same, pre-rendered compactly, one ``display`` a line;
- ``answer_format``: one sentence that asks for the answer format of `llmcls.parsing`, with an example;
- ``examples``: few-shot examples, a list of ``{"title", "abstract", "answer"}`` whose answers are written by
  `llmcls.parsing.format_labels`, like the targets.

The bundled templates put the shared part (instructions, label list, answer format) first and the per-abstract part
(examples, then the abstract) last, so that a prefix cache computes the long label list once per run.

Templates live in ``prompts/`` at the repository root (the issue's layout, next to ``configs/``), found relative to
this package; ``llmcls/resources/prompts/`` is looked at too, so shipping them inside a wheel only needs a
package-data entry.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.parsing import arxiv_name, format_labels

__all__ = [
    "FIELDS",
    "PLAIN_ANSWER_CUE",
    "PROMPTS_DIR",
    "answer_prefix",
    "build_completion",
    "build_prompt",
    "load_template",
    "parse_template_kwargs",
    "render_user_message",
    "fit_abstract",
    "shorten_abstract",
    "template_names",
    "template_reference",
]

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
_TEMPLATE_DIRS = (PROMPTS_DIR, Path(__file__).resolve().parent / "resources" / "prompts")
FIELDS = ("title", "abstract", "labels", "label_list", "answer_format", "examples")
# The plain layout ends the prompt with this cue; few-shot examples write their answers after the same words.
PLAIN_ANSWER_CUE = "Categories:"
# Stands in for an answer when reading off what a chat template writes after one; no template alters it.
_SENTINEL = "LLMCLS_ANSWER_SENTINEL_7f3a9c"

# ---------------------------------------------------------------------------------------------------------------------
# Templates


def template_names() -> list[str]:
    """Names of the bundled templates (``zeroshot``, ``fewshot``, ...)."""
    return sorted({path.stem for folder in _TEMPLATE_DIRS if folder.is_dir() for path in folder.glob("*.jinja")})


def load_template(name_or_path: str) -> jinja2.Template:
    """A bundled template by name (``zeroshot``, ``fewshot``) or a user's ``.jinja`` file by path.

    Rendering is strict (`jinja2.StrictUndefined`), and the fields the template uses are checked here, before any
    model is loaded: an unknown field, a syntax error or a template that never shows the abstract raises
    `LlmclsError` with one line naming the file.
    """
    path = template_path(str(name_or_path))
    # trim/lstrip_blocks: block tags on their own lines leave no blank lines behind.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    try:
        used = _fields(env, path.name)
        template = env.get_template(path.name)
    except jinja2.TemplateSyntaxError as exc:
        raise LlmclsError(f"prompt template {exc.filename or path}:{exc.lineno}: {_one_line(exc.message)}") from None
    except jinja2.TemplateNotFound as exc:
        raise LlmclsError(f"prompt template {path}: includes {exc.name}, which is not in {path.parent}") from None
    except UnicodeDecodeError as exc:  # the template or a file it includes: the decoded bytes say where
        where = str(path) if exc.object == path.read_bytes() else f"{path} (a file it includes)"
        line = exc.object[:exc.start].count(b"\n") + 1
        column = exc.start - (exc.object.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LlmclsError(f"prompt template {where}:{line}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                          f"column {column}; save the file as UTF-8)") from None
    except OSError as exc:
        raise LlmclsError(f"cannot read prompt template {path}: {_one_line(exc)}") from None
    _check_fields(path, used)
    return template


def template_fields(template: jinja2.Template) -> set[str]:
    """The fields a loaded template uses (e.g. whether a few-shot run's template shows its `examples`)."""
    return _fields(template.environment, template.name)


def _fields(env: jinja2.Environment, name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The fields template `name` uses, with those of the templates it includes, imports or extends."""
    source, filename, _ = env.loader.get_source(env, name)
    tree = env.parse(source, name=name, filename=filename)
    used = set(jinja2.meta.find_undeclared_variables(tree))
    for other in jinja2.meta.find_referenced_templates(tree):
        if other is not None and other not in seen | {name}:  # None: a name computed at render time
            used |= _fields(env, other, seen | {name})
    return used


def template_path(name_or_path: str) -> Path:
    """The file of a bundled template name or a user's .jinja path (one-line error when there is none)."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".jinja" or path.parent != Path(".") or path.is_file():
        if not path.is_file():
            raise LlmclsError(f"prompt template {path} not found")
        return path.resolve()
    for folder in _TEMPLATE_DIRS:
        candidate = folder / f"{name_or_path}.jinja"
        if candidate.is_file():
            return candidate
    names = ", ".join(template_names()) or "none"
    raise LlmclsError(f"no prompt template named {name_or_path!r} (bundled: {names}; or give a path to a .jinja file)")


def template_reference(name_or_path: str) -> str:
    """How a run records its template: a bundled one by name, a user's file by its absolute path (a run reused
    from another directory, e.g. by `zeroshot --adapter`, must find the same file)."""
    path = template_path(name_or_path)
    return name_or_path if path.parent in _TEMPLATE_DIRS and path.stem == name_or_path else str(path)


def _check_fields(path: Path, used: set[str]) -> None:
    unknown = sorted(used - set(FIELDS))
    if unknown:
        raise LlmclsError(
            f"prompt template {path}: unknown field {unknown[0]!r} (available fields: {', '.join(FIELDS)})"
        )
    if "abstract" not in used:
        raise LlmclsError(f"prompt template {path}: never uses the field 'abstract', so the model would not see it")


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------------------------------------------------------
# User message


def render_user_message(
    template: jinja2.Template | str,
    *,
    title: str | None,
    abstract: str,
    label_space: LabelSpace | Sequence[str],
    examples: Sequence[dict[str, Any]] = (),
) -> str:
    """The user message for one abstract.

    ``examples`` are rows with ``abstract``, optionally ``title``, and ``labels`` (a label list; only labels of the
    space are kept, in space order, as in a target) or an already formatted ``answer``.
    """
    if isinstance(template, str):
        template = load_template(template)
    codes = tuple(label_space.labels if isinstance(label_space, LabelSpace) else label_space)
    labels = _label_fields(codes)
    fields = {
        "title": title or "",
        "abstract": abstract,
        "labels": labels,
        "label_list": _label_list(labels),
        "answer_format": _answer_format(codes),
        "examples": [_example_fields(example, codes) for example in examples],
    }
    try:
        return template.render(**fields).strip()
    except jinja2.TemplateError as exc:  # StrictUndefined: e.g. a misspelt attribute ({{ example.anwser }})
        raise LlmclsError(f"prompt template {template.filename or template.name}: {_one_line(exc)}") from None
    except Exception as exc:  # an expression of the user's that fails in Python ({{ "x" + labels }}, {{ 1 / 0 }})
        raise LlmclsError(f"prompt template {template.filename or template.name}: {type(exc).__name__}: "
                          f"{_one_line(exc)}") from None


@functools.lru_cache(maxsize=8)
def _label_fields(codes: tuple[str, ...]) -> list[dict[str, str]]:
    # Cached: the same space is rendered for every abstract of a run.
    fields = []
    for code in codes:
        name = arxiv_name(code) or ""
        fields.append({"code": code, "name": name, "display": f"{code} ({name})" if name else code})
    return fields


def _label_list(labels: list[dict[str, str]]) -> str:
    # One "code (name)" a line: the name tells the model what a code means, a line per label reads as a menu, and
    # a newline costs no more tokens than ", ". 150 labels are about 1,500 tokens, paid once thanks to the cache.
    return "\n".join(label["display"] for label in labels)


def _answer_format(codes: tuple[str, ...]) -> str:
    # The example uses the space's own first two codes (its most frequent ones), so it always shows valid codes.
    example = format_labels(list(codes[:2]))
    return f"Answer with the category codes only, separated by commas, and nothing else. Example answer: {example}"


def _example_fields(example: dict[str, Any], codes: tuple[str, ...]) -> dict[str, str]:
    if example.get("labels") is not None:
        # Like a target: space order, and only labels the model may answer (a label cut from the space is not).
        wanted = set(example["labels"])
        answer = format_labels([code for code in codes if code in wanted])
    else:
        answer = str(example.get("answer", ""))
    return {"title": example.get("title") or "", "abstract": example.get("abstract") or "", "answer": answer}


def shorten_abstract(abstract: str, fits: Callable[[str], bool]) -> str | None:
    """The abstract cut from its end to the most words for which ``fits`` holds (a binary search: ``fits`` only gets
    harder with more words), the abstract itself when it fits whole, None when even an empty one does not. What a
    prompt too long for the model loses: the instructions, the label list, the examples and the answer stay whole,
    and the prompt stays one the template renders (a cut through the middle of its token ids would not)."""
    if fits(abstract):
        return abstract
    if not fits(""):
        return None
    words = abstract.split()
    low, high, best = 0, len(words) - 1, ""
    while low <= high:
        middle = (low + high) // 2
        candidate = " ".join(words[:middle])
        if fits(candidate):
            low, best = middle + 1, candidate
        else:
            high = middle - 1
    return best


def fit_abstract(abstract: str, size: Callable[[str], int], room: int, *, limit: str, answer: str,
                 advice: str) -> str:
    """The abstract cut (`shorten_abstract`) so that the prompt holding it, `size(abstract)` tokens, takes at most
    `room`; what inference and SFT do to a prompt too long for the model. When even an empty abstract leaves too
    little room, a one-line error: `limit` names the bound, `answer` the tokens the answer keeps, `advice` the way
    out."""
    kept = shorten_abstract(abstract, lambda text: size(text) <= room)
    if kept is None:
        raise LlmclsError(f"{limit}: the prompt without its abstract takes {size('')} tokens and the answer "
                          f"{answer}; {advice}")
    return kept


# ---------------------------------------------------------------------------------------------------------------------
# Model layout


# --chat's values (generative runs and SFT) as build_prompt's `chat`
CHAT_OPTION: dict[str, bool | None] = {"auto": None, "on": True, "off": False}


def build_prompt(tokenizer: Any, user_message: str, *, chat: bool | None = None,
                 template_kwargs: dict[str, Any] | None = None) -> str:
    """The text the model continues.

    Chat layout (when the tokenizer has a chat template and ``chat`` is not False): the tokenizer's chat template
    with the user message and the assistant header (``add_generation_prompt``); ``template_kwargs`` are passed to
    the template (``{"enable_thinking": false}`` for Qwen3-style thinking models). The result may already hold the
    template's BOS text: tokenize prompts with ``backends.encode_prompts``, which adds the tokenizer's special
    tokens without doubling a BOS (inference and SFT both do).

    Plain layout (no chat template, or ``chat=False``): ``f"{user_message}\\nCategories:"``. The model continues
    on the same line, as in the few-shot examples, which end with ``Categories: <answer>``.
    """
    if use_chat(tokenizer, chat):
        messages = [{"role": "user", "content": user_message}]
        return _apply_template(tokenizer, messages, True, template_kwargs)
    return f"{user_message.rstrip()}\n{PLAIN_ANSWER_CUE}"


def build_completion(tokenizer: Any, labels: Sequence[str], *, chat: bool | None = None,
                     template_kwargs: dict[str, Any] | None = None) -> str:
    """The target an SFT run trains on, so that ``build_prompt(...) + build_completion(...)`` is the whole example.

    `answer_prefix`, ``format_labels(labels)``, then the end of the turn: in the chat layout what the chat template
    writes after an assistant message (``<|im_end|>\\n`` for ChatML, ``<|eot_id|>`` for Llama 3), in the plain
    layout the tokenizer's EOS token. Pass labels in label-space order.
    """
    before = answer_prefix(tokenizer, chat=chat, template_kwargs=template_kwargs)
    if use_chat(tokenizer, chat):
        return before + format_labels(labels) + _chat_frame(tokenizer, template_kwargs)[1]
    return f"{before}{format_labels(labels)}{getattr(tokenizer, 'eos_token', None) or ''}"


def answer_prefix(tokenizer: Any, *, chat: bool | None = None, template_kwargs: dict[str, Any] | None = None) -> str:
    """What comes between the prompt and the label codes, as the model's own conversations have it: a space in the
    plain layout (the answer follows ``Categories:``); in the chat layout what the template writes before an
    assistant message's content beyond its generation prompt (a space for Llama 2 and Mistral v0.3, which write
    ``[/INST] answer``; an empty thinking block for Qwen3 unless ``enable_thinking`` is false; usually nothing).
    Part of the answer, not of the prompt: training targets start with it, constrained decoding forces it and score
    mode scores labels after it, so the first code is tokenised as in the model's own conversations."""
    if not use_chat(tokenizer, chat):
        return " "
    return _chat_frame(tokenizer, template_kwargs)[0]


def use_chat(tokenizer: Any, chat: bool | None) -> bool:
    """Whether prompts use the chat layout: --chat auto (None) when the tokenizer has a chat template; --chat on
    (True) without a template is an error."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise LlmclsError("chat layout requested, but the tokenizer has no chat template (use the plain layout)")
    return has_template if chat is None else chat


def parse_template_kwargs(text: str | dict | None, option: str = "--chat_template_kwargs") -> dict[str, Any]:
    """The JSON object of --chat_template_kwargs (``'{"enable_thinking": false}'``; a YAML recipe may give the
    mapping itself), one-line error otherwise."""
    if not text:
        return {}
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise LlmclsError(f"{option}: expected a JSON object, got {text!r}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LlmclsError(f"{option} {text}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise LlmclsError(f"{option} {text}: must be a JSON object, e.g. '{{\"enable_thinking\": false}}'")
    return value


def _apply_template(tokenizer: Any, messages: list[dict], generation_prompt: bool,
                    template_kwargs: dict[str, Any] | None) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                             **(template_kwargs or {}))
    except jinja2.TemplateError as exc:  # raise_exception(...) of the template itself, or a kwarg it cannot take
        raise LlmclsError(f"the tokenizer's chat template failed: {_one_line(exc)}") from None


_FRAMES: dict[tuple[str, ...], tuple[str, str]] = {}


def _chat_frame(tokenizer: Any, template_kwargs: dict[str, Any] | None) -> tuple[str, str]:
    """What the chat template writes around an assistant's answer beyond the generation prompt: (before, after),
    read off a rendered dummy conversation."""
    # Keyed by what decides the result, so that SFT renders the template once, not once per example.
    key = (type(tokenizer).__qualname__, repr(tokenizer.chat_template), repr(getattr(tokenizer, "eos_token", None)),
           repr(getattr(tokenizer, "bos_token", None)), json.dumps(template_kwargs or {}, sort_keys=True))
    if key not in _FRAMES:
        user = {"role": "user", "content": "Abstract: x"}
        rendered = _apply_template(tokenizer, [user, {"role": "assistant", "content": _SENTINEL}], False,
                                   template_kwargs)
        if _SENTINEL not in rendered:
            raise LlmclsError("the tokenizer's chat template does not render assistant messages; cannot build targets")
        at = rendered.rindex(_SENTINEL)
        prompt = _apply_template(tokenizer, [user], True, template_kwargs)
        before = rendered[len(prompt):at] if rendered[:at].startswith(prompt) else ""
        _FRAMES[key] = (before, rendered[at + len(_SENTINEL):])
    return _FRAMES[key]
