"""The constrained-decoding tables against a plain reading of the answer grammar, step by step.

`GrammarTables.allowed` / `advance` (and the logits processor around them) compute, with batched tensors, which
tokens each row may write next. Here a small reference walks the tries themselves with Python sets and loops, one
row at a time, and at every step of random walks the set of allowed tokens of every row must equal the reference's:
synthetic label tries (shared prefixes, labels that are prefixes of others, many short labels so that rows write
many of them), real label spaces tokenised by a small byte-level BPE (AAPD's labels, the arXiv taxonomy with
`cs` / `cs.IT`, `math` / `math-ph`, `astro-ph` / `astro-ph.HE`), answer caps, token budgets, the model's first
choice (`top`), `stop_off_format`, and now and then a token the mask did not allow (a bypassed mask), after which
the tables must still agree with the reference.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from conftest import RESOURCES, read_jsonl

from llmcls.backends.constrained import LabelGrammar, TokenTrie, build_grammar, make_processor


@dataclass
class _Row:
    """One answer's grammar state: a node of the `first` (0) or `after` (1) trie, the labels it wrote (those
    followed by a separator), how many separators, and whether it ended."""

    trie: int = 0
    node: int = 0
    written: set = field(default_factory=set)
    count: int = 0
    done: bool = False


def _reference_allowed(grammar: LabelGrammar, row: _Row, budget: int, top: int | None) -> set[int]:
    """The tokens `row` may write next with `budget` tokens left (this one included), read off the tries."""
    first, after = grammar.first, grammar.after
    trie = (first, after)[row.trie]
    end_ids = set(grammar.end_ids)
    if row.done:
        return end_ids

    def finishes(t: TokenTrie, child: int, taken: set) -> bool:  # a label through `child`, not in `taken`, fits
        return any(label not in taken and t.lengths[label] - t.depth[child] <= budget - 1 for label in t.below[child])

    children = {token for token, child in trie.children[row.node].items() if finishes(trie, child, row.written)}
    label = trie.ends[row.node]
    fresh = label is not None and label not in row.written
    more = fresh and (grammar.max_labels is None or row.count + 1 < grammar.max_labels)
    separators = {token for token, child in after.children[0].items()
                  if more and finishes(after, child, row.written | {label})}
    end_only = not (children or separators or fresh)
    if top is not None:
        into = trie.children[row.node].get(top)
        if fresh and into is not None and set(trie.below[into]) <= row.written:
            return {top}  # a repeat through a prefix label: the row writes its choice, then only the end
        if grammar.stop_off_format and (row.count > 0 or label is not None):
            end_only |= not (top in children or top in separators or (fresh and top in end_ids))
    if end_only:
        return end_ids
    return children | separators | (end_ids if fresh else set())


def _reference_advance(grammar: LabelGrammar, row: _Row, token: int) -> None:
    """Move `row` over `token`: into a child, over a separator after a complete label, or to the end (an end token
    or a token off the grammar)."""
    if row.done:
        return
    if token in grammar.end_ids:
        row.done = True
        return
    trie = (grammar.first, grammar.after)[row.trie]
    child = trie.children[row.node].get(token)
    if child is not None:
        row.node = child
        return
    label, roots = trie.ends[row.node], grammar.after.children[0]
    if label is not None and token in roots:
        row.written.add(label)
        row.count += 1
        row.trie, row.node = 1, roots[token]
        return
    row.done = True


def _grammar_tokens(grammar: LabelGrammar, row: _Row) -> list[int]:
    """Tokens the grammar knows at `row` (allowed or not): its children, the separators, the end."""
    trie = (grammar.first, grammar.after)[row.trie]
    return [*trie.children[row.node], *grammar.after.children[0], *grammar.end_ids]


def _pick(rng: random.Random, grammar: LabelGrammar, row: _Row, allowed: set[int], vocab: int) -> int:
    """Mostly an allowed token other than the end (so that walks go deep); now and then one the mask forbade (a
    bypassed mask), to check that the tables keep following the reference even off the usual paths."""
    if rng.random() < 0.1:
        return rng.choice(_grammar_tokens(grammar, row)) if rng.random() < 0.9 else rng.randrange(vocab)
    going_on = sorted(allowed - set(grammar.end_ids))
    return rng.choice(going_on if going_on and rng.random() < 0.9 else sorted(allowed))


def _top(rng: random.Random, grammar: LabelGrammar, row: _Row, budget: int, vocab: int) -> int:
    """The model's first choice: a token the grammar allows, one it knows at the row (allowed or not), or any."""
    draw = rng.random()
    if draw < 0.5:
        return rng.choice(sorted(_reference_allowed(grammar, row, budget, None)))
    return rng.choice(_grammar_tokens(grammar, row)) if draw < 0.85 else rng.randrange(vocab)


