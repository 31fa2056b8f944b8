"""Constrained decoding over a label space: the model may only write label codes, separators and the end.

The answer grammar is `LABEL (SEP LABEL)* END`, no label twice, at most `max_labels` labels. Label codes are
tokenised the way they appear in the answer: the first after the prompt, the others together with the separator in
front of them (byte-level BPE glues the space to the next word: ", cs.LG" is ",", " cs", ".", "LG", so the
separator is not a token sequence of its own). Two token tries hold those sequences; a per-row state walks them:

    first trie ──label end──> END, or a child in the `after` trie (", cs.LG") ──label end──> END or again ...

At every step the logits processor leaves only the tokens that continue some label not yet written and short enough
to finish within the remaining token budget, so an answer is never cut in the middle of a label: every output
parses, even from random weights.

The processor works on tensors only (`GrammarTables`): the tries become padded child tables, a row's state is its
node, the labels it wrote (a boolean row) and their count, and one step is a few gathers and a scatter for the
whole batch, on the device of the scores, with no copy to the host. Generation therefore never waits on Python per
row or on a device-to-host transfer per token.

Stopping when the model leaves the format (`stop_off_format`, on by default): once the answer holds a label, a
step at which the model's own first choice (before masking) is not allowed means it wants something the format
forbids, usually a label it already wrote (small models repeat: "cs.IT, math.IT, math.IT, ..."). Pure masking
would then push it into yet another label, up to `max_labels`; instead the answer ends there, and an item left
unfinished after the last separator is dropped (`complete_items`). A model that keeps to the format is unaffected.

Repeating a label through a prefix label (`astro-ph` / `astro-ph.HE`; with or without `stop_off_format`): after
"astro-ph.HE, astro-ph" a model whose first choice goes on to ".HE" is repeating itself, that is ending its list,
but masking would end the answer on `astro-ph`, a label it never chose. The row writes its choice instead; only
the end is left after it, and `complete_items` drops the last item, unfinished or a repeat ("astro-ph.HE").

Torch is imported inside the functions that need it only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class TokenTrie:
    """Token-id sequences in a prefix tree. Node 0 is the root; every node knows its depth, its parent, the token
    leading into it and the sequence that ends at it, if any."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.children: list[dict[int, int]] = [{}]
        self.ends: list[int | None] = [None]  # index of the sequence that ends at the node
        self.depth: list[int] = [0]
        self.parent: list[int] = [-1]
        self.token: list[int] = [-1]  # the token leading into the node
        self.below: list[list[int]] = [[]]  # the sequences that pass through the node
        self.lengths = [len(seq) for seq in sequences]
        for index, seq in enumerate(sequences):
            if not seq:
                raise ValueError(f"sequence {index} is empty")
            node = 0
            self.below[0].append(index)
            for token in seq:
                child = self.children[node].get(token)
                if child is None:
                    child = len(self.children)
                    self.children[node][token] = child
                    self.children.append({})
                    self.ends.append(None)
                    self.depth.append(self.depth[node] + 1)
                    self.parent.append(node)
                    self.token.append(token)
                    self.below.append([])
                node = child
                self.below[node].append(index)
            if self.ends[node] is not None:
                raise ValueError(f"sequences {self.ends[node]} and {index} have the same tokens")
            self.ends[node] = index

    def __len__(self) -> int:
        return len(self.children)


@dataclass
class LabelGrammar:
    """The compiled answer grammar of one label space for one tokenizer (see the module docstring). Both tries
    list the labels in the same order: sequence i of `first` and of `after` is label i."""

    first: TokenTrie
    after: TokenTrie
    end_ids: tuple[int, ...]
    max_labels: int | None = None
    stop_off_format: bool = False
    _tables: dict = field(default_factory=dict, repr=False)

    def tables(self, device) -> GrammarTables:
        """The grammar as tensors on `device` (built once per device)."""
        key = str(device)
        if key not in self._tables:
            self._tables[key] = GrammarTables.build(self, device)
        return self._tables[key]


NEVER = 1 << 20  # "no label below this node": more tokens than any budget


