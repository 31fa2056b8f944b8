"""Constrained decoding over a label space: the model may only write label codes, separators and the end.

The answer grammar is `LABEL (SEP LABEL)* END`, no label twice, at most `max_labels` labels. Label codes are
tokenised the way they appear in the answer: the first after the prompt, the others together with the separator in
front of them (byte-level BPE glues the space to the next word: ", cs.LG" is ",", " cs", ".", "LG", so the
separator is not a token sequence of its own). Two token tries hold those sequences; a per-row state walks them:

    first trie ──label end──> END, or a child in the `after` trie (", cs.LG") ──label end──> END or again ...

At every step the logits processor leaves only the tokens that continue some label not yet written and short enough
to finish within the remaining token budget, so an answer is never cut in the middle of a label: every output
parses, even from random weights.

Stopping when the model leaves the format (`stop_off_format`, on by default): once the answer holds a label, a
step at which the model's own first choice (before masking) is not allowed means it wants something the format
forbids, usually a label it already wrote (small models repeat: "cs.IT, math.IT, math.IT, ..."). Pure masking
would then push it into yet another label, up to `max_labels`; instead the answer ends there, and an item left
unfinished after the last separator is dropped (`complete_items`). A model that keeps to the format is unaffected.
Torch is imported inside the processor only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class TokenTrie:
    """Token-id sequences in a prefix tree. Node 0 is the root; every node knows its depth and, as a bit mask, the
    sequences that pass through it (masks make "is any unused label left below this child" one integer AND)."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.children: list[dict[int, int]] = [{}]
        self.ends: list[int | None] = [None]  # index of the sequence that ends at the node
        self.masks: list[int] = [0]
        self.depth: list[int] = [0]
        self.parent: list[int] = [-1]
        self.token: list[int] = [-1]  # the token leading into the node
        self.lengths = [len(seq) for seq in sequences]
        for index, seq in enumerate(sequences):
            if not seq:
                raise ValueError(f"sequence {index} is empty")
            node = 0
            self.masks[0] |= 1 << index
            for token in seq:
                child = self.children[node].get(token)
                if child is None:
                    child = len(self.children)
                    self.children[node][token] = child
                    self.children.append({})
                    self.ends.append(None)
                    self.masks.append(0)
                    self.depth.append(self.depth[node] + 1)
                    self.parent.append(node)
                    self.token.append(token)
                node = child
                self.masks[node] |= 1 << index
            if self.ends[node] is not None:
                raise ValueError(f"sequences {self.ends[node]} and {index} have the same tokens")
            self.ends[node] = index
        # per node: sequences below it that need at most n more tokens, for the budget check near the end
        self._max_below = [max((self.lengths[i] for i in _bits(m)), default=0) for m in self.masks]

    def __len__(self) -> int:
        return len(self.children)

    def fitting(self, node: int, budget: int) -> int:
        """Mask of the sequences through `node` that can be finished with at most `budget` more tokens."""
        mask = self.masks[node]
        if self._max_below[node] - self.depth[node] <= budget:  # the common case: everything fits
            return mask
        limit = budget + self.depth[node]
        return sum(1 << i for i in _bits(mask) if self.lengths[i] <= limit)


def _bits(mask: int):
    index = 0
    while mask:
        if mask & 1:
            yield index
        mask >>= 1
        index += 1


@dataclass
class LabelGrammar:
    """The compiled answer grammar of one label space for one tokenizer (see the module docstring)."""

    first: TokenTrie
    after: TokenTrie
    end_ids: tuple[int, ...]
    max_labels: int | None = None
    stop_off_format: bool = False
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        # budgets above the longest label behave alike, so they share one memo entry
        self._budget_cap = max(self.first.lengths + self.after.lengths) + 1

    def allowed(self, state: RowState, budget: int) -> list[int]:
        """Token ids the row may write next, with `budget` tokens left (this one included)."""
        if state.done:
            return [self.end_ids[0]]
        key = (state.in_after, state.node, state.emitted, state.count, min(budget, self._budget_cap))
        cached = self._memo.get(key)
        if cached is None:
            cached = self._allowed(state, budget)
            if len(self._memo) > 200_000:  # bound the memory of long runs with many label combinations
                self._memo.clear()
            self._memo[key] = cached
        return cached

    def _allowed(self, state: RowState, budget: int) -> list[int]:
        trie = self.after if state.in_after else self.first
        free = ~state.emitted
        # continue the label being written (children of the node), if a label below can still be finished
        tokens = [token for token, child in trie.children[state.node].items()
                  if trie.fitting(child, budget - 1) & free]
        label = trie.ends[state.node]
        if label is not None and not state.emitted >> label & 1:  # a new complete label: end, or go on
            tokens.extend(self.end_ids)
            if self.max_labels is None or state.count + 1 < self.max_labels:
                free_next = free & ~(1 << label)
                tokens.extend(token for token, child in self.after.children[0].items()
                              if self.after.fitting(child, budget - 1) & free_next)
        return tokens or list(self.end_ids)  # nothing fits any more (e.g. budget spent at the root): end

    def has_label(self, state: RowState) -> bool:
        """The answer already holds a complete label (it may end without breaking the format)."""
        return state.count > 0 or (not state.in_after and self.first.ends[state.node] is not None)

    def advance(self, state: RowState, token: int) -> None:
        """Move the row's state over the token it wrote."""
        if state.done:
            return
        if token in self.end_ids:
            state.done = True
            return
        trie = self.after if state.in_after else self.first
        child = trie.children[state.node].get(token)
        if child is not None:
            state.node = child
            return
        label = trie.ends[state.node]
        nxt = self.after.children[0].get(token)
        if label is None or nxt is None:  # only reachable if the mask was bypassed; stop instead of guessing
            state.done = True
            return
        state.emitted |= 1 << label
        state.count += 1
        state.in_after, state.node = True, nxt