def _walk_tables(grammar: LabelGrammar, rng: random.Random, rows: int, steps: int, vocab: int, with_top: bool,
                 budgets: str) -> int:
    """Drive `GrammarTables` directly over `steps` steps, comparing every row's allowed set with the reference;
    returns the most labels a row wrote (to check that the walk went deep)."""
    import torch

    tables = grammar.tables("cpu")
    state = tables.start(rows)
    reference = [_Row() for _ in range(rows)]
    for step in range(steps):
        budget = steps - step if budgets == "decreasing" else rng.randint(0, steps)
        top = [_top(rng, grammar, row, budget, vocab) for row in reference] if with_top else None
        ids = tables.allowed(state, budget, vocab, None if top is None else torch.tensor(top))
        got = [{t for t in row if t != vocab} for row in ids.tolist()]
        for r, row in enumerate(reference):
            expected = _reference_allowed(grammar, row, budget, None if top is None else top[r])
            assert got[r] == expected, (step, r, row, budget, None if top is None else top[r])
        tokens = [_pick(rng, grammar, row, got[r], vocab) for r, row in enumerate(reference)]
        tables.advance(state, torch.tensor(tokens))
        for row, token in zip(reference, tokens, strict=True):
            _reference_advance(grammar, row, token)
        assert state["done"].tolist() == [row.done for row in reference]
        assert state["count"].tolist() == [row.count for row in reference]
    return max(len(row.written) for row in reference)


def _synthetic_grammar(rng: random.Random, n_labels: int, alphabet: int, longest: int, max_labels, stop: bool):
    """Random label tries over tokens 1..alphabet: shared prefixes and prefix labels come by themselves; after the
    separator (token 50) the first token is sometimes glued to it (shifted by 20), as byte-level BPE does."""
    first: list[list[int]] = []
    n_labels = min(n_labels, sum(alphabet ** n for n in range(1, longest + 1)))  # distinct sequences exist
    while len(first) < n_labels:
        seq = [rng.randint(1, alphabet) for _ in range(rng.randint(1, longest))]
        if seq not in first:
            first.append(seq)
    glued = rng.random() < 0.5
    after = [[50, seq[0] + 20 * glued, *seq[1:]] for seq in first]
    end_ids = (99,) if rng.random() < 0.5 else (98, 99)
    return LabelGrammar(TokenTrie(first), TokenTrie(after), end_ids, max_labels, stop_off_format=stop)


@pytest.mark.parametrize("seed", range(60))
def test_tables_match_the_reference_on_random_tries(seed):
    rng = random.Random(seed)
    n_labels = rng.choice([1, 2, 5, 12, 30])
    grammar = _synthetic_grammar(rng, n_labels, alphabet=rng.choice([3, 6, 12]), longest=rng.choice([2, 3, 4]),
                                 max_labels=rng.choice([None, 1, 2, 3, 5]), stop=rng.random() < 0.5)
    _walk_tables(grammar, rng, rows=8, steps=rng.randint(1, 30), vocab=100, with_top=rng.random() < 0.7,
                 budgets=rng.choice(["decreasing", "random"]))


@pytest.mark.parametrize("seed", range(6))
def test_tables_match_the_reference_when_rows_write_many_labels(seed):
    """Many one-token labels, no cap and a long budget: rows write a dozen labels and more, so that any shortcut
    that looks at a bounded number of written labels would be caught."""
    rng = random.Random(100 + seed)
    first = [[token] for token in range(1, 31)] + [[1, 2], [1, 3], [2, 1]]  # prefix labels too
    grammar = LabelGrammar(TokenTrie(first), TokenTrie([[50, *seq] for seq in first]), (99,),
                           max_labels=None if seed % 2 == 0 else 4, stop_off_format=seed in (3, 5))
    most = _walk_tables(grammar, rng, rows=8, steps=60, vocab=100, with_top=seed > 1, budgets="decreasing")
    if grammar.max_labels is None:
        assert most >= 12