@dataclass
class GrammarTables:
    """Both tries in one node numbering (the `first` trie's nodes, then the `after` trie's, whose root is
    `after_root`), as padded tables on one device. Row state: `node` (B,), `written` (B, L) bool, `count` (B,),
    `done` (B,) bool.

    - `child_token`, `child_node`, `child_valid` (N, K): a node's children, padded with token -1 and node 0
      (`child_valid` is False there);
    - `remaining` (N, L): tokens still to write, counted from the node, to finish label l through it (NEVER when
      label l does not pass through it); a child is allowed when it leads to a label that is not written yet and
      fits in the budget left after this token;
    - `ends` (N,): the label that is complete at the node, -1 if none;
    - `end_ids` (E,): the tokens that end an answer."""

    child_token: object
    child_node: object
    child_valid: object
    remaining: object
    ends: object
    end_ids: object
    after_root: int
    n_labels: int
    max_labels: int | None
    stop_off_format: bool

    @classmethod
    def build(cls, grammar: LabelGrammar, device) -> GrammarTables:
        import torch

        tries = (grammar.first, grammar.after)
        offsets = (0, len(grammar.first))
        n_nodes, n_labels = len(grammar.first) + len(grammar.after), len(grammar.first.lengths)
        if len(grammar.after.lengths) != n_labels:
            raise ValueError("the first and after tries must hold the same labels")
        width = max(max(len(c) for c in trie.children) for trie in tries)
        child_token = torch.full((n_nodes, max(width, 1)), -1, dtype=torch.long)
        child_node = torch.zeros((n_nodes, max(width, 1)), dtype=torch.long)
        remaining = torch.full((n_nodes, n_labels), NEVER, dtype=torch.int32)
        ends = torch.full((n_nodes,), -1, dtype=torch.long)
        for trie, offset in zip(tries, offsets, strict=True):
            for node, children in enumerate(trie.children):
                for k, (token, child) in enumerate(children.items()):
                    child_token[offset + node, k] = token
                    child_node[offset + node, k] = offset + child
                for label in trie.below[node]:
                    remaining[offset + node, label] = trie.lengths[label] - trie.depth[node]
                if trie.ends[node] is not None:
                    ends[offset + node] = trie.ends[node]
        return cls(child_token=child_token.to(device), child_node=child_node.to(device),
                   child_valid=(child_token >= 0).to(device), remaining=remaining.to(device), ends=ends.to(device),
                   end_ids=torch.tensor(grammar.end_ids, dtype=torch.long, device=device), after_root=offsets[1],
                   n_labels=n_labels, max_labels=grammar.max_labels, stop_off_format=grammar.stop_off_format)

    def start(self, rows: int) -> dict:
        """The state of `rows` answers that have not begun."""
        import torch

        device = self.ends.device
        return {"node": torch.zeros(rows, dtype=torch.long, device=device),
                "written": torch.zeros((rows, self.n_labels), dtype=torch.bool, device=device),
                "count": torch.zeros(rows, dtype=torch.long, device=device),
                "done": torch.zeros(rows, dtype=torch.bool, device=device)}

    def allowed(self, state: dict, budget: int, vocab: int, top=None):
        """(B, M) token ids each row may write next with `budget` tokens left (this one included); unused slots hold
        `vocab` (one past the last token id). `top` (B,), the model's own first choice, lets a row repeat a label
        through a prefix label and, with `stop_off_format`, ends the rows that leave the format once they hold a
        label."""
        import torch

        node, written, count, done = state["node"], state["written"], state["count"], state["done"]
        free = ~written
        # continue the label being written: children through which an unwritten label can still be finished
        tokens, nodes = self.child_token[node], self.child_node[node]  # (B, K)
        below = self.remaining[nodes]  # (B, K, L)
        child_ok = self.child_valid[node] & ((below <= budget - 1) & free[:, None, :]).any(-1)
        # at the end of a label not yet written: end the answer, or a separator and the next label
        label = self.ends[node]
        fresh = (label >= 0) & ~written.gather(1, label.clamp(min=0)[:, None])[:, 0]
        more = fresh if self.max_labels is None else fresh & (count + 1 < self.max_labels)
        root_tokens, root_nodes = self.child_token[self.after_root], self.child_node[self.after_root]  # (K,)
        free_next = free & (torch.arange(self.n_labels, device=node.device)[None] != label[:, None])
        after_fits = (self.remaining[root_nodes][None] <= budget - 1) & free_next[:, None, :]  # (B, K, L)
        after_ok = more[:, None] & self.child_valid[self.after_root][None] & after_fits.any(-1)
        # the end only: a finished row, a row with nothing left that fits, a row that left the format
        end_only = done | ~(child_ok.any(-1) | after_ok.any(-1) | fresh)
        # a repeat through a prefix label: at the end of a fresh label ("cs.IT, cs"), the model's first choice goes
        # on into written labels only (".IT"). Ending here would keep a label it never chose: it writes that token
        # instead, after which only the end is left, and `complete_items` drops the item
        repeat = torch.zeros_like(child_ok)  # (B, K): the child a repeating row goes on into
        if top is not None:
            top = top[:, None]
            into_written = ~((below < NEVER) & free[:, None, :]).any(-1)
            repeat = (tokens == top) & self.child_valid[node] & into_written & (fresh & ~done)[:, None]
            if self.stop_off_format:
                kept = (((tokens == top) & child_ok).any(-1) | ((root_tokens[None] == top) & after_ok).any(-1)
                        | (fresh & (self.end_ids[None] == top).any(-1)) | repeat.any(-1))
                end_only |= ((count > 0) | (label >= 0)) & ~kept
        repeating = repeat.any(-1)
        free_choice = ~(end_only | repeating)[:, None]  # rows that write whatever the grammar allows
        unused = torch.full((1,), vocab, dtype=torch.long, device=node.device)
        return torch.cat([torch.where((child_ok & free_choice) | repeat, tokens, unused),
                          torch.where(after_ok & free_choice, root_tokens[None], unused),
                          torch.where((end_only | (fresh & ~repeating))[:, None], self.end_ids[None], unused)], dim=1)

    def advance(self, state: dict, token) -> None:
        """Move every row's state over the token (B,) it wrote; rows that are done stay as they are."""
        import torch

        node, done = state["node"], state["done"]
        ends = (token[:, None] == self.end_ids[None]).any(-1)
        tokens = self.child_token[node]
        match = (tokens == token[:, None]) & self.child_valid[node]
        into_child = match.any(-1)
        child = self.child_node[node].gather(1, match.int().argmax(-1, keepdim=True))[:, 0]
        root_tokens = self.child_token[self.after_root]
        next_item = (root_tokens[None] == token[:, None]) & self.child_valid[self.after_root][None]
        label = self.ends[node]
        separated = ~into_child & (label >= 0) & next_item.any(-1) & ~done & ~ends
        after_node = self.child_node[self.after_root][next_item.int().argmax(-1)]
        state["written"] |= separated[:, None] & (torch.arange(self.n_labels, device=node.device)[None]
                                                  == label[:, None])
        state["count"] = state["count"] + separated.long()
        moved = torch.where(into_child, child, torch.where(separated, after_node, node))
        state["node"] = torch.where(done | ends, node, moved)
        # a token off the grammar is only possible if the mask was bypassed: end the row instead of guessing
        state["done"] = done | ends | ~(into_child | separated)