@dataclass
class RowState:
    in_after: bool = False
    node: int = 0
    emitted: int = 0  # bit mask of the labels already written
    count: int = 0
    done: bool = False


def make_processor(grammar: LabelGrammar, max_new_tokens: int):
    """A transformers `LogitsProcessor` enforcing `grammar` on every row of one `generate` call."""
    import torch
    from transformers import LogitsProcessor

    class LabelGrammarProcessor(LogitsProcessor):
        def __init__(self):
            self.states: list[RowState] | None = None
            self.start = 0

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.states is None:  # first step: the prompt (left-padded to one length) ends here
                self.start = input_ids.shape[1]
                self.states = [RowState() for _ in range(input_ids.shape[0])]
            else:
                for state, token in zip(self.states, input_ids[:, -1].tolist(), strict=True):
                    grammar.advance(state, token)
            budget = max_new_tokens - (input_ids.shape[1] - self.start)
            # the model's own first choice, before masking (one argmax and one transfer for the whole batch)
            top = scores.argmax(dim=-1).tolist() if grammar.stop_off_format else None
            rows: list[int] = []
            cols: list[int] = []
            for row, state in enumerate(self.states):
                allowed = grammar.allowed(state, budget)
                if top is not None and not state.done and top[row] not in allowed and grammar.has_label(state):
                    allowed = list(grammar.end_ids)  # it left the answer format: the answer is over
                rows.extend([row] * len(allowed))
                cols.extend(allowed)
            keep = torch.zeros_like(scores, dtype=torch.bool)
            keep[torch.tensor(rows, device=scores.device), torch.tensor(cols, device=scores.device)] = True
            return scores.masked_fill(~keep, float("-inf"))

    return LabelGrammarProcessor()


def label_regex(labels: Sequence[str], separator: str, max_labels: int | None = None) -> str:
    """The answer grammar as a regular expression, for engines that take one (vLLM's structured outputs).

    A regular expression cannot forbid repeating a label: such outputs still parse (the parser drops the repeat)
    but count as not well-formed."""
    # longest first, so that an engine matching alternatives in order never stops at a shorter prefix label
    alternatives = "|".join(regex_escape(label) for label in sorted(labels, key=len, reverse=True))
    repeat = "*" if max_labels is None else f"{{0,{max(max_labels - 1, 0)}}}"
    # plain groups: every regex engine behind structured outputs (xgrammar, guidance, outlines) reads them
    return f"({alternatives})({regex_escape(separator)}({alternatives})){repeat}"


def regex_escape(text: str) -> str:
    """Escape regex metacharacters only: `re.escape` also escapes "-" and " ", which ECMAScript-style engines
    (xgrammar) reject outside a character class."""
    import re

    return re.sub(r"([.^$*+?()\[\]{}|\\/])", r"\\\1", text)


# ---------------------------------------------------------------------------------------------------------------------
# Tokenising labels the way they appear in an answer


def continuation_ids(tokenizer, context: str, text: str) -> list[int]:
    """Token ids of `text` as it is tokenised right after `context` (e.g. the end of the prompt).

    Tokenising `text` alone can differ from how it appears in a longer string (SentencePiece prefixes a space marker,
    BPE merges across the boundary), so the ids are the tail of `context + text` past the ids of `context`; when the
    boundary merged into one token, `text` alone is the fallback.
    """
    head = tokenizer.encode(context, add_special_tokens=False)
    full = tokenizer.encode(context + text, add_special_tokens=False)
    if len(full) > len(head) and full[: len(head)] == head:
        return full[len(head):]
    return tokenizer.encode(text, add_special_tokens=False)


def common_suffix(texts: Sequence[str], limit: int = 32) -> str:
    """The longest common suffix of `texts` (at most `limit` characters): the context every answer starts after.

    Only the last characters decide how the answer's first token is cut, and a short limit makes the context of
    one prompt (a batch of one) the same as that of many: the chat template's tail, not the abstract's end."""
    if not texts:
        return ""
    first = texts[0][-limit:]
    size = len(first)
    for text in texts[1:]:
        size = min(size, len(text))
        while size and not text.endswith(first[len(first) - size:]):
            size -= 1
    return first[len(first) - size:] if size else ""


