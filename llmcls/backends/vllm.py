"""The vLLM backend (`--backend vllm`, optional extra `pip install 'llmcls[vllm]'`, vLLM 0.21 or later): the
interface of the HF backend on vLLM's engine, for throughput on GPUs, LoRA adapters (`LoRARequest`) and models larger
than one GPU (`--tensor_parallel_size`). vLLM is imported here only, when this backend is chosen.

- generate: one `SamplingParams` for the whole batch (greedy unless --temperature), stop strings and the end
  tokens; `--constrained` becomes vLLM's structured outputs (`StructuredOutputsParams(regex=...)`, the answer
  grammar of `constrained.label_regex`; the old `guided_*` fields are gone from vLLM). A regex cannot forbid
  repeating a label, and the engine does not expose the model's unmasked choice, so `stop_off_format` does not
  apply: answers hold labels up to `max_labels` unless the model ends them. An answer that max_tokens cuts
  (finish_reason "length") is cut back to its last whole label, so that every answer consists of whole labels, as
  the HF backend's do (`constrained.complete_items`).
- score: the plan of `constrained.ScorePlan`, one request per (prompt, trie node): the prompt's token ids plus the
  node's path, one generated token, and the log-probabilities of the node's children (and end tokens) read from
  `logprob_token_ids`, split over several requests where a node has more than vLLM accepts in one
  (`MAX_LOGPROB_TOKEN_IDS`, 128). Requests of one prompt share it as a prefix, so vLLM's prefix cache computes the
  prompt once. Before 0.21 vLLM returned no log-probabilities for `logprob_token_ids` alone (0.20) or had no such
  field (the alternative, whole-vocabulary log-probabilities, is ~10 GB of Python objects per batch): refused at load.
- loading: the HF tokenizer always (`tokenizer_mode="hf"`: for official Mistral repos vLLM would pick its own, which
  lacks HF attributes used here), and what the installed vLLM would refuse deep inside engine creation or at the
  first request (bitsandbytes for `--load_in_4bit`, adapter features, ranks) is refused first, in one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from llmcls.backends import (
    LabelConstraint,
    ModelArguments,
    count_tokens,
    cut_at_stop,
    encode_prompts,
    end_token_ids,
)
from llmcls.backends.constrained import ScorePlan, common_suffix, label_regex, label_sequences, regex_escape
from llmcls.errors import LlmclsError, missing_extra

# The max_lora_rank values vLLM accepts (vllm.config.lora.MaxLoRARanks, the same from 0.18 to 0.33).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# adapter_config.json values vLLM refuses to load (PEFTHelper.validate_legal, vllm/lora/peft_helper.py of 0.33;
# older versions refuse fewer features but any modules_to_save).
_REFUSED = {
    "modules_to_save": lambda value: bool(set(value or ()) - {"classifier", "score"}),
    "use_dora": bool,
    "bias": lambda value: value not in (None, "none"),
    "lora_bias": bool,
    "init_lora_weights": lambda value: isinstance(value, str) and value.lower() not in (
        "gaussian", "eva", "orthogonal", "mica", "lora_ga"),  # others (PiSSA, OLoRA, LoftQ) change the base weights
    "layer_replication": bool,
    "alora_invocation_tokens": bool,
    "use_qalora": bool,
    "use_bdlora": bool,
}
_MERGE = ("merge it into the model (`llmcls sft --merge`, or PEFT's merge_and_unload) and pass the merged folder "
          "with --model, or use --backend hf")


def _adapter_config(adapter: str) -> dict:
    """The adapter's config, refusing what vLLM cannot load: it would say so only at the first request."""
    from llmcls.backends.loading import adapter_config

    config = adapter_config(adapter)
    try:
        config["r"] = int(config["r"])
    except (KeyError, TypeError, ValueError):
        raise LlmclsError(f"{adapter}: adapter_config.json gives no LoRA rank ('r'): not a LoRA adapter?") from None
    for name, refused in _REFUSED.items():
        if name in config and refused(config[name]):
            raise LlmclsError(f"{adapter}: vLLM cannot load this adapter ({name}: {config[name]!r}); {_MERGE}")
    return config


