"""Generation backends on a tiny random Llama: label tries, constrained decoding, shared-prefix scoring (checked
against naive full-sequence scoring), batching, helpers, and the resumable prediction writer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import RESOURCES, read_jsonl
from tiny_llms import PREFIX_LABELS, build_tiny_lora_adapter, label_prompts

from llmcls.backends import (
    LabelConstraint,
    ModelArguments,
    count_tokens,
    cut_at_stop,
    encode_prompts,
    end_token_ids,
    load_backend,
)
from llmcls.backends.constrained import (
    LabelGrammar,
    ScorePlan,
    TokenTrie,
    build_grammar,
    common_suffix,
    complete_items,
    continuation_ids,
    label_regex,
    label_sequences,
    make_processor,
)
from llmcls.backends.loading import file_digest, gguf_folder
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.parsing import parse_labels
from llmcls.runs import PredictionWriter

LABELS = PREFIX_LABELS


@pytest.fixture(scope="module")
def prompts(backend):
    return label_prompts(backend.tokenizer, read_jsonl(RESOURCES / "aapd-test.jsonl")[:7])


# ---------------------------------------------------------------------------------------------------------------------
# Tries and the answer grammar (token ids given directly)

VOCAB = 100  # token ids in these tests are below 100


def test_token_trie_shares_prefixes():
    trie = TokenTrie([[1, 2], [1, 2, 3], [4]])
    assert len(trie) == 5  # root, 1, 1-2, 1-2-3, 4
    node = trie.children[trie.children[0][1]][2]
    assert trie.ends[node] == 0 and trie.depth[node] == 2 and trie.below[node] == [0, 1]
    assert trie.token[node] == 2 and trie.parent[node] == trie.children[0][1]
    with pytest.raises(ValueError):
        TokenTrie([[1], [1]])


class _Rows:
    """Answers being written under a grammar, one state row each (the processor's tensors, driven directly)."""

    def __init__(self, grammar: LabelGrammar, rows: int = 1):
        self.tables = grammar.tables("cpu")
        self.state = self.tables.start(rows)

    def allowed(self, budget: int, top: list[int] | None = None) -> list[list[int]]:
        import torch

        top = None if top is None else torch.tensor(top)
        ids = self.tables.allowed(self.state, budget, VOCAB, top)
        return [sorted({t for t in row if t != VOCAB}) for row in ids.tolist()]

    def advance(self, *tokens: int) -> _Rows:
        import torch

        self.tables.advance(self.state, torch.tensor(tokens))
        return self

    def done(self) -> list[bool]:
        return self.state["done"].tolist()


def _walk(grammar: LabelGrammar, budget: int, choose) -> list[int]:
    """Generate one answer with the grammar, `choose` picking among the allowed tokens; returns the tokens."""
    rows, written = _Rows(grammar), []
    for step in range(budget):
        token = choose(rows.allowed(budget - step)[0])
        written.append(token)
        if rows.advance(token).done()[0]:
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
    rows = _Rows(grammar).advance(10).advance(20).advance(10)  # "cs" then ", cs" on the way to ", cs.IT"
    assert rows.allowed(budget=5) == [[11]]  # ending here would write "cs" twice
    assert complete_items("cs, cs", ["cs", "cs.IT"], ", ") == "cs"


def test_grammar_never_starts_a_label_it_cannot_finish():
    grammar = LabelGrammar(TokenTrie([[10], [11, 12, 14]]), TokenTrie([[20, 10], [20, 11, 12, 14]]), (99,))
    assert 11 not in _Rows(grammar).allowed(budget=2)[0]  # [11, 12, 14] needs 3 tokens
    rows = _Rows(grammar).advance(10)
    assert rows.allowed(budget=4) == [[20, 99]]
    assert rows.allowed(budget=3) == [[99]]  # ", 11 12 14" would not fit
    assert _Rows(grammar).allowed(budget=0) == [[99]]  # nothing fits: end
    assert _Rows(grammar).advance(42).done() == [True]  # a token off the grammar (mask bypassed) ends the row


def _language(first, after, max_labels) -> set[tuple[int, ...]]:
    """Every complete answer of the grammar, by brute force: distinct labels in any order, the first tokenised as
    in `first`, the others as in `after`, at most `max_labels` of them (the end token left out)."""
    answers = set()

    def extend(tokens: tuple[int, ...], used: frozenset):
        if used:
            answers.add(tokens)
        if max_labels is not None and len(used) >= max_labels:
            return
        for label in range(len(first)):
            if label not in used:
                extend(tokens + tuple(after[label] if used else first[label]), used | {label})

    extend((), frozenset())
    return answers


def _repeats(first, after, written: tuple[int, ...], top: int) -> bool:
    """Whether `top` continues the last item of `written` into labels written before it only (20 = the separator)."""
    cuts = [i for i, token in enumerate(written) if token == 20]
    if not cuts:
        return False
    items = [written[: cuts[0]]] + [written[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    done = {label for label in range(len(first)) if tuple(first[label]) == items[0] or tuple(after[label]) in items}
    item = written[cuts[-1]:] + (top,)
    going = {label for label in range(len(first)) if tuple(after[label][: len(item)]) == item}
    return bool(going) and going <= done


def _reference_allowed(answers, written: tuple[int, ...], budget: int, end_ids, top: int, stop: bool,
                       repeats: bool) -> list[int]:
    """What the grammar allows after `written`, from the answers themselves: a token that starts the rest of an
    answer which ends within the budget; the end where `written` is an answer; the end alone where nothing fits
    or, with `stop`, where the model's first choice `top` is off the format once a label is complete (20 = the
    separator); `top` alone where `written` is an answer and `top` `repeats` a label written before."""
    if written in answers and repeats:
        return [top]
    n = len(written)
    allowed = {a[n] for a in answers if len(a) > n and a[:n] == written and len(a) - n <= budget}
    if written in answers:
        allowed |= set(end_ids)
    holds_label = written in answers or 20 in written
    if not allowed or (stop and holds_label and top not in allowed):
        return sorted(end_ids)
    return sorted(allowed)


@pytest.mark.parametrize("seed", range(40))
def test_grammar_tensors_match_a_brute_force_reference(seed):
    """Random label tries (shared prefixes, labels that are prefixes of others, a different tokenisation after the
    separator), random caps and budgets; several rows walk random paths in one batch, and at every step each row's
    allowed tokens equal the brute-force reference's."""
    import random

    rng = random.Random(seed)
    n_labels = rng.randint(1, 5)
    first: list[list[int]] = []
    while len(first) < n_labels:
        seq = [rng.randint(1, 3) for _ in range(rng.randint(1, 3))]
        if seq not in first:
            first.append(seq)
    glued = rng.random() < 0.5  # after the separator, the first token merges with the space (" cs" vs "cs")
    after = [[20, seq[0] + 10 * glued, *seq[1:]] for seq in first]
    end_ids = (99,) if rng.random() < 0.5 else (98, 99)
    max_labels = rng.choice([None, 1, 2, 3])
    stop = rng.random() < 0.5
    grammar = LabelGrammar(TokenTrie(first), TokenTrie(after), end_ids, max_labels, stop_off_format=stop)
    answers = _language(first, after, max_labels)
    n_rows, budget = 6, rng.randint(1, 12)
    rows, written = _Rows(grammar, n_rows), [() for _ in range(n_rows)]
    finished = [False] * n_rows
    for step in range(budget):
        top = [rng.choice([1, 2, 3, 11, 12, 13, 20, 99]) for _ in range(n_rows)]
        got = rows.allowed(budget - step, top)
        for row in range(n_rows):
            if not finished[row]:
                repeats = _repeats(first, after, written[row], top[row])
                assert got[row] == _reference_allowed(answers, written[row], budget - step, end_ids, top[row], stop,
                                                      repeats), (row, written[row])
        tokens = [rng.choice(got[row]) if not finished[row] else 0 for row in range(n_rows)]  # 0: padding
        rows.advance(*tokens)
        for row in range(n_rows):
            if not finished[row]:
                finished[row] = tokens[row] in end_ids
                written[row] += () if finished[row] else (tokens[row],)
        assert rows.done() == finished
    for row in range(n_rows):  # a finished row wrote an answer, nothing (no label fits the budget), or, stopped off
        text = written[row]  # the format or repeating a label, an answer and an item that `complete_items` drops
        if finished[row] and text and text not in answers:
            assert text[:max(i for i, t in enumerate(text) if t == 20)] in answers, text


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
    # stopped between the separator's comma and its space, which a tokenizer joins to the next label's first token
    # (SmolLM2 on the snapshot sample: "astro-ph," read as not well-formed)
    for text in ("astro-ph,", "cs.IT, astro-ph,", "cs.IT, astro-ph, "):
        answer = complete_items(text, ["astro-ph", "cs.IT"], ", ")
        assert answer == text.rstrip(", ") and parse_labels(answer, ["astro-ph", "cs.IT"]).well_formed, text
    assert complete_items("astro-ph;", ["astro-ph"], "; ") == "astro-ph"
    assert complete_items("cs.IT, cs.LG,", ["astro-ph", "cs.IT"], ", ") == "cs.IT"  # an unknown item still goes


@pytest.mark.parametrize("stop", [False, True])
def test_a_repeat_through_a_prefix_label_ends_the_answer(stop):
    # "cs" = [10], "cs.IT" = [10, 11], "math" = [12]; after a separator: [20, 10], [20, 10, 11], [20, 12]
    grammar = LabelGrammar(TokenTrie([[10], [10, 11], [12]]), TokenTrie([[20, 10], [20, 10, 11], [20, 12]]), (99,),
                           stop_off_format=stop)
    rows = _Rows(grammar, 2).advance(10, 10).advance(11, 11).advance(20, 20).advance(10, 10)  # "cs.IT, cs"
    # row 0 goes on to "cs.IT" again: it may, and then only end ("cs" is not its choice); row 1 wants "cs" and ends
    assert rows.allowed(budget=5, top=[11, 99]) == [[11], [20, 99]]
    assert rows.advance(11, 99).allowed(budget=4, top=[20, 20]) == [[99], [99]]
    assert complete_items("cs.IT, cs.IT", ["cs", "cs.IT", "math"], ", ") == "cs.IT"
    # the same model choice while the prefix label is the first item, or already written, changes nothing
    assert _Rows(grammar).advance(10).allowed(budget=5, top=[11]) == [[11, 20, 99]]
    assert _Rows(grammar).advance(10).advance(20).advance(10).allowed(budget=5, top=[11]) == [[11]]


def _drive(backend, labels, target: str, stop: bool) -> str:
    """Constrained generation by a fake model whose first choice spells `target`, then the end: the answer."""
    import torch

    tokenizer, budget = backend.tokenizer, 30
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Abstract: x"}], tokenize=False,
                                           add_generation_prompt=True)
    grammar = build_grammar(tokenizer, labels, ", ", prompt[-32:], backend.end_ids, stop_off_format=stop)
    processor = make_processor(grammar, budget)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    wanted = continuation_ids(tokenizer, prompt, target) + [backend.end_ids[0]]
    written: list[int] = []
    for step in range(budget):
        scores = torch.zeros((1, len(tokenizer)))
        scores[0, wanted[min(step, len(wanted) - 1)]] = 10.0
        written.append(int(processor(torch.tensor([ids + written]), scores).argmax()))
        if written[-1] in backend.end_ids:
            break
    return complete_items(tokenizer.decode(written, skip_special_tokens=True), labels, ", ")


@pytest.mark.parametrize("stop", [False, True])
def test_a_repeated_label_never_becomes_its_prefix_label(backend, stop):
    labels = ["cs", "cs.IT", "math.IT"]
    after = label_sequences(backend.tokenizer, labels, ", ", "\n")[1]
    assert after[1][: len(after[0])] == after[0]  # ", cs" is on the way to ", cs.IT": the case under test
    assert _drive(backend, labels, "cs.IT, cs.IT", stop) == "cs.IT"
    assert _drive(backend, labels, "cs.IT, math.IT, cs.IT", stop) == "cs.IT, math.IT"
    # the model that wants the prefix label gets it
    assert _drive(backend, labels, "cs.IT, cs", stop) == "cs.IT, cs"
    assert _drive(backend, labels, "cs, cs.IT", stop) == "cs, cs.IT"
    assert _drive(backend, labels, "math.IT, cs, cs.IT", stop) == "math.IT, cs, cs.IT"


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
    texts = [bos + "x", "cs.IT, math.IT", "", "a longer text " * 9, "y"]
    assert count_tokens(tokenizer, texts, chunk=2) == [len(ids) for ids in encode_prompts(tokenizer, texts)]
    assert cut_at_stop("cs.IT\n\nBecause", ["\n\n"]) == "cs.IT" and cut_at_stop("cs.IT", []) == "cs.IT"


def test_batches_go_to_a_gpu_from_pinned_memory_without_waiting(backend, monkeypatch):
    """A plain host-to-GPU copy waits for every queued kernel, so the host could not prepare batch i+1 while the GPU
    runs batch i. No GPU here: a stand-in model device and tensor record how the copy is asked for."""
    import types

    calls = []

    class HostTensor:
        def pin_memory(self):
            calls.append("pin_memory")
            return self

        def to(self, device, non_blocking=False):
            calls.append(("to", device, non_blocking))
            return self

    cuda = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"))
    monkeypatch.setattr(backend, "_core", lambda: cuda)
    backend._upload(HostTensor())
    assert calls == ["pin_memory", ("to", cuda.device, True)]
    monkeypatch.undo()
    calls.clear()
    backend._upload(HostTensor())  # a CPU model: a plain move (pinning needs an accelerator)
    assert [(name, str(device), blocking) for name, device, blocking in calls] == [("to", "cpu", False)]


def test_gguf_cache_is_keyed_by_the_file_contents(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("LLMCLS_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights v1")
    folder = tmp_path / "cache" / "gguf" / f"model-{file_digest(gguf)}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # as if converted before: no conversion runs
    assert gguf_folder(gguf) == folder
    os.utime(gguf, (1, 1))  # the same bytes installed anew (new modification time): the same folder
    assert gguf_folder(gguf) == folder
    renamed = tmp_path / "copy.gguf"
    renamed.write_bytes(gguf.read_bytes())  # the same bytes under another name: still the same folder
    assert gguf_folder(renamed) == folder
    gguf.write_bytes(b"weights v2")  # changed bytes: converted again (and these bytes are no GGUF: one line)
    with pytest.raises(LlmclsError, match=r"model\.gguf: cannot load as a GGUF model: .*magic"):
        gguf_folder(gguf)
    with pytest.raises(LlmclsError, match="no such GGUF file"):
        gguf_folder(tmp_path / "missing.gguf")


def test_a_gguf_file_is_hashed_once_per_process_while_unchanged(tmp_path, monkeypatch):
    """One benchmark or sft run resolves the same .gguf several times (0.17 s each for SmolLM2's 98 MB, seconds for a
    7B model's): hashed again only when its size or modification time changes."""
    import hashlib
    import os

    hashed = []
    real = hashlib.blake2b
    monkeypatch.setattr(hashlib, "blake2b", lambda **kwargs: hashed.append(1) or real(**kwargs))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"weights v1")
    first = file_digest(gguf)
    assert file_digest(gguf) == first and len(hashed) == 1
    gguf.write_bytes(b"weights v2")
    os.utime(gguf, ns=(1, 1))
    assert file_digest(gguf) != first and len(hashed) == 2


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


def test_score_batches_queues_the_next_batch_before_handing_back_this_one(backend, prompts):
    """The CLI writes a batch's records while the GPU computes the next: `score_batches` has queued batch i+1 when
    it hands back batch i's scores, which equal `score`'s of that batch alone."""
    events = []
    batches = [prompts[:2], prompts[2:5], prompts[5:]]
    backend.score(batches[0], LABELS, separator=", ")  # the shared prefix's keys and values, computed once
    hook = backend.model.register_forward_pre_hook(lambda *args: events.append("forward"))
    try:
        handed = []
        for scores in backend.score_batches(batches, LABELS, separator=", "):
            handed.append((scores, events.count("forward")))
    finally:
        hook.remove()
    per_batch = events.count("forward") // len(batches)  # the prompt pass and the label pass
    assert [seen for _, seen in handed] == [2 * per_batch, 3 * per_batch, 3 * per_batch]
    for (scores, _), batch in zip(handed, batches, strict=True):
        np.testing.assert_allclose(scores, backend.score(batch, LABELS, separator=", "), atol=1e-6)


def test_scoring_in_row_chunks_and_without_prefix_sharing_matches(backend, prompts):
    whole = backend.score(prompts, LABELS, separator=", ", ends="all")
    small = type(backend)(backend.model, backend.tokenizer, batch_size=7, score_chunk_bytes=1)  # one row a chunk
    np.testing.assert_allclose(small.score(prompts, LABELS, separator=", ", ends="all"), whole, atol=1e-4)
    plain = type(backend)(backend.model, backend.tokenizer, batch_size=7, share_prefix=False)
    np.testing.assert_allclose(plain.score(prompts, LABELS, separator=", ", ends="all"), whole, atol=1e-4)


@pytest.mark.parametrize("architecture", ["mistral", "qwen2-mixed", "gemma2"])
def test_scoring_with_sliding_window_attention_equals_naive_scoring(architecture, backend, prompts):
    """A window (12 tokens) far shorter than the prompts: the label tokens must see only the prompt keys in their
    window, on every sliding layer, with full layers beside them (Qwen2's and Gemma 2's mixed layer kinds)."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config, MistralConfig, Qwen2Config

    from llmcls.backends.hf import HFBackend

    shape = dict(vocab_size=len(backend.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 pad_token_id=backend.tokenizer.pad_token_id)
    config = {"mistral": lambda: MistralConfig(sliding_window=12, **shape),
              "qwen2-mixed": lambda: Qwen2Config(use_sliding_window=True, sliding_window=12, max_window_layers=1,
                                                 layer_types=["full_attention", "sliding_attention"], **shape),
              "gemma2": lambda: Gemma2Config(sliding_window=12, head_dim=8, **shape)}[architecture]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    sliding = HFBackend(model, backend.tokenizer, batch_size=3)
    assert sliding.window == 12 and not sliding.share_prefix
    few = prompts[:4]  # two batches, left padding
    naive, _ = _naive_scores(sliding, few, LABELS, sliding.end_ids)
    np.testing.assert_allclose(sliding.score(few, LABELS), naive, atol=1e-4)


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


def test_static_cache_generation_equals_the_dynamic_cache(tiny_dir, backend, prompts, monkeypatch):
    static = load_backend(ModelArguments(model=str(tiny_dir), device="cpu", static_cache=True), batch_size=3)
    seen = []
    generate = static.model.generate

    def recording(*args, **kwargs):
        seen.append((kwargs["generation_config"].cache_implementation, kwargs["input_ids"].shape[1],
                     kwargs.get(static._cache_kw)))
        return generate(*args, **kwargs)

    monkeypatch.setattr(static.model, "generate", recording)
    constraint = LabelConstraint(LABELS, ", ", max_labels=3)
    assert static.generate(prompts, max_new_tokens=12, constraint=constraint) == backend.generate(
        prompts, max_new_tokens=12, constraint=constraint)
    assert static.generate(prompts, max_new_tokens=8, stop=["\n\n"]) == backend.generate(
        prompts, max_new_tokens=8, stop=["\n\n"])
    # every batch went through a static cache, padded to a multiple of 64 tokens, without the shared-prefix cache
    assert len(seen) == 6
    assert all(kind == "static" and width % 64 == 0 and cache is None for kind, width, cache in seen)


def test_compile_layers_compiles_each_layers_mlp_and_norms_and_changes_no_output(tiny_dir, backend, prompts,
                                                                                 monkeypatch):
    """--compile_layers compiles every decoder layer's MLP and norms, never its attention (dynamo's eager backend
    here: the same tracing, no code generated), and scores and answers stay those of the eager model."""
    import llmcls.backends.hf as hf

    monkeypatch.setattr(hf, "COMPILE_BACKEND", "eager")
    compiled = load_backend(ModelArguments(model=str(tiny_dir), device="cpu", compile_layers=True), batch_size=3)
    layers = compiled.model.model.layers
    for layer in layers:
        for part in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm):
            assert part._compiled_call_impl is not None
        assert layer.self_attn._compiled_call_impl is None
    assert all(layer.mlp._compiled_call_impl is None for layer in backend.model.model.layers)  # its own model
    np.testing.assert_allclose(compiled.score(prompts, LABELS, separator=", "),
                               backend.score(prompts, LABELS, separator=", "), rtol=1e-5, atol=1e-5)
    constraint = LabelConstraint(LABELS, ", ", max_labels=3)
    assert compiled.generate(prompts, max_new_tokens=12, constraint=constraint) == backend.generate(
        prompts, max_new_tokens=12, constraint=constraint)


def test_compile_layers_without_decoder_layers_is_one_line(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcls.backends.hf import HFBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    model._no_split_modules = None  # a model class that names no decoder layers
    with pytest.raises(LlmclsError, match="--compile_layers: no decoder layer .* LlamaForCausalLM"):
        HFBackend(model, AutoTokenizer.from_pretrained(tiny_dir), compile_layers=True)


def test_an_adapter_of_another_base_model_is_one_line(tiny_dir, tmp_path):
    """PEFT's 60-line size-mismatch traceback for an adapter trained on another model becomes one line naming the
    adapter's own base."""
    from tiny_llms import build_tiny_llama

    adapter = build_tiny_lora_adapter(tiny_dir, tmp_path / "adapter")
    wider = build_tiny_llama(tmp_path / "wider", ["cs.IT math.IT a wider model"], vocab_size=300, hidden_size=48)
    with pytest.raises(LlmclsError) as info:
        load_backend(ModelArguments(model=str(wider), adapter=str(adapter), device="cpu"))
    message = str(info.value)
    assert message.startswith(f"--adapter {adapter} does not fit the model {wider} (it was trained on {tiny_dir}")
    assert "size mismatch for " in message and "\n" not in message and len(message) < 600


def test_adapter_changes_the_model_and_loads_without_model(tiny_dir, tmp_path, prompts):
    adapter = build_tiny_lora_adapter(tiny_dir, tmp_path / "adapter")
    plain = load_backend(ModelArguments(model=str(tiny_dir), device="cpu"))
    adapted = load_backend(ModelArguments(model=str(tiny_dir), adapter=str(adapter), device="cpu"))
    base_from_adapter = load_backend(ModelArguments(adapter=str(adapter), device="cpu"))
    a, b = plain.score(prompts[:2], LABELS), adapted.score(prompts[:2], LABELS)
    assert np.abs(a - b).max() > 1e-3  # the adapter's weights are in use
    np.testing.assert_allclose(base_from_adapter.score(prompts[:2], LABELS), b, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# The vLLM backend on a stand-in engine (tests/fake_vllm.py: vLLM's API computed with transformers)


@pytest.fixture
def fake_vllm(monkeypatch):
    import fake_vllm

    return fake_vllm.install(monkeypatch)


def test_vllm_backend_scores_equal_the_hf_backend(tiny_dir, backend, prompts, fake_vllm):
    """The per-(prompt, trie node) requests and their read-back of the engine's per-token log-probabilities give
    the HF backend's scores."""
    engine = load_backend(ModelArguments(model=str(tiny_dir), backend="vllm", tensor_parallel_size=2), batch_size=4)
    assert engine.name == "vllm" and fake_vllm[0].engine_args["tensor_parallel_size"] == 2
    assert fake_vllm[0].engine_args["enable_prefix_caching"] is True
    for kwargs in ({}, {"separator": ", "}, {"separator": ", ", "ends": "all"}):
        np.testing.assert_allclose(engine.score(prompts, LABELS, **kwargs), backend.score(prompts, LABELS, **kwargs),
                                   atol=1e-4)
    asked = [p.logprob_token_ids for _, p in fake_vllm[0].requests]
    assert all(ids and p.max_tokens == 1 for ids, (_, p) in zip(asked, fake_vllm[0].requests, strict=True))


def test_vllm_backend_generation(tiny_dir, backend, prompts, fake_vllm):
    """Free greedy answers equal the HF backend's; structured outputs (the label regex) always parse."""
    engine = load_backend(ModelArguments(model=str(tiny_dir), backend="vllm"))
    assert engine.generate(prompts, max_new_tokens=8, stop=["\n\n"]) == backend.generate(prompts, max_new_tokens=8,
                                                                                          stop=["\n\n"])
    constraint = LabelConstraint(LABELS, ", ", max_labels=3)
    for text in engine.generate(prompts, max_new_tokens=12, constraint=constraint):
        result = parse_labels(text, LABELS)
        assert result.well_formed and result.labels and not result.unknown and len(result.labels) <= 3, text
    params = fake_vllm[0].requests[-1][1]
    assert params.max_tokens == 24 and params.stop is None  # room for other tokenisations; the grammar ends it
    assert re.fullmatch(params.structured_outputs.regex, "cs.IT, math-ph")


def test_vllm_backend_lora_request(tiny_dir, tmp_path, prompts, fake_vllm):
    adapter = build_tiny_lora_adapter(tiny_dir, tmp_path / "adapter", rank=12)
    engine = load_backend(ModelArguments(adapter=str(adapter), backend="vllm"))  # the base model from the adapter
    args = fake_vllm[0].engine_args
    assert fake_vllm[0].model_path == str(tiny_dir) and args["enable_lora"] and args["max_lora_rank"] == 16
    adapted = load_backend(ModelArguments(model=str(tiny_dir), adapter=str(adapter), device="cpu"))
    np.testing.assert_allclose(engine.score(prompts[:2], LABELS), adapted.score(prompts[:2], LABELS), atol=1e-4)


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


def test_prediction_writer_with_labels_holds_scores_as_arrays_and_writes_the_same_file(tmp_path):
    labels = ["cs.IT", "math.IT", "cs.LG"]
    scores = np.array([[-0.5, -1.25, -3.0], [0.1, 2.0, -7.5]])
    rows = [{"id": str(i), "labels": ["cs.IT"], "predicted": ["cs.IT"]} for i in range(2)]
    as_dicts = PredictionWriter(tmp_path / "dicts.jsonl")
    as_dicts.append([r | {"scores": dict(zip(labels, map(float, s), strict=True))}
                     for r, s in zip(rows, scores, strict=True)])
    as_arrays = PredictionWriter(tmp_path / "arrays.jsonl", LabelSpace(labels))
    as_arrays.append([r | {"scores": s} for r, s in zip(rows, scores, strict=True)])
    assert (tmp_path / "arrays.jsonl").read_bytes() == (tmp_path / "dicts.jsonl").read_bytes()
    back = as_arrays.read()
    assert all(isinstance(back[str(i)]["scores"], np.ndarray) for i in range(2))
    assert np.array_equal(np.stack([back["0"]["scores"], back["1"]["scores"]]), scores)
    as_arrays.rewrite(back.values())
    assert (tmp_path / "arrays.jsonl").read_bytes() == (tmp_path / "dicts.jsonl").read_bytes()
    # a file whose mappings list the labels in another order is read in the writer's order
    reordered = PredictionWriter(tmp_path / "dicts.jsonl", LabelSpace(labels[::-1])).read()
    assert np.array_equal(reordered["1"]["scores"], scores[1, ::-1])


def test_prediction_writer_refuses_scores_over_other_labels_naming_the_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    PredictionWriter(path).append([{"id": "a", "labels": [], "predicted": [], "scores": {"x": 1.0, "y": 2.0}},
                                   {"id": "b", "labels": [], "predicted": [], "scores": {"x": 1.0, "z": 2.0}}])
    with pytest.raises(LlmclsError, match=r"predictions.jsonl:2: field 'scores' is over other labels.*y, z"):
        PredictionWriter(path, LabelSpace(["x", "y"])).read()


def test_prediction_writer_names_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b'{"id": "a", "labels": [], "predicted": []}\n{"id": "\xff", "labels": [], "predicted": []}\n')
    with pytest.raises(LlmclsError, match=r"predictions.jsonl:2: not UTF-8 text"):
        PredictionWriter(path).read()


# ---------------------------------------------------------------------------------------------------------------------
# Attention that can apply the backend's masks


def test_a_flash_attention_model_scores_through_sdpa_and_is_given_back(tiny_dir, backend, prompts, monkeypatch):
    """SFT can load FlashAttention (padding-free training), whose kernels take no 4D mask: the backend switches the
    model to sdpa, scores as an sdpa model does, and restore_attention() gives the implementation back."""
    from transformers import AutoModelForCausalLM

    from llmcls.backends.hf import HFBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    model.config._attn_implementation_internal = "flash_attention_2"  # as loaded with it (the kernel is not here)
    flash = HFBackend(model, backend.tokenizer, batch_size=3)
    assert model.config._attn_implementation == "sdpa"
    labels = [" cs.IT", " math.IT", " cs.LG"]
    np.testing.assert_allclose(flash.score(prompts, labels), backend.score(prompts, labels), rtol=1e-5, atol=1e-5)
    # where FlashAttention is installed it can be set again: stand in for that check
    monkeypatch.setattr(type(model), "_check_and_adjust_attn_implementation", lambda self, name, **kw: name)
    flash.restore_attention()
    assert model.config._attn_implementation == "flash_attention_2"


def test_a_model_that_cannot_leave_flash_attention_is_one_line(tiny_dir, backend, monkeypatch):
    from transformers import AutoModelForCausalLM

    from llmcls.backends.hf import HFBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    model.config._attn_implementation_internal = "flash_attention_2"
    monkeypatch.setattr(type(model), "_can_set_attn_implementation", lambda self: False)
    with pytest.raises(LlmclsError, match="attends with flash_attention_2.*--attn_implementation sdpa"):
        HFBackend(model, backend.tokenizer)


def test_a_flash_attention_model_without_sdpa_support_scores_through_eager(tiny_dir, backend, prompts, monkeypatch):
    from transformers import AutoModelForCausalLM

    from llmcls.backends.hf import HFBackend

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    model.config._attn_implementation_internal = "flash_attention_2"
    monkeypatch.setattr(type(model), "_supports_sdpa", False)
    eager = HFBackend(model, backend.tokenizer, batch_size=3)
    assert model.config._attn_implementation == "eager"
    labels = [" cs.IT", " math.IT"]
    np.testing.assert_allclose(eager.score(prompts, labels), backend.score(prompts, labels), rtol=1e-4, atol=1e-4)