def label_sequences(tokenizer, labels: Sequence[str], separator: str, context: str,
                    prefix: str = "") -> tuple[list, list]:
    """Token ids of every label as the first answer item (after `prefix`, e.g. the space that follows a plain
    prompt's "Categories:") and as a later item (separator included)."""
    first = [continuation_ids(tokenizer, context, prefix + label) for label in labels]
    previous = context + prefix + labels[0]  # any label will do: a separator does not merge with a label's end
    after = [continuation_ids(tokenizer, previous, separator + label) for label in labels]
    return first, after


def build_grammar(tokenizer, labels: Sequence[str], separator: str, context: str, end_ids: Sequence[int],
                  max_labels: int | None = None, prefix: str = "", stop_off_format: bool = False) -> LabelGrammar:
    first, after = label_sequences(tokenizer, labels, separator, context, prefix)
    return LabelGrammar(TokenTrie(first), TokenTrie(after), tuple(end_ids), max_labels, stop_off_format)


def complete_items(text: str, labels: Sequence[str], separator: str) -> str:
    """`text` without a last item that is not a new complete label (left when the answer ended early, mid-item:
    "cs.IT, math." or, with prefix labels, "cs, cs" on the way to "cs, cs.IT")."""
    items = text.split(separator)
    known = set(labels)
    while len(items) > 1 and (items[-1].strip() not in known
                              or items[-1].strip() in {item.strip() for item in items[:-1]}):
        items.pop()
    return separator.join(items)


# ---------------------------------------------------------------------------------------------------------------------
# Scoring every label with the prompt encoded once


@dataclass
class ScorePlan:
    """How to score label continuations from next-token distributions, sharing every common prefix.

    The label tokens form a trie. The distribution after the prompt (the root) gives every label's first token;
    each inner node is one extra token run after the prompt (attending to the prompt's cached keys and values and
    to its own ancestors only), and its distribution gives its children's tokens. A label's score is the sum of
    its tokens' log-probabilities, plus (see `ends`) the log-probability that the label ends there: that the next
    token starts the separator or ends the answer. With `ends="prefixes"` the end term is added only where a label
    is a token prefix of another (`math` / `math-ph`), so that the shorter label does not absorb the longer one's
    probability; leaves then need no forward position of their own, which halves the extra work.

    Requests are (node, token) pairs: `query_nodes[q]` is a node whose next-token distribution is needed (the root
    first), `pairs[p] = (q, token)` one log-probability to read from it; `combine` turns the read values into scores.
    """

    trie: TokenTrie
    query_nodes: list[int]
    pairs: list[tuple[int, int]]
    token_pairs: list[list[int]]  # per label: the pairs of its tokens
    end_pairs: list[list[int]]  # per label: the pairs whose probabilities sum to "the label ends here"

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], end_ids: Sequence[int], ends: str = "prefixes") -> ScorePlan:
        if ends not in ("none", "prefixes", "all"):
            raise ValueError(f"ends must be none, prefixes or all, not {ends!r}")
        trie = TokenTrie(sequences)
        needs_end = [ends == "all" or (ends == "prefixes" and bool(trie.children[node]))
                     for node in range(len(trie))]
        needs_end = [flag and trie.ends[node] is not None for node, flag in enumerate(needs_end)]
        # breadth-first: a node's ancestors always come before it (the forward pass relies on it)
        order, frontier = [], [0]
        while frontier:
            order.extend(frontier)
            frontier = [child for node in frontier for child in trie.children[node].values()]
        query_nodes = [node for node in order if node == 0 or trie.children[node] or needs_end[node]]
        query_of = {node: q for q, node in enumerate(query_nodes)}
        pairs: list[tuple[int, int]] = []
        pair_of: dict[tuple[int, int], int] = {}

        def pair(q: int, token: int) -> int:
            if (q, token) not in pair_of:
                pair_of[(q, token)] = len(pairs)
                pairs.append((q, token))
            return pair_of[(q, token)]

        token_pairs: list[list[int]] = []
        end_pairs: list[list[int]] = []
        for seq in sequences:
            node, own = 0, []
            for token in seq:
                own.append(pair(query_of[node], token))
                node = trie.children[node][token]
            token_pairs.append(own)
            end_pairs.append([pair(query_of[node], token) for token in dict.fromkeys(end_ids)] if needs_end[node]
                             else [])
        return cls(trie, query_nodes, pairs, token_pairs, end_pairs)

    def combine(self, pair_logprobs):
        """(n_rows, n_pairs) log-probabilities of the pairs -> (n_rows, n_labels) label scores."""
        import numpy as np

        values = np.asarray(pair_logprobs, dtype=np.float64)
        scores = np.empty((values.shape[0], len(self.token_pairs)))
        for label, (tokens, ends) in enumerate(zip(self.token_pairs, self.end_pairs, strict=True)):
            scores[:, label] = values[:, tokens].sum(axis=1)
            if ends:
                scores[:, label] += np.logaddexp.reduce(values[:, ends], axis=1)
        return scores
