"""Tests for llmcls.prompts: bundled and user templates, the shared prefix, chat and plain layouts, SFT targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.parsing import format_labels, parse_labels
from llmcls.prompts import (
    FIELDS,
    PLAIN_ANSWER_CUE,
    PROMPTS_DIR,
    answer_prefix,
    build_completion,
    build_prompt,
    load_template,
    parse_template_kwargs,
    render_user_message,
    template_names,
    template_reference,
)

SPACE = LabelSpace(["cs.IT", "math.IT", "cs.LG", "stat.ML", "hep-th", "my-label"])
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Llama 2 and Mistral v0.3 write a space before the assistant's answer; Qwen3 an empty thinking block unless
# enable_thinking is false, when its generation prompt holds it instead
LLAMA2 = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "message['content'].strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL3 = (
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'user' %}{{- '[INST] ' + "
    "message['content'] + '[/INST]' }}{%- else %}{{- ' ' + message['content']|trim + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
QWEN3 = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['role'] == 'assistant' %}"
    "<think>\n\n</think>\n\n{% endif %}{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
EXAMPLES = [
    {"title": "Polar codes", "abstract": "We study polar codes.", "labels": ["math.IT", "cs.IT", "cs.CV"]},
    {"title": None, "abstract": "We learn kernels.", "labels": ["stat.ML", "cs.LG"]},
]


def render(name: str = "zeroshot", **overrides) -> str:
    fields = {"title": "A title", "abstract": "An abstract about channels.", "label_space": SPACE, **overrides}
    return render_user_message(load_template(name), **fields)


def make_tokenizer(chat_template: str | None, **special_tokens):
    """A real fast tokenizer built offline from a tiny word-level `tokenizers` model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "cs.IT": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **special_tokens)
    tokenizer.chat_template = chat_template
    return tokenizer


class StubTokenizer:
    """Anything with chat_template / apply_chat_template / eos_token will do."""

    def __init__(self, chat_template=None, eos_token="</s>"):
        self.chat_template, self.eos_token = chat_template, eos_token

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False
        text = "".join(f"[{m['role']}]{m['content']}[end]" for m in messages)
        return text + ("[assistant]" if add_generation_prompt else "")


# ---------------------------------------------------------------------------------------------------------------------
# Templates


def test_bundled_templates_are_in_the_repository_prompts_folder():
    assert Path(__file__).resolve().parents[1] / "prompts" == PROMPTS_DIR
    assert {"zeroshot", "fewshot"} <= set(template_names())


@pytest.mark.parametrize("name", ["zeroshot", "fewshot"])
def test_bundled_templates_render_every_field(name):
    message = render(name, examples=EXAMPLES)
    assert "cs.IT (Information Theory)" in message and "hep-th (High Energy Physics - Theory)" in message
    assert "\nmy-label\n" in message  # not an arXiv code: shown bare
    assert "Answer with the category codes only" in message and "Example answer: cs.IT, math.IT" in message
    assert "Title: A title" in message and message.endswith("Abstract: An abstract about channels.")
    assert ("Categories: cs.IT, math.IT" in message) == (name == "fewshot")


@pytest.mark.parametrize("name", template_names())
def test_first_line_of_each_template_documents_its_fields(name):
    first = (PROMPTS_DIR / f"{name}.jinja").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("{#") and first.endswith("#}")
    assert all(field in first for field in FIELDS)


def test_zeroshot_and_fewshot_share_their_instructions():
    # With no examples the few-shot template must say exactly what the zero-shot one says.
    assert render("fewshot") == render("zeroshot")


def test_compact_template_leaves_the_label_list_out():
    # For fine-tuned models (llmcls sft --prompt compact): the same instructions and answer format, no label list.
    message = render("compact", examples=EXAMPLES)
    assert "(Information Theory)" not in message and "hep-th" not in message
    assert "Answer with the category codes only" in message
    assert message.startswith(render("zeroshot").split("\n")[0].removesuffix(", from this list only."))
    assert "Title: A title" in message and message.endswith("Abstract: An abstract about channels.")


def test_no_title_line_when_the_data_has_no_titles():
    message = render(title=None)
    assert "Title:" not in message and message.endswith("\n\nAbstract: An abstract about channels.")


def test_answer_format_example_is_a_well_formed_answer():
    example = render().split("Example answer: ", 1)[1].split("\n", 1)[0]
    assert parse_labels(example, SPACE).well_formed


def test_lower_case_codes_still_get_their_names():
    message = render(label_space=LabelSpace(["cs.it", "cs.lg"]))
    assert "cs.it (Information Theory)\ncs.lg (Machine Learning)" in message