def _lora_rank(adapter: str, config: dict) -> int:
    """The max_lora_rank to build the engine with: vLLM reserves LoRA memory by it, refuses an adapter whose largest
    rank (rank_pattern included) exceeds it, and accepts only its own sizes."""
    rank = max([config["r"], *(config.get("rank_pattern") or {}).values()])
    size = next((size for size in LORA_RANKS if size >= rank), None)
    if size is None:
        raise LlmclsError(f"{adapter}: vLLM cannot load this adapter (rank {rank}, r or rank_pattern, above its "
                          f"largest max_lora_rank {LORA_RANKS[-1]}); {_MERGE}")
    return size


def _check_quantization(version: str) -> None:
    """`--load_in_4bit` asks vLLM for bitsandbytes, which is not among its quantization methods in newer versions
    (not in 0.33): refused in one line rather than inside engine creation."""
    try:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    except ImportError:  # moved elsewhere: the engine judges
        return
    if "bitsandbytes" not in QUANTIZATION_METHODS:
        raise LlmclsError(f"--load_in_4bit: vLLM {version} has no bitsandbytes quantization; use --backend hf, or a "
                          "pre-quantized model (AWQ, GPTQ, FP8) with --model")


class VLLMBackend:
    name = "vllm"

    def __init__(self, args: ModelArguments, *, seed: int = 42, batch_size: int = 256):
        try:
            import vllm
            from vllm import LLM, SamplingParams, sampling_params
        except ImportError:
            raise missing_extra("vllm", "vllm") from None
        from llmcls.backends.loading import base_model_of, resolve_model

        # score mode reads chosen tokens' log-probabilities: vLLM returns them for logprob_token_ids from 0.21, where
        # SamplingParams.num_logprobs counts them (0.20 has the field but returns nothing for it)
        if ("logprob_token_ids" not in getattr(SamplingParams, "__struct_fields__", ())
                or not hasattr(SamplingParams, "num_logprobs")):
            raise LlmclsError(f"vLLM {vllm.__version__} cannot return the log-probabilities of chosen tokens "
                              "(logprob_token_ids); the vllm backend needs 0.21 or later: pip install 'vllm>=0.21'")
        self._sampling_params = SamplingParams
        self._max_token_ids = getattr(sampling_params, "MAX_LOGPROB_TOKEN_IDS", 128)
        path = resolve_model(args.model or base_model_of(args.adapter))  # a .gguf becomes its converted folder
        # the HF tokenizer, as the HF backend's: same token ids, and the attributes (chat template...) used here
        kwargs = {"model": path, "seed": seed, "dtype": args.dtype, "tensor_parallel_size": args.tensor_parallel_size,
                  "gpu_memory_utilization": args.gpu_memory_utilization, "trust_remote_code": args.trust_remote_code,
                  "enable_prefix_caching": True, "tokenizer_mode": "hf"}
        if args.max_model_len:
            kwargs["max_model_len"] = args.max_model_len
        if args.load_in_4bit:
            _check_quantization(vllm.__version__)
            kwargs["quantization"] = "bitsandbytes"
        if args.adapter:
            rank = _lora_rank(args.adapter, _adapter_config(args.adapter))
            kwargs |= {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        # the engine's context (--max_model_len, else the model's own): longer prompts would be refused per request
        self.max_positions = getattr(getattr(getattr(self.llm, "llm_engine", None), "model_config", None),
                                     "max_model_len", None)
        self.lora = None
        if args.adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(Path(args.adapter).resolve()))
        self.device = f"cuda x{args.tensor_parallel_size} (vLLM {vllm.__version__})"
        self.batch_size, self.seed = batch_size, seed
        self.end_ids = end_token_ids(self.tokenizer, _generation_eos(path))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_tokens(self.tokenizer, texts)

    def _run(self, token_ids: list[list[int]], params):
        # token ids, not text: vLLM would add the BOS again to a chat-templated prompt that already holds it
        return self.llm.generate([{"prompt_token_ids": ids} for ids in token_ids], params, use_tqdm=False,
                                 lora_request=self.lora)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, constraint: LabelConstraint | None = None,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
        options = {}
        if constraint is not None:
            from vllm.sampling_params import StructuredOutputsParams

            pattern = label_regex(constraint.labels, constraint.separator, constraint.max_labels)
            options["structured_outputs"] = StructuredOutputsParams(regex=regex_escape(constraint.prefix) + pattern)
            stop = ()  # the grammar ends the answer
            # a regex engine admits any tokenisation of the codes (the HF trie only the tokenizer's own), and the
            # budget does not steer it towards the end: room for twice the canonical length, so none is cut short
            max_new_tokens *= 2
        if temperature > 0:
            options["seed"] = self.seed
        params = self._sampling_params(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                       stop=list(stop) or None, stop_token_ids=list(self.end_ids),
                                       skip_special_tokens=True, **options)
        outputs = [out.outputs[0] for out in self._run(encode_prompts(self.tokenizer, prompts), params)]
        if constraint is not None:
            return [_whole_labels(out.text, constraint) if out.finish_reason == "length" else out.text
                    for out in outputs]
        return [cut_at_stop(out.text, stop) for out in outputs]

    def score_batches(self, batches: Iterable[Sequence[str]], continuations: Sequence[str], *,
                      separator: str | None = None, ends: str = "prefixes") -> Iterator[np.ndarray]:
        for prompts in batches:  # vLLM schedules each call's requests itself
            yield self.score(prompts, continuations, separator=separator, ends=ends)

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, separator: str | None = None,
              ends: str = "prefixes") -> np.ndarray:
        context = common_suffix(prompts)
        first, after = label_sequences(self.tokenizer, continuations, separator or "", context)
        end_ids = () if separator is None else tuple(dict.fromkeys([s[0] for s in after])) + self.end_ids
        plan = ScorePlan.build(first, end_ids, ends if separator is not None else "none")
        paths = [_path(plan.trie, node) for node in plan.query_nodes]
        wanted = [[] for _ in plan.query_nodes]  # token ids to read per query node
        for q, token in plan.pairs:
            wanted[q].append(token)
        cap = self._max_token_ids  # vLLM refuses longer lists: a node with more tokens takes several requests
        chunks = [(q, tokens[i:i + cap]) for q, tokens in enumerate(wanted) for i in range(0, len(tokens), cap)]
        requests, params = [], []
        for ids in encode_prompts(self.tokenizer, prompts):
            for q, tokens in chunks:
                requests.append(ids + paths[q])
                params.append(self._sampling_params(max_tokens=1, temperature=0.0, logprob_token_ids=tokens))
        outputs = self._run(requests, params)
        values = np.empty((len(prompts), len(plan.pairs)))
        for i in range(len(prompts)):
            found = [{} for _ in paths]  # per query node: token id -> log-probability (vLLM's Logprob)
            for (q, _), out in zip(chunks, outputs[i * len(chunks):(i + 1) * len(chunks)], strict=True):
                found[q].update(out.outputs[0].logprobs[0])
            for p, (q, token) in enumerate(plan.pairs):
                values[i, p] = _read_logprob(found[q], token)
        return plan.combine(values)


