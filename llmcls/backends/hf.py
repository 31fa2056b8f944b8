"""The transformers backend: batched greedy generation, constrained decoding and label scoring on one model.

Generation pads on the left, sorts prompts by length so a batch holds prompts of similar length (little padding),
stops each row at EOS / end of turn / a stop string, and with a `LabelConstraint` runs the trie logits processor of
`constrained.py`. Scoring encodes each prompt once and runs the label tries' inner nodes as one extra forward pass
against the prompt's KV cache (no copy of the cache per label; see `constrained.ScorePlan` and `_score_batch`).

Finding and loading the model (device, dtype, 4-bit, adapter, `.gguf` files) is `backends.loading`'s job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from llmcls.backends import (
    LabelConstraint,
    ModelArguments,
    count_tokens,
    cut_at_stop,
    encode_prompts,
    end_token_ids,
)
from llmcls.backends.constrained import (
    ScorePlan,
    build_grammar,
    common_suffix,
    complete_items,
    label_sequences,
    make_processor,
)
from llmcls.backends.loading import (
    base_model_of,
    describe_device,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    positions_of,
    quantization_config,
    resolve_model,
)
from llmcls.errors import LlmclsError
from llmcls.model_paths import model_errors
from llmcls.progress import status


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, *, batch_size: int = 16, score_chunk_bytes: int | None = None,
                 share_prefix: bool = True, static_cache: bool = False, compile_layers: bool = False):
        self.model, self.tokenizer = model, tokenizer
        # score mode's masks and the shared-prefix layout need an attention that takes any mask; SFT may have loaded
        # FlashAttention (padding-free training): `restore_attention()` gives the model back as it came
        self.restore_attention = masked_attention(self._core())
        self.device = describe_device(str(next(model.parameters()).device))  # where the (loaded) model runs
        self.batch_size = batch_size
        # bound on the logits held at once while scoring (a 152k vocabulary makes them the largest tensor)
        self.score_chunk_bytes = score_chunk_bytes  # None: sized from the free memory when scoring
        # sliding-window attention (Mistral, Gemma 2/3, some Qwen2 layers): its layer kinds and window, which score
        # mode's own masks must apply (transformers applies it where it builds the masks itself)
        self.window, self.layer_kinds = sliding_window_of(self._core().config.get_text_config())
        self.max_positions = positions_of(self._core().config)
        # the prompts of a run start alike (instructions, label list): encode that prefix once, not once a prompt;
        # sliding-window layers would need the window applied to the reused cache, so they go the plain way
        self.share_prefix = share_prefix and self.window is None
        self._prefix: tuple[tuple[int, ...], list] | None = None  # (token ids, per-layer keys and values)
        # generation with a fixed-size cache that transformers compiles (CUDA graphs) for the decoding steps
        self.static_cache = static_cache
        if compile_layers:
            compile_layer_parts(self._core())
        self.end_ids = end_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0]
        self._grammars: dict = {}
        self._plans: dict = {}
        # transformers renamed forward's `past_key_values` to `cache` within 5.x; use whichever this one takes
        forward = inspect.signature(type(self._core()).forward).parameters
        self._cache_kw = "cache" if "cache" in forward else "past_key_values"

    @classmethod
    def load(cls, args: ModelArguments, *, seed: int = 42, batch_size: int = 16,
             check_tokenizer: Callable[[Any], None] | None = None) -> HFBackend:
        from transformers import set_seed

        set_seed(seed)  # only matters when sampling (--temperature > 0)
        device = pick_device(args.device)
        dtype = pick_dtype(args.dtype, device)
        quantization = quantization_config(dtype) if args.load_in_4bit else None  # a missing extra fails first
        path = resolve_model(args.model or base_model_of(args.adapter))
        adapter = f" + adapter {args.adapter}" if args.adapter else ""
        with status(f"Loading {path} ({dtype}, {device}){adapter}"), model_errors(path):
            tokenizer = load_tokenizer(path, args.adapter, args.trust_remote_code)
            if check_tokenizer is not None:
                check_tokenizer(tokenizer)
            model = load_model(path, args, device, dtype, quantization)
        return cls(model, tokenizer, batch_size=batch_size, static_cache=args.static_cache,
                   compile_layers=args.compile_layers)

    def _core(self):
        """The transformers model under a PEFT wrapper, if any."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    # ---------------------------------------------------------------- helpers
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)

    def _batches(self, prompts: Sequence[str]) -> Iterator[tuple[list[int], list[list[int]]]]:
        """Indices in batches of similar length in tokens, longest first (an out-of-memory error shows up at once),
        with each batch's token ids. Every prompt is tokenised first: sorted by characters instead, so that each
        batch could wait for its turn, batches of AAPD's compact prompts hold 16% more padded tokens at batch 256 and
        25% at 64 (`benchmarks/bench_prompt_batching.py`)."""
        encoded = encode_prompts(self.tokenizer, prompts)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            yield batch, [encoded[i] for i in batch]

    def _pad(self, rows: list[list[int]], multiple: int = 1):
        """Left-padded token ids and attention mask, `multiple` dividing the width."""
        import torch

        width = -(-max(len(r) for r in rows) // multiple) * multiple
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
        return self._upload(ids), self._upload(mask)

    def _upload(self, tensor):
        """A host tensor on the model's device. To a GPU it goes from pinned memory without blocking: a plain copy
        first waits for every kernel queued before it, so the host could not prepare the next batch meanwhile (and
        score mode queues all its batches before it reads a result back)."""
        device = self._core().device
        if device.type != "cuda":
            return tensor.to(device)
        return tensor.pin_memory().to(device, non_blocking=True)

    def _inputs(self, rows: list[list[int]]):
        """Token ids and attention mask of a batch, and a KV cache already holding their shared prefix (or None).

        With a shared prefix of P tokens the layout is [prefix | padding | rest of the prompt]: the padding sits
        in the middle, where the attention mask hides it and position ids (counted over the mask) skip it.
        """
        import torch

        shared = self._shared_length(rows)
        if shared == 0:
            return (*self._pad(rows), None)
        prefix_kv = self._prefix_kv(tuple(rows[0][:shared]))
        rest, rest_mask = self._pad([row[shared:] for row in rows])
        n = len(rows)
        head = self._upload(torch.tensor(rows[0][:shared], dtype=torch.long))[None].expand(n, shared)
        ids = torch.cat([head, rest], dim=1)
        mask = torch.cat([torch.ones((n, shared), dtype=rest_mask.dtype, device=rest.device), rest_mask], dim=1)
        return ids, mask, _cache_of([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in prefix_kv])

    def _shared_length(self, rows: list[list[int]], minimum: int = 32) -> int:
        """Length of the token prefix all rows share (every row keeps at least one token of its own), or 0 when
        prefix sharing is off or the prefix is too short to be worth it."""
        if not self.share_prefix:
            return 0
        first, limit = rows[0], min(len(r) for r in rows) - 1
        shared = 0
        while shared < limit and all(r[shared] == first[shared] for r in rows):
            shared += 1
        return shared if shared >= minimum else 0

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list:
        """Keys and values of the shared prefix, computed once per prefix (one batch row)."""
        import torch
        from transformers import DynamicCache

        if self._prefix is None or self._prefix[0] != prefix:
            cache = DynamicCache(config=self._core().config)
            ids = self._upload(torch.tensor([prefix], dtype=torch.long))
            with torch.inference_mode():
                self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
            self._prefix = (prefix, [(layer[0], layer[1]) for layer in cache])
        return self._prefix[1]

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, constraint: LabelConstraint | None = None,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
        grammar = self._grammar(constraint, prompts) if constraint is not None else None
        stop = () if grammar is not None else tuple(stop)  # the grammar ends answers itself
        outputs = [""] * len(prompts)
        for batch, rows in self._batches(prompts):
            texts = self._generate_batch(rows, max_new_tokens, grammar, stop, temperature, top_p)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = text if constraint is None else complete_items(text, constraint.labels,
                                                                            constraint.separator)
        return outputs

    def _grammar(self, constraint: LabelConstraint, prompts: Sequence[str]):
        key = (constraint, common_suffix(prompts))
        if key not in self._grammars:
            _keep_recent(self._grammars)
            self._grammars[key] = build_grammar(self.tokenizer, constraint.labels, constraint.separator, key[1],
                                                self.end_ids, constraint.max_labels, constraint.prefix,
                                                constraint.stop_off_format)
        return self._grammars[key]

    def _generate_batch(self, rows, max_new_tokens, grammar, stop, temperature, top_p) -> list[str]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        if self.static_cache:  # a static cache starts empty (no shared prefix); widths in steps of 64: few shapes
            (ids, mask), cache = self._pad(rows, multiple=64), None
        else:
            ids, mask, cache = self._inputs(rows)
        # a fresh config: the model's own may ask for sampling (temperature, top_p) and we want greedy by default
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}
        config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=1, eos_token_id=list(self.end_ids),
                                  pad_token_id=self.pad_id, use_cache=True, stop_strings=list(stop) or None,
                                  cache_implementation="static" if self.static_cache else None, **sampling)
        processors = LogitsProcessorList([make_processor(grammar, max_new_tokens)]) if grammar else None
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                      logits_processor=processors, tokenizer=self.tokenizer if stop else None,
                                      **({self._cache_kw: cache} if cache is not None else {}))
        texts = self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        return [cut_at_stop(text, stop) for text in texts]

    # ---------------------------------------------------------------- scoring
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, separator: str | None = None,
              ends: str = "prefixes") -> np.ndarray:
        return self._collect(*self._queue(prompts, continuations, separator, ends))

    def score_batches(self, batches: Iterable[Sequence[str]], continuations: Sequence[str], *,
                      separator: str | None = None, ends: str = "prefixes") -> Iterator[np.ndarray]:
        """`score` of each batch of prompts in turn, the next batch queued on the device before this one's scores
        are read back: the GPU runs it while the caller handles this batch (its records, its writes) and the host
        tokenises the batch after."""
        pending = None
        for prompts in batches:
            queued = self._queue(prompts, continuations, separator, ends)
            if pending is not None:
                yield self._collect(*pending)
            pending = queued
        if pending is not None:
            yield self._collect(*pending)

    def _queue(self, prompts: Sequence[str], continuations: Sequence[str], separator: str | None, ends: str):
        """`prompts` queued for scoring in batches: the plan, each batch's positions and its results (on the device,
        maybe not computed yet), and the number of prompts."""
        plan, tensors = self._plan(tuple(continuations), separator, ends, common_suffix(prompts))
        # results stay on the device until every batch is queued: a copy back per batch would make the CPU wait for
        # the GPU each time, and the GPU then idles while the CPU prepares the next batch
        queued = [(batch, self._score_batch(rows, tensors)) for batch, rows in self._batches(prompts)]
        return plan, queued, len(prompts)

    @staticmethod
    def _collect(plan: ScorePlan, queued: list, n_prompts: int) -> np.ndarray:
        """The scores of what `_queue` queued, read back (waiting for the device to finish them)."""
        values = np.empty((n_prompts, len(plan.pairs)))
        for batch, result in queued:
            values[batch] = result.double().cpu().numpy()
        return plan.combine(values)

    def _plan(self, continuations: tuple[str, ...], separator: str | None, ends: str, context: str):
        key = (continuations, separator, ends, context)
        if key not in self._plans:
            _keep_recent(self._plans)
            first, after = label_sequences(self.tokenizer, continuations, separator or "", context)
            if separator is None:
                plan = ScorePlan.build(first, (), "none")
            else:  # the answer goes on with the separator (its first token) or ends
                plan = ScorePlan.build(first, tuple(dict.fromkeys([seq[0] for seq in after])) + self.end_ids, ends)
            self._plans[key] = (plan, self._plan_tensors(plan))
        return self._plans[key]

    def _plan_tensors(self, plan: ScorePlan) -> dict:
        """The plan as index tensors: the extra positions run after the prompt and where to read each pair."""
        import torch

        device, trie = self._core().device, plan.trie
        extra = plan.query_nodes[1:]  # the root is the prompt's last position
        slot = {node: i for i, node in enumerate(extra)}
        ancestors = torch.zeros((len(extra), len(extra)), dtype=torch.bool)
        for i, node in enumerate(extra):
            walk = node
            while walk != 0:  # every ancestor of a node with children has children, so it is in `extra`
                ancestors[i, slot[walk]] = True
                walk = trie.parent[walk]
        root = [p for p, (q, _) in enumerate(plan.pairs) if q == 0]
        inner = [p for p, (q, _) in enumerate(plan.pairs) if q > 0]

        def long(values):
            return torch.tensor(values, dtype=torch.long, device=device)

        return {"n_pairs": len(plan.pairs),
                "tokens": long([trie.token[n] for n in extra]), "depth": long([trie.depth[n] for n in extra]),
                "ancestors": ancestors.to(device),
                "root_pairs": long(root), "root_tokens": long([plan.pairs[p][1] for p in root]),
                "inner_pairs": long(inner), "inner_slots": long([plan.pairs[p][0] - 1 for p in inner]),
                "inner_tokens": long([plan.pairs[p][1] for p in inner])}

    def _score_batch(self, rows: list[list[int]], t: dict):
        """Log-probabilities of the plan's pairs for one batch of prompts: a (len(rows), n_pairs) float32 tensor,
        left on the model's device."""
        import torch
        from transformers import DynamicCache

        ids, mask, cache = self._inputs(rows)
        values = torch.empty((len(rows), t["n_pairs"]), dtype=torch.float32, device=mask.device)
        done = 0 if cache is None else cache.get_seq_length()  # tokens of the shared prefix already encoded
        if cache is None:  # sliding-window layers keep every prompt key here: the extra pass masks by the window
            cache = DynamicCache(config=self._core().config) if self.window is None else DynamicCache()
        with torch.inference_mode():
            # position ids count real tokens only, so a padded prompt is encoded exactly as an unpadded one
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids[:, done:], attention_mask=mask, position_ids=positions[:, done:],
                                use_cache=True, logits_to_keep=1, **{self._cache_kw: cache}).logits[:, -1].float()
            first = logits[:, t["root_tokens"]] - torch.logsumexp(logits, dim=-1, keepdim=True)
            values[:, t["root_pairs"]] = first
            n_extra = len(t["tokens"])
            if n_extra == 0:
                return values
            rows_per_chunk = max(1, self._chunk_bytes() // (n_extra * logits.shape[-1] * 6))
            for start in range(0, len(rows), rows_per_chunk):
                part = slice(start, min(start + rows_per_chunk, len(rows)))
                sub = cache if rows_per_chunk >= len(rows) else _slice_cache(cache, part)
                values[part, t["inner_pairs"]] = self._extra_pass(sub, mask[part], t)
        return values

    def _chunk_bytes(self) -> int:
        """How many bytes of logits one extra pass may hold: the given bound, else a quarter of the GPU's free memory
        (at least 1 GiB; an H200 then scores a whole batch of a 152k-vocabulary model in one pass), 1 GiB on a CPU."""
        if self.score_chunk_bytes:
            return self.score_chunk_bytes
        import torch

        device = self._core().device
        if device.type == "cuda":
            return max(1 << 30, torch.cuda.mem_get_info(device)[0] // 4)
        return 1 << 30

    def _extra_pass(self, cache, mask, t: dict):
        """One forward pass of the trie's inner nodes after the cached prompts: each node attends to the real
        prompt tokens and to its own ancestors, at the positions it would have right after the prompt."""
        import torch

        n_rows, n_extra = mask.shape[0], len(t["tokens"])
        dtype = self._core().get_input_embeddings().weight.dtype
        positions = mask.sum(-1, keepdim=True) + t["depth"][None, :] - 1
        prompt_keys = mask.bool()[:, None, :].expand(n_rows, n_extra, mask.shape[1])
        node_keys = t["ancestors"][None].expand(n_rows, n_extra, n_extra)

        def additive(prompt, nodes):  # an additive float mask works with both sdpa and eager attention
            allowed = torch.cat([prompt, nodes], dim=-1)[:, None]
            return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(
                ~allowed, torch.finfo(dtype).min)

        attention = additive(prompt_keys, node_keys)
        if self.window is not None:  # a key counts when it is less than `window` positions behind the query
            key_positions = mask.cumsum(-1) - 1
            recent = key_positions[:, None, :] > positions[:, :, None] - self.window
            near = (t["depth"][:, None] - t["depth"][None, :]) < self.window
            sliding = additive(prompt_keys & recent, node_keys & near[None])
            attention = (sliding if self.layer_kinds is None else
                         {kind: sliding if "sliding" in kind else attention for kind in self.layer_kinds})
        logits = self.model(input_ids=t["tokens"][None].expand(n_rows, n_extra), attention_mask=attention,
                            position_ids=positions, use_cache=True, **{self._cache_kw: cache}).logits.float()
        picked = logits[:, t["inner_slots"], t["inner_tokens"]]
        return picked - torch.logsumexp(logits, dim=-1)[:, t["inner_slots"]]


COMPILE_BACKEND = "inductor"  # torch.compile's backend for --compile_layers (tests trace with "eager": no code made)


def compile_layer_parts(model) -> int:
    """Compile, in place, the MLP and the norms of every decoder layer of `model` (the classes its
    `_no_split_modules` names): the modules that never touch the KV cache. The attention is left eager, since it
    indexes the cache by its layer number, a constant of its graph: one compilation per layer and per kind of pass.
    Returns how many modules were compiled; a model whose decoder layers cannot be found is an error."""
    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    compiled = 0
    for module in model.modules():
        if type(module).__name__ not in layer_classes:
            continue
        for name, child in module.named_children():
            if name == "mlp" or "norm" in name.lower():
                child.compile(backend=COMPILE_BACKEND)
                compiled += 1
    if not compiled:
        raise LlmclsError(f"--compile_layers: no decoder layer with an `mlp` or norm module found in "
                          f"{type(model).__name__}; leave the option off for this model")
    return compiled


MASKED_ATTENTION = ("eager", "sdpa")  # attention implementations that apply any 4D (additive float) mask


def masked_attention(model) -> Callable[[], None]:
    """Switch `model` to sdpa (else eager) attention when its implementation cannot apply the backend's own masks
    (score mode's 4D float masks over the label tries; the [prefix | padding | rest] rows of a shared prompt
    prefix): FlashAttention kernels read a 2D padding mask at most, so they would attend past those masks or fail.
    Returns the function that restores the implementation the model had (a no-op when nothing changed)."""
    before = getattr(model.config, "_attn_implementation", None)
    if before is None or before in MASKED_ATTENTION:
        return lambda: None
    for name in MASKED_ATTENTION[::-1]:  # sdpa, else eager (a model class without sdpa support)
        try:
            model.set_attn_implementation(name)
        except (ValueError, ImportError):
            continue
        if model.config._attn_implementation == name:
            return lambda: model.set_attn_implementation(before)
    raise LlmclsError(f"the model attends with {before}, which cannot apply score mode's and the shared prompt "
                      "prefix's masks, and cannot be switched to sdpa or eager: load it with --attn_implementation "
                      "sdpa")


def sliding_window_of(config) -> tuple[int | None, set[str] | None]:
    """(window, layer kinds) of a model's sliding-window attention: (None, ...) without any; the kinds (e.g.
    {"full_attention", "sliding_attention"}) when the config names them per layer, None when every layer slides
    (Mistral's configs give only `sliding_window`)."""
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None)
    if not window:
        return None, None
    if kinds is not None:
        kinds = {str(kind) for kind in kinds}
        return (window, kinds) if any("sliding" in kind for kind in kinds) else (None, None)
    return (window, None) if getattr(config, "use_sliding_window", True) else (None, None)


def _keep_recent(cache: dict, size: int = 8) -> None:
    """Make room for one more entry in a small memo (grammars and score plans are keyed by label set and context)."""
    while len(cache) >= size:
        cache.pop(next(iter(cache)))


def _cache_of(layers: list):
    """A DynamicCache holding the given per-layer (keys, values); it copies them on its first update."""
    from transformers import DynamicCache

    return DynamicCache(layers)


def _slice_cache(cache, rows: slice):
    """A cache holding some rows of `cache` (the extra pass appends to it; the original stays as it was)."""
    return _cache_of([(layer[0][rows], layer[1][rows]) for layer in cache])
