"""Generation backends on a tiny random Llama: label tries, constrained decoding, shared-prefix scoring (checked
against naive full-sequence scoring), batching, helpers, and the resumable prediction writer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import RESOURCES, read_jsonl
from tiny_llms import build_tiny_llama, build_tiny_lora_adapter

from llmcls.backends import LabelConstraint, ModelArguments, cut_at_stop, encode_prompts, end_token_ids, load_backend
from llmcls.backends.constrained import (
    LabelGrammar,
    RowState,
    ScorePlan,
    TokenTrie,
    common_suffix,
    complete_items,
    continuation_ids,
    label_regex,
    label_sequences,
    make_processor,
)
from llmcls.errors import LlmclsError
from llmcls.parsing import parse_labels
from llmcls.runs import PredictionWriter

# Prefix pairs on purpose: "cs" / "cs.IT" and "math" / "math-ph" (archive-level label spaces have them).
LABELS = ("cs.IT", "math.IT", "cs.LG", "cs", "cs.AI", "math", "math-ph", "stat.ML", "physics.soc-ph",
          "cond-mat.stat-mech")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    rows = read_jsonl(RESOURCES / "aapd-train.jsonl")
    texts = [r["abstract"] for r in rows] + [", ".join(r["labels"]) for r in rows] + [", ".join(LABELS)] * 20
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", texts)


@pytest.fixture(scope="module")
def backend(tiny_dir):
    return load_backend(ModelArguments(model=str(tiny_dir), device="cpu"), batch_size=3)


@pytest.fixture(scope="module")
def prompts(backend):
    rows = read_jsonl(RESOURCES / "aapd-test.jsonl")[:7]
    # a long shared head (the backend encodes it once) and abstracts of different lengths (padding)
    head = f"Classify the abstract into these categories: {', '.join(LABELS)}. Answer with the codes only.\n"
    return [backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": head + " ".join(r["abstract"].split()[: 12 + 9 * i])}],
        tokenize=False, add_generation_prompt=True) for i, r in enumerate(rows)]


# ---------------------------------------------------------------------------------------------------------------------
# Tries and the answer grammar (pure Python, token ids given directly)


def test_token_trie_shares_prefixes_and_checks_budgets():
    trie = TokenTrie([[1, 2], [1, 2, 3], [4]])
    assert len(trie) == 5  # root, 1, 1-2, 1-2-3, 4
    node = trie.children[trie.children[0][1]][2]
    assert trie.ends[node] == 0 and trie.depth[node] == 2 and trie.masks[node] == 0b011
    assert trie.fitting(trie.children[0][1], budget=1) == 0b001  # only [1, 2] finishes within one more token
    with pytest.raises(ValueError):
        TokenTrie([[1], [1]])


def _walk(grammar: LabelGrammar, budget: int, choose) -> list[int]:
    """Generate with the grammar, `choose` picking among the allowed tokens; returns the tokens written."""
    state, written = RowState(), []
    for step in range(budget):
        allowed = grammar.allowed(state, budget - step)
        token = choose(allowed)
        written.append(token)
        grammar.advance(state, token)
        if state.done:
            break
    return written


def test_grammar_never_repeats_a_label_and_respects_max_labels():
    # labels a=[10], b=[11, 12], c=[13]; after a separator (20) they are [20, 10], [20, 11, 12], [20, 13]; end = 99
    grammar = LabelGrammar(TokenTrie([[10], [11, 12], [13]]), TokenTrie([[20, 10], [20, 11, 12], [20, 13]]), (99,),
                           max_labels=None)
    # always take the largest allowed token that is not the end: the walk emits every label once, then must end
    tokens = _walk(grammar, 30, lambda allowed: max((t for t in allowed if t != 99), default=99))
    assert tokens == [13, 20, 11, 12, 20, 10, 99]
    capped = LabelGrammar(grammar.first, grammar.after, (99,), max_labels=2)
    assert _walk(capped, 30, lambda allowed: max((t for t in allowed if t != 99), default=99)) == [13, 20, 11, 12, 99]


def test_grammar_with_prefix_labels_never_ends_on_a_repeat():
    # "cs" = [10], "cs.IT" = [10, 11]; after a separator: [20, 10], [20, 10, 11]
    grammar = LabelGrammar(TokenTrie([[10], [10, 11]]), TokenTrie([[20, 10], [20, 10, 11]]), (99,))
    state = RowState()
    for token in (10, 20, 10):  # "cs" then ", cs" on the way to ", cs.IT"
        grammar.advance(state, token)
    assert grammar.allowed(state, budget=5) == [11]  # ending here would write "cs" twice
    assert complete_items("cs, cs", ["cs", "cs.IT"], ", ") == "cs"


def test_grammar_never_starts_a_label_it_cannot_finish():
    grammar = LabelGrammar(TokenTrie([[10], [11, 12, 14]]), TokenTrie([[20, 10], [20, 11, 12, 14]]), (99,))
    assert 11 not in grammar.allowed(RowState(), budget=2)  # [11, 12, 14] needs 3 tokens
    state = RowState()
    grammar.advance(state, 10)
    assert sorted(grammar.allowed(state, budget=4)) == [20, 99]
    assert grammar.allowed(state, budget=3) == [99]  # ", 11 12 14" would not fit
    assert grammar.allowed(RowState(), budget=0) == [99]  # nothing fits: end


def test_processor_ends_the_answer_when_the_model_leaves_the_format():
    import torch

    first, after = TokenTrie([[10], [11]]), TokenTrie([[20, 10], [20, 11]])
    prompt = torch.zeros((1, 3), dtype=torch.long)

    def allowed_after(tokens: list[int], favourite: int, stop: bool) -> list[int]:
        processor = make_processor(LabelGrammar(first, after, (99,), stop_off_format=stop), max_new_tokens=10)
        ids = prompt
        for token in [None, *tokens]:  # replay: one call per generated token
            if token is not None:
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            scores = torch.zeros((1, 100))
            scores[0, favourite] = 5.0
            out = processor(ids, scores)
        return sorted(torch.isfinite(out[0]).nonzero().flatten().tolist())

    assert allowed_after([10, 20], favourite=10, stop=False) == [11]  # masking alone forces the other label
    assert allowed_after([10, 20], favourite=10, stop=True) == [99]  # it wants cs.IT again: the answer is over
    assert allowed_after([10, 20], favourite=11, stop=True) == [11]  # a choice within the format is kept
    assert allowed_after([], favourite=42, stop=True) == [10, 11]  # no label yet: never stop empty-handed
    assert complete_items("cs.IT, math.", ["cs.IT", "math.IT"], ", ") == "cs.IT"
    assert complete_items("cs.IT, math.IT", ["cs.IT", "math.IT"], ", ") == "cs.IT, math.IT"


def test_score_plan_runs_only_inner_nodes_unless_all_ends_are_asked():
    sequences = [[1, 2], [1, 2, 3], [4]]  # label 0 is a prefix of label 1
    plan = ScorePlan.build(sequences, end_ids=(7, 8), ends="prefixes")
    trie = plan.trie
    assert plan.query_nodes[0] == 0
    assert all(trie.children[n] for n in plan.query_nodes[1:])  # leaves need no forward position
    assert len(plan.end_pairs[0]) == 2 and plan.end_pairs[1] == [] and plan.end_pairs[2] == []
    full = ScorePlan.build(sequences, end_ids=(7,), ends="all")
    assert all(full.end_pairs) and len(full.query_nodes) == len(full.trie)
    values = np.log(np.full((1, len(full.pairs)), 0.5))
    assert full.combine(values)[0].tolist() == pytest.approx([3 * np.log(0.5), 4 * np.log(0.5), 2 * np.log(0.5)])


def test_label_regex_accepts_exactly_the_answer_format():
    pattern = label_regex(["cs", "cs.IT", "math-ph"], ", ", max_labels=2)
    assert re.fullmatch(pattern, "cs.IT, math-ph") and re.fullmatch(pattern, "cs")
    for bad in ("cs.IT, math-ph, cs", "csXIT", "cs.IT,cs", "", "cs, "):
        assert not re.fullmatch(pattern, bad), bad


# ---------------------------------------------------------------------------------------------------------------------
# Tokeniser helpers


def test_helpers(backend):
    tokenizer = backend.tokenizer
    assert common_suffix(["a long prompt\nassistant\n", "another\nassistant\n"]) == "\nassistant\n"
    assert common_suffix(["abc", "xyz"]) == ""
    context = "<|im_start|>assistant\n"
    ids = continuation_ids(tokenizer, context, "cs.IT")
    assert tokenizer.decode(ids) == "cs.IT"
    first, after = label_sequences(tokenizer, ["cs.IT", "math"], ", ", context)
    assert tokenizer.decode(after[1]) == ", math" and first[0] == ids
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_token_ids(tokenizer)
    bos = tokenizer.bos_token
    assert encode_prompts(tokenizer, [bos + "x"])[0].count(tokenizer.bos_token_id) == 1
    assert cut_at_stop("cs.IT\n\nBecause", ["\n\n"]) == "cs.IT" and cut_at_stop("cs.IT", []) == "cs.IT"


# ---------------------------------------------------------------------------------------------------------------------
# The HF backend


def _naive_scores(backend, prompts, continuations, end_ids) -> tuple[np.ndarray, np.ndarray]:
    """log P(continuation | prompt) and log P(an end token next), from one full forward pass per pair."""
    import torch

    context = common_suffix(prompts)
    sequences = [continuation_ids(backend.tokenizer, context, c) for c in continuations]
    tokens, ends = np.zeros((len(prompts), len(continuations))), np.zeros((len(prompts), len(continuations)))
    with torch.inference_mode():
        for i, ids in enumerate(encode_prompts(backend.tokenizer, prompts)):
            for j, seq in enumerate(sequences):
                logp = torch.log_softmax(backend.model(torch.tensor([ids + seq])).logits[0].double(), dim=-1)
                tokens[i, j] = sum(logp[len(ids) - 1 + k, token].item() for k, token in enumerate(seq))
                ends[i, j] = torch.logsumexp(logp[-1, list(end_ids)], dim=0).item()
    return tokens, ends


def test_shared_prefix_scoring_equals_naive_scoring(backend, prompts):
    prompts = prompts[:5]  # still more than a batch of 3: left padding and two batches
    # end tokens: the separator's first token and the end-of-turn / EOS tokens
    _, after = label_sequences(backend.tokenizer, LABELS, ", ", common_suffix(prompts))
    naive, end_terms = _naive_scores(backend, prompts, LABELS,
                                     tuple(dict.fromkeys([seq[0] for seq in after])) + backend.end_ids)
    with_ends = naive + end_terms
    np.testing.assert_allclose(backend.score(prompts, LABELS), naive, atol=1e-4)
    np.testing.assert_allclose(backend.score(prompts, LABELS, separator=", ", ends="all"), with_ends, atol=1e-4)
    # "prefixes": the end term only where a label is a token prefix of another ("cs", "math")
    prefixes = backend.score(prompts, LABELS, separator=", ")
    ended = [LABELS.index("cs"), LABELS.index("math")]
    np.testing.assert_allclose(prefixes[:, ended], with_ends[:, ended], atol=1e-4)
    others = [j for j in range(len(LABELS)) if j not in ended]
    np.testing.assert_allclose(prefixes[:, others], naive[:, others], atol=1e-4)


def test_scoring_in_row_chunks_and_without_prefix_sharing_matches(backend, prompts):
    whole = backend.score(prompts, LABELS, separator=", ", ends="all")
    small = type(backend)(backend.model, backend.tokenizer, batch_size=7, score_chunk_bytes=1)  # one row a chunk
    np.testing.assert_allclose(small.score(prompts, LABELS, separator=", ", ends="all"), whole, atol=1e-4)
    plain = type(backend)(backend.model, backend.tokenizer, batch_size=7, share_prefix=False)
    np.testing.assert_allclose(plain.score(prompts, LABELS, separator=", ", ends="all"), whole, atol=1e-4)


def test_constrained_outputs_always_parse_even_from_random_weights(backend, prompts):
    for budget, stop in ((40, True), (40, False), (6, False)):  # a tight budget must not cut a label in half
        constraint = LabelConstraint(LABELS, ", ", max_labels=4, stop_off_format=stop)
        outputs = backend.generate(prompts, max_new_tokens=budget, constraint=constraint)
        for text in outputs:
            result = parse_labels(text, LABELS)
            assert result.well_formed and result.labels and not result.unknown, text
            assert len(result.labels) <= 4
            assert len(backend.tokenizer.encode(text, add_special_tokens=False)) <= budget


def test_batched_generation_equals_one_at_a_time(backend, prompts):
    assert backend._shared_length(encode_prompts(backend.tokenizer, prompts)) > 32  # the shared-prefix path runs
    constraint = LabelConstraint(LABELS, ", ")
    batched = backend.generate(prompts, max_new_tokens=12, constraint=constraint)
    single = type(backend)(backend.model, backend.tokenizer, batch_size=1, share_prefix=False)
    assert single.generate(prompts, max_new_tokens=12, constraint=constraint) == batched
    free = backend.generate(prompts, max_new_tokens=8, stop=["\n\n"])
    assert single.generate(prompts, max_new_tokens=8, stop=["\n\n"]) == free
    assert all("\n\n" not in text for text in free)


def test_adapter_changes_the_model_and_loads_without_model(tiny_dir, tmp_path, prompts):
    adapter = build_tiny_lora_adapter(tiny_dir, tmp_path / "adapter")
    plain = load_backend(ModelArguments(model=str(tiny_dir), device="cpu"))
    adapted = load_backend(ModelArguments(model=str(tiny_dir), adapter=str(adapter), device="cpu"))
    base_from_adapter = load_backend(ModelArguments(adapter=str(adapter), device="cpu"))
    a, b = plain.score(prompts[:2], LABELS), adapted.score(prompts[:2], LABELS)
    assert np.abs(a - b).max() > 1e-3  # the adapter's weights are in use
    np.testing.assert_allclose(base_from_adapter.score(prompts[:2], LABELS), b, atol=1e-5)


def test_missing_optional_backends_name_their_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(LlmclsError, match=r"llmcls\[vllm\]"):
        load_backend(ModelArguments(model="any", backend="vllm"))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(LlmclsError, match=r"llmcls\[bnb\]"):
        load_backend(ModelArguments(model="any", load_in_4bit=True, device="cpu"))


# ---------------------------------------------------------------------------------------------------------------------
# The resumable writer (runs.PredictionWriter)


def test_prediction_writer_appends_and_drops_a_truncated_last_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    writer = PredictionWriter(path)
    assert writer.read() == {}
    writer.append([{"id": "a", "labels": ["x"], "predicted": []}, {"id": "b", "labels": ["x"], "predicted": ["x"]}])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "labels": ["x"], "pred')  # killed in the middle of a line
    assert set(writer.read()) == {"a", "b"}
    writer.append([{"id": "c", "labels": ["x"], "predicted": []}])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]
    writer.rewrite([{"id": "c", "labels": [], "predicted": []}])
    assert list(writer.read()) == ["c"]