@pytest.mark.parametrize("name", ["zeroshot", "fewshot"])
def test_shared_prefix_is_identical_across_abstracts(name):
    # knn gives each query its own examples; the instructions and the label list must still come first, unchanged.
    first = render(name, title="Polar codes", abstract="We study polar codes.", examples=EXAMPLES[:1])
    second = render(name, title="Kernels", abstract="We learn kernels.", examples=EXAMPLES[1:])
    shared = os.path.commonprefix([first, second])
    label_list = "\n".join(SPACE.display(code) for code in SPACE)
    assert label_list in shared and "Example answer: cs.IT, math.IT" in shared
    assert "polar" not in shared.lower() and "kernels" not in shared.lower()


def test_few_shot_examples_use_the_answer_format_before_the_query():
    message = render("fewshot", examples=EXAMPLES)
    # Space order, labels outside the space dropped (cs.CV), exactly as a training target would be written.
    first = "Title: Polar codes\nAbstract: We study polar codes.\nCategories: " + format_labels(["cs.IT", "math.IT"])
    second = "Abstract: We learn kernels.\nCategories: cs.LG, stat.ML"
    assert first in message and second in message
    assert message.index(first) < message.index(second) < message.index("Abstract: An abstract about channels.")


def test_user_template_by_path(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{{ label_list }}\n---\n{{ abstract }} [{{ labels | length }} labels]\n", encoding="utf-8")
    assert render(str(path)).endswith("An abstract about channels. [6 labels]")


def test_user_template_with_a_missing_field_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.jinja"
    path.write_text("{{ abstract }}\nKeywords: {{ keywords }}\n", encoding="utf-8")
    with pytest.raises(LlmclsError) as caught:
        load_template(str(path))
    message = str(caught.value)
    assert "'keywords'" in message and str(path) in message and "\n" not in message


def test_a_template_that_is_not_utf8_names_its_line_and_column(tmp_path):
    """The error gave the decoder's byte offset ("position 18"), while data files name line and column."""
    import re

    path = tmp_path / "latin1.jinja"
    path.write_bytes("Abstract: {{ abstract }}\nCatégories:\n".encode("latin-1"))
    with pytest.raises(LlmclsError, match=re.escape(f"prompt template {path}:2: not valid UTF-8 (byte 0xe9 at column "
                                                    "4; save the file as UTF-8)")):
        load_template(str(path))


def test_user_template_that_never_shows_the_abstract_is_an_error(tmp_path):
    path = tmp_path / "no_abstract.jinja"
    path.write_text("Title: {{ title }}\n", encoding="utf-8")
    with pytest.raises(LlmclsError, match="'abstract'"):
        load_template(str(path))


def test_misspelt_attribute_fails_at_render_naming_it(tmp_path):
    path = tmp_path / "typo.jinja"
    path.write_text("{% for e in examples %}{{ e.anwser }}{% endfor %}{{ abstract }}", encoding="utf-8")
    template = load_template(str(path))
    with pytest.raises(LlmclsError, match="anwser") as caught:
        render(str(path), examples=EXAMPLES)
    assert "typo.jinja" in str(caught.value) and "\n" not in str(caught.value)
    assert render_user_message(template, title="", abstract="x", label_space=SPACE) == "x"  # no examples: fine


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jinja"
    path.write_text("{{ abstract }}\n{% if title %}\n", encoding="utf-8")
    with pytest.raises(LlmclsError, match=r"broken\.jinja:\d+: "):
        load_template(str(path))


def test_included_and_extended_templates_count_their_fields(tmp_path):
    (tmp_path / "part.jinja").write_text("Abstract: {{ abstract }}\n{{ nonsense }}", encoding="utf-8")
    (tmp_path / "base.jinja").write_text("{{ label_list }}\n{% block body %}{% endblock %}", encoding="utf-8")
    (tmp_path / "include.jinja").write_text("{% include 'part.jinja' %}", encoding="utf-8")
    with pytest.raises(LlmclsError, match="unknown field 'nonsense'"):  # the part's fields are checked too
        load_template(str(tmp_path / "include.jinja"))
    (tmp_path / "part.jinja").write_text("Abstract: {{ abstract }}", encoding="utf-8")
    assert render(str(tmp_path / "include.jinja"), abstract="x") == "Abstract: x"
    (tmp_path / "child.jinja").write_text("{% extends 'base.jinja' %}{% block body %}{% include 'part.jinja' %}"
                                          "{% endblock %}", encoding="utf-8")
    assert render(str(tmp_path / "child.jinja"), abstract="x").endswith("my-label\nAbstract: x")
    (tmp_path / "lost.jinja").write_text("{% include 'gone.jinja' %}{{ abstract }}", encoding="utf-8")
    with pytest.raises(LlmclsError, match="includes gone.jinja"):
        load_template(str(tmp_path / "lost.jinja"))


@pytest.mark.parametrize("spec", ["nonexistent", "missing/file.jinja"])
def test_unknown_template_is_an_error(spec):
    with pytest.raises(LlmclsError, match="zeroshot|not found"):
        load_template(spec)


# ---------------------------------------------------------------------------------------------------------------------
# Layouts


def test_chat_layout_wraps_the_user_message():
    tokenizer = make_tokenizer(CHATML, eos_token="<|im_end|>")
    prompt = build_prompt(tokenizer, "Classify this.")
    assert prompt == "<|im_start|>user\nClassify this.<|im_end|>\n<|im_start|>assistant\n"


def test_plain_layout_without_a_chat_template():
    tokenizer = make_tokenizer(None, eos_token="</s>")
    assert build_prompt(tokenizer, "Abstract: x\n") == f"Abstract: x\n{PLAIN_ANSWER_CUE}"
    # The same text as forcing the plain layout on a chat model.
    assert build_prompt(make_tokenizer(CHATML), "Abstract: x", chat=False) == "Abstract: x\nCategories:"


def test_chat_layout_requested_without_a_template_is_an_error():
    with pytest.raises(LlmclsError, match="no chat template"):
        build_prompt(StubTokenizer(None), "x", chat=True)


def test_any_object_with_a_chat_template_will_do():
    assert build_prompt(StubTokenizer("tmpl"), "hi") == "[user]hi[end][assistant]"
    assert build_completion(StubTokenizer("tmpl"), ["cs.IT"]) == "cs.IT[end]"


@pytest.mark.parametrize(
    ("template", "tokens", "kwargs", "before", "end"),
    [(CHATML, {"eos_token": "<|im_end|>"}, None, "", "<|im_end|>\n"),
     (LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, None, "", "<|eot_id|>"),
     (LLAMA2, {"bos_token": "<s>", "eos_token": "</s>"}, None, " ", " </s>"),
     (MISTRAL3, {"bos_token": "<s>", "eos_token": "</s>"}, None, " ", "</s>"),
     (QWEN3, {"eos_token": "<|im_end|>"}, None, "<think>\n\n</think>\n\n", "<|im_end|>\n"),
     (QWEN3, {"eos_token": "<|im_end|>"}, {"enable_thinking": False}, "", "<|im_end|>\n")],
)  # fmt: skip
def test_completion_is_the_answer_as_the_chat_template_writes_it(template, tokens, kwargs, before, end):
    tokenizer = make_tokenizer(template, **tokens)
    assert answer_prefix(tokenizer, template_kwargs=kwargs) == before
    completion = build_completion(tokenizer, ["cs.IT", "math.IT"], template_kwargs=kwargs)
    assert completion == before + "cs.IT, math.IT" + end
    # prompt + completion is exactly the conversation the chat template writes, so SFT trains on real turns.
    conversation = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "cs.IT, math.IT"}]
    full = tokenizer.apply_chat_template(conversation, tokenize=False, **(kwargs or {}))
    assert build_prompt(tokenizer, "Q", template_kwargs=kwargs) + completion == full
    assert parse_labels(completion, SPACE).labels == ["cs.IT", "math.IT"]


