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
row or on a device-to-host transfer per token. Whether a child still leads to a label that is new and fits is read
from the few labels nearest to finishing below it (one more than a row can have written so far), so a step costs
about batch x fan-out x labels written, whatever the size of the label space.

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


NEVER = 1 << 20  # "no label here" (padding): more tokens than any budget


@dataclass
class GrammarTables:
    """Both tries in one node numbering (the `first` trie's nodes, then the `after` trie's, whose root is
    `after_root`), as tables on one device. Row state: `node` (B,), `written` (B, L) bool, `count` (B,), `done` (B,)
    bool, and `steps`, the number of `advance` calls so far (a Python int, see `most_written`).

    - `child_token`, `child_node`, `child_valid` (N, K): a node's children, padded with token -1 and node 0
      (`child_valid` is False there);
    - `near_label`, `near_rest` (T,), `near_start`, `near_size` (N,): per node, the labels that pass through it,
      nearest to finishing first, and the tokens still to write from the node to finish each, one node after the
      other (T: the sum of the tries' label lengths and a little more; `nearest` pads the first few of each node);
    - `ends` (N,): the label that is complete at the node, -1 if none;
    - `end_ids` (E,): the tokens that end an answer;
    - `shortest_first`, `shortest_after`: the fewest tokens of a label in each trie.

    Why nearest first: a child is allowed when some label below it is not written yet (nor the label just finished,
    for a separator) and fits in the budget. If a row has written at most `w` labels, such a label exists exactly
    when one of the `w + 1` labels nearest to finishing below the child is one: they are at least as short as any
    other, and `w` written labels cannot be all of them. So a step reads (B, K, w + 1) entries instead of every
    label for every child (B, K, L), and its cost does not grow with the label space. The bound `w` comes from the
    number of steps (`most_written`), so no step waits on the device to learn it."""

    child_token: object
    child_node: object
    child_valid: object
    near_label: object
    near_rest: object
    near_start: object
    near_size: object
    ends: object
    end_ids: object
    after_root: int
    n_labels: int
    max_labels: int | None
    stop_off_format: bool
    shortest_first: int
    shortest_after: int
    _padded: tuple | None = field(default=None, repr=False)  # see `nearest`

    @classmethod
    def build(cls, grammar: LabelGrammar, device) -> GrammarTables:
        import torch

        tries = (grammar.first, grammar.after)
        offsets = (0, len(grammar.first))
        n_labels = len(grammar.first.lengths)
        if len(grammar.after.lengths) != n_labels:
            raise ValueError("the first and after tries must hold the same labels")
        width = max(1, max(max(len(c) for c in trie.children) for trie in tries))
        child_token, child_node, ends = [], [], []
        near_label, near_rest, near_start, near_size = [], [], [], []
        for trie, offset in zip(tries, offsets, strict=True):
            for node, children in enumerate(trie.children):
                child_token.append([*children, *[-1] * (width - len(children))])
                child_node.append([offset + child for child in children.values()] + [0] * (width - len(children)))
                ends.append(-1 if trie.ends[node] is None else trie.ends[node])
                nearest = sorted((trie.lengths[label] - trie.depth[node], label) for label in trie.below[node])
                near_start.append(len(near_label))
                near_size.append(len(nearest))
                near_rest.extend(rest for rest, _ in nearest)
                near_label.extend(label for _, label in nearest)

        def tensor(values, dtype=torch.long):
            return torch.tensor(values, dtype=dtype, device=device)

        child_token = tensor(child_token)
        return cls(child_token=child_token, child_node=tensor(child_node), child_valid=child_token >= 0,
                   near_label=tensor(near_label), near_rest=tensor(near_rest, torch.int32),
                   near_start=tensor(near_start), near_size=tensor(near_size), ends=tensor(ends),
                   end_ids=tensor(grammar.end_ids), after_root=offsets[1], n_labels=n_labels,
                   max_labels=grammar.max_labels, stop_off_format=grammar.stop_off_format,
                   shortest_first=min(grammar.first.lengths, default=1),
                   shortest_after=min(grammar.after.lengths, default=1))

    def start(self, rows: int) -> dict:
        """The state of `rows` answers that have not begun."""
        import torch

        device = self.ends.device
        return {"node": torch.zeros(rows, dtype=torch.long, device=device),
                "written": torch.zeros((rows, self.n_labels), dtype=torch.bool, device=device),
                "count": torch.zeros(rows, dtype=torch.long, device=device),
                "done": torch.zeros(rows, dtype=torch.bool, device=device),
                "steps": 0}

    def most_written(self, state: dict) -> int:
        """At most how many labels any row of `state` has written, from the number of steps alone (no look at the
        device). A label is written when a separator follows it: the s-th separator comes after the first label
        (`shortest_first` tokens at least), s - 1 later ones each with its own separator (`shortest_after` tokens at
        least, separator included) and the s-th separator itself. This holds on any path through the tries, even
        where the mask was bypassed; a state without `steps` gets every label."""
        steps = state.get("steps")
        if steps is None:
            return self.n_labels
        if steps <= self.shortest_first:
            return 0
        return min(self.n_labels, 1 + (steps - self.shortest_first - 1) // self.shortest_after)

    def nearest(self, width: int) -> tuple:
        """The `width` labels nearest to finishing below every node, as padded (N, width) tables of labels and of
        tokens still to write (padding: label 0, NEVER tokens), and the same (K, width) for the children of
        `after_root` (the first tokens of a separator). A step needs only a few columns, more as rows write more
        labels: the tables are built on the device from the flat lists when a step first needs a width, doubling it,
        so they hold N x (the widths used) entries, not N x L."""
        width = min(width, self.n_labels)  # no node has more labels below it
        padded = self._padded  # read once: what this call returns is at least `width` wide, whatever else runs
        if padded is None or padded[0].shape[1] < width:
            import torch

            have = 0 if padded is None else padded[0].shape[1]
            columns = torch.arange(min(max(width, 2 * have, 8), self.n_labels), device=self.ends.device)
            present = columns[None] < self.near_size[:, None]  # (N, width)
            at = torch.where(present, self.near_start[:, None] + columns[None], 0)
            labels = torch.where(present, self.near_label[at], 0)
            rests = torch.where(present, self.near_rest[at], NEVER)
            separators = self.child_node[self.after_root]
            padded = self._padded = (labels, rests, labels[separators], rests[separators])
        return tuple(table[:, :width] for table in padded)

    def allowed(self, state: dict, budget: int, vocab: int, top=None):
        """(B, M) token ids each row may write next with `budget` tokens left (this one included); unused slots hold
        `vocab` (one past the last token id). `top` (B,), the model's own first choice, lets a row repeat a label
        through a prefix label and, with `stop_off_format`, ends the rows that leave the format once they hold a
        label."""
        import torch

        node, written, count, done = state["node"], state["written"], state["count"], state["done"]
        most = self.most_written(state)
        near_label, near_rest, sep_label, sep_rest = self.nearest(most + 2)
        # continue the label being written: children through which an unwritten label can still be finished. Of the
        # labels below a child, the `most + 1` nearest to finishing decide (see the class docstring)
        tokens, nodes, valid = self.child_token[node], self.child_node[node], self.child_valid[node]  # (B, K)
        labels, rests = near_label[:, :most + 1][nodes], near_rest[:, :most + 1][nodes]  # (B, K, most + 1)
        open_below = (rests < NEVER) & ~written.gather(1, labels.flatten(1)).view(labels.shape)
        child_ok = valid & (open_below & (rests <= budget - 1)).any(-1)
        # at the end of a label not yet written: end the answer, or a separator and the next label
        label = self.ends[node]
        fresh = (label >= 0) & ~written.gather(1, label.clamp(min=0)[:, None])[:, 0]
        more = fresh if self.max_labels is None else fresh & (count + 1 < self.max_labels)
        root_tokens, root_valid = self.child_token[self.after_root], self.child_valid[self.after_root]  # (K,)
        # the next label must be neither written nor the one just finished: the `most + 2` nearest decide, and
        # `max_labels` suffice (a row that may add a label has written fewer than `max_labels - 1`)
        near = most + 2 if self.max_labels is None else min(most + 2, self.max_labels)
        labels, rests = sep_label[:, :near], sep_rest[:, :near]  # (K, near)
        taken = written[:, labels] | (labels[None] == label[:, None, None])  # (B, K, near)
        after_ok = more[:, None] & root_valid[None] & ((rests <= budget - 1)[None] & ~taken).any(-1)
        # the end only: a finished row, a row with nothing left that fits, a row that left the format
        end_only = done | ~(child_ok.any(-1) | after_ok.any(-1) | fresh)
        # a repeat through a prefix label: at the end of a fresh label ("cs.IT, cs"), the model's first choice goes
        # on into written labels only (".IT"). Ending here would keep a label it never chose: it writes that token
        # instead, after which only the end is left, and `complete_items` drops the item
        repeat = torch.zeros_like(child_ok)  # (B, K): the child a repeating row goes on into
        if top is not None:
            top = top[:, None]
            into_written = ~open_below.any(-1)
            repeat = (tokens == top) & valid & into_written & (fresh & ~done)[:, None]
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
        at = label.clamp(min=0)[:, None]  # the label a separator completes: one entry per row, not a (B, L) pass
        state["written"].scatter_(1, at, state["written"].gather(1, at) | separated[:, None])
        state["count"] = state["count"] + separated.long()
        if "steps" in state:
            state["steps"] += 1
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
    "cs.IT, math." or, with prefix labels, "cs, cs" on the way to "cs, cs.IT"), and without the start of a separator
    after the last label ("astro-ph," when the separator's space came with the next label's first token)."""
    items = text.split(separator)
    known = set(labels)
    for cut in range(len(separator) - 1, 0, -1):
        if items[-1].endswith(separator[:cut]) and items[-1][:-cut].strip() in known:
            items[-1] = items[-1][:-cut]
            break
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