def make_processor(grammar: LabelGrammar, max_new_tokens: int):
    """A transformers `LogitsProcessor` enforcing `grammar` on every row of one `generate` call."""
    import torch
    from transformers import LogitsProcessor

    class LabelGrammarProcessor(LogitsProcessor):
        def __init__(self):
            self.state: dict | None = None
            self.start = 0
            self.tables: GrammarTables | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.state is None:  # first step: the prompt (left-padded to one length) ends here
                self.tables = grammar.tables(scores.device)
                self.start = input_ids.shape[1]
                self.state = self.tables.start(input_ids.shape[0])
            else:
                self.tables.advance(self.state, input_ids[:, -1])
            budget = max_new_tokens - (input_ids.shape[1] - self.start)
            top = scores.argmax(dim=-1)  # the model's own first choice
            vocab = scores.shape[-1]
            allowed = self.tables.allowed(self.state, budget, vocab, top)
            # one pass over the (B, vocab) scores: -inf everywhere, then the allowed scores copied back (unused
            # slots write to an extra column, cut off on return)
            masked = scores.new_full((scores.shape[0], vocab + 1), float("-inf"))
            masked.scatter_(1, allowed, scores.gather(1, allowed.clamp(max=vocab - 1)))
            return masked[:, :vocab]

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