def test_chat_template_kwargs_are_a_json_object():
    assert parse_template_kwargs('{"enable_thinking": false}') == {"enable_thinking": False}
    assert parse_template_kwargs(None) == {}
    with pytest.raises(LlmclsError, match="must be a JSON object"):
        parse_template_kwargs("[1]")
    with pytest.raises(LlmclsError, match="not JSON"):
        parse_template_kwargs("{enable_thinking: false}")
    # a YAML recipe's mapping arrives as the mapping itself (it was a TypeError traceback)
    assert parse_template_kwargs({"enable_thinking": False}) == {"enable_thinking": False}
    with pytest.raises(LlmclsError, match="expected a JSON object, got 3"):
        parse_template_kwargs(3)


def test_a_user_template_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "mine.jinja").write_text("{{ abstract }}")
    monkeypatch.chdir(tmp_path)
    assert template_reference("mine.jinja") == str(tmp_path / "mine.jinja")
    assert template_reference("zeroshot") == "zeroshot"


def test_plain_completion_follows_the_cue_and_ends_with_eos():
    tokenizer = make_tokenizer(None, eos_token="</s>")
    completion = build_completion(tokenizer, ["cs.IT", "math.IT"])
    assert completion == " cs.IT, math.IT</s>"
    assert (build_prompt(tokenizer, "Abstract: x") + completion).endswith("Categories: cs.IT, math.IT</s>")
    assert parse_labels(completion, SPACE).well_formed


def test_templates_reach_the_wheel():
    """prompts/ sits beside the package; a link inside it and the package-data entry put it in a built wheel."""
    import llmcls
    from llmcls.prompts import PROMPTS_DIR

    packaged = Path(llmcls.__file__).parent / "resources" / "prompts"
    assert sorted(p.name for p in packaged.glob("*.jinja")) == sorted(p.name for p in PROMPTS_DIR.glob("*.jinja"))
    pyproject = (Path(llmcls.__file__).parents[1] / "pyproject.toml").read_text()
    assert '"resources/prompts/*.jinja"' in pyproject