def _generation_eos(path: str):
    """The EOS id(s) of the model's generation config (chat models often add the end-of-turn token there)."""
    try:
        from transformers import GenerationConfig

        return GenerationConfig.from_pretrained(path).eos_token_id
    except (OSError, ValueError):
        return None


def _path(trie, node: int) -> list[int]:
    """The tokens from the root to `node`."""
    tokens = []
    while node != 0:
        tokens.append(trie.token[node])
        node = trie.parent[node]
    return tokens[::-1]


def _read_logprob(found: dict, token: int) -> float:
    """The log-probability of `token` among those vLLM returned for the first generated position."""
    value = found.get(token)
    if value is None:
        raise LlmclsError(f"vLLM returned no log-probability for token {token}")
    return float(getattr(value, "logprob", value))


def _whole_labels(text: str, constraint: LabelConstraint) -> str:
    """A structured answer that max_tokens cut, up to its last whole label. The last item stays only if it is a label
    that a separator, even begun, follows ("cs.LG," ended "cs.LG") or that no longer label extends ("cs.LG, math"
    may be on its way to "math.IT", which "math" would misread). Unlike `complete_items` (HF backend), a cut first
    item goes too: every answer consists of whole labels, possibly none."""
    labels, separator = constraint.labels, constraint.separator
    if not text.startswith(constraint.prefix):
        return ""
    *items, last = text[len(constraint.prefix):].split(separator)
    whole = next((last[:-n] for n in range(1, len(separator)) if last.endswith(separator[:n]) and last[:-n] in labels),
                 None)
    if whole is None and last in labels and not any(label != last and label.startswith(last) for label in labels):
        whole = last
    items += [] if whole is None else [whole]
    return constraint.prefix + separator.join(items) if items else ""