# ---------------------------------------------------------------------------------------------------------------------
# Real label spaces, tokenised as in an answer


def _taxonomy_codes() -> list[str]:
    lines = (RESOURCES.parent / "arxiv_taxonomy.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()]


def _aapd_labels() -> list[str]:
    return sorted({label for row in read_jsonl(RESOURCES / "aapd-train.jsonl") for label in row["labels"]})


@pytest.fixture(scope="module")
def tokenizer():
    from tiny_llms import train_tokenizer

    texts = [", ".join(_taxonomy_codes()), ", ".join(_aapd_labels()), "cs, math, physics, cs.IT, math-ph"] * 10
    return train_tokenizer(texts, vocab_size=400)


LABEL_SPACES = {
    "aapd": lambda: _aapd_labels(),
    "prefixes": lambda: ["cs", "cs.IT", "cs.LG", "math", "math-ph", "math.IT", "astro-ph", "astro-ph.HE", "stat.ML"],
    "taxonomy": lambda: sorted(set(_taxonomy_codes()) | {"cs", "math", "physics", "q-bio", "q-fin", "stat"}),
}


@pytest.mark.parametrize("space", sorted(LABEL_SPACES))
@pytest.mark.parametrize("max_labels", [None, 1, 3])
@pytest.mark.parametrize("stop", [False, True])
def test_processor_masks_match_the_reference_on_real_label_spaces(tokenizer, space, max_labels, stop):
    """The logits processor as `generate` calls it (one call per token, the budget from the prompt length): the
    finite scores of every row are exactly the reference's allowed tokens, the model's first choice steered now
    into the grammar, now out of it."""
    import torch

    labels = LABEL_SPACES[space]()
    grammar = build_grammar(tokenizer, labels, ", ", "<|im_start|>assistant\n", [tokenizer.eos_token_id],
                            max_labels=max_labels, stop_off_format=stop)
    vocab, rows = len(tokenizer), 12
    rng = random.Random(f"{space}-{max_labels}-{stop}")
    for max_new_tokens in (3, 9, 24):
        processor = make_processor(grammar, max_new_tokens)
        ids = torch.zeros((rows, 5), dtype=torch.long)
        reference = [_Row() for _ in range(rows)]
        for step in range(max_new_tokens):
            scores = torch.randn((rows, vocab), generator=torch.Generator().manual_seed(rng.randrange(1 << 30)))
            top = [_top(rng, grammar, row, max_new_tokens - step, vocab) for row in reference]
            scores[torch.arange(rows), torch.tensor(top)] = 10.0  # the model's first choice
            masked = processor(ids, scores)
            for r, row in enumerate(reference):
                expected = _reference_allowed(grammar, row, max_new_tokens - step, top[r])
                assert set(torch.isfinite(masked[r]).nonzero().flatten().tolist()) == expected, (step, r, row)
            allowed = [set(torch.isfinite(masked[r]).nonzero().flatten().tolist()) for r in range(rows)]
            tokens = [_pick(rng, grammar, row, allowed[r], vocab) for r, row in enumerate(reference)]
            for row, token in zip(reference, tokens, strict=True):
                _reference_advance(grammar, row, token)
            ids = torch.cat([ids, torch.tensor(tokens)[:, None]], dim=1)


@pytest.mark.parametrize("space", sorted(LABEL_SPACES))
def test_tables_match_the_reference_on_real_label_spaces(tokenizer, space):
    """`GrammarTables` driven directly over a real label space, with and without the model's first choice."""
    labels = LABEL_SPACES[space]()
    for seed, max_labels in enumerate([None, 2, 6]):
        grammar = build_grammar(tokenizer, labels, ", ", "<|im_start|>assistant\n", [tokenizer.eos_token_id],
                                max_labels=max_labels, stop_off_format=seed == 1)
        rng = random.Random(seed)
        _walk_tables(grammar, rng, rows=16, steps=30, vocab=len(tokenizer), with_top=seed != 2,
                     budgets="decreasing")
