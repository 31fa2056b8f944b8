"""The vLLM backend (`--backend vllm`, optional extra `pip install 'llmcls[vllm]'`): the interface of the HF backend
on vLLM's engine, for throughput on GPUs, LoRA adapters (`LoRARequest`) and models larger than one GPU
(`--tensor_parallel_size`). vLLM is imported here only, when this backend is chosen.

- generate: one `SamplingParams` for the whole batch (greedy unless --temperature), stop strings and the end
  tokens; `--constrained` becomes vLLM's structured outputs (`StructuredOutputsParams(regex=...)`, the answer
  grammar of `constrained.label_regex`; the old `guided_*` fields are gone from vLLM). A regex cannot forbid
  repeating a label, and the engine does not expose the model's unmasked choice, so `stop_off_format` does not
  apply: answers hold labels up to `max_labels` unless the model ends them.
- score: the plan of `constrained.ScorePlan`, one request per (prompt, trie node): the prompt's token ids plus the
  node's path, one generated token, and the log-probabilities of the node's children (and end tokens) read from
  `logprob_token_ids`. Requests of one prompt share it as a prefix, so vLLM's prefix cache computes the prompt once.
  vLLM versions without `logprob_token_ids` fall back to full-vocabulary log-probabilities (`logprobs=-1`, slower).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmcls.backends import LabelConstraint, ModelArguments, cut_at_stop, encode_prompts, end_token_ids
from llmcls.backends.constrained import ScorePlan, common_suffix, label_regex, label_sequences, regex_escape
from llmcls.errors import LlmclsError, missing_extra


def _lora_rank(adapter: str) -> int:
    """vLLM reserves LoRA memory by the largest rank it will see; it accepts powers of two from 8."""
    try:
        rank = int(json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))["r"])
    except (OSError, KeyError, ValueError):
        raise LlmclsError(f"{adapter}: not a PEFT adapter folder (no readable adapter_config.json)") from None
    size = 8
    while size < rank:
        size *= 2
    return size


class VLLMBackend:
    name = "vllm"

    def __init__(self, args: ModelArguments, *, seed: int = 42, batch_size: int = 256):
        try:
            import vllm
            from vllm import LLM, SamplingParams
        except ImportError:
            raise missing_extra("vllm", "vllm") from None
        from llmcls.backends.hf import base_model_of, resolve_model

        self._sampling_params = SamplingParams
        self._has_token_logprobs = "logprob_token_ids" in getattr(SamplingParams, "__struct_fields__", ())
        path = resolve_model(args.model or base_model_of(args.adapter))  # a .gguf becomes its converted folder
        kwargs = {"model": path, "seed": seed, "dtype": args.dtype, "tensor_parallel_size": args.tensor_parallel_size,
                  "gpu_memory_utilization": args.gpu_memory_utilization, "trust_remote_code": args.trust_remote_code,
                  "enable_prefix_caching": True}
        if args.max_model_len:
            kwargs["max_model_len"] = args.max_model_len
        if args.load_in_4bit:
            kwargs["quantization"] = "bitsandbytes"
        if args.adapter:
            kwargs |= {"enable_lora": True, "max_lora_rank": _lora_rank(args.adapter), "max_loras": 1}
        if not self._has_token_logprobs:
            kwargs["max_logprobs"] = -1  # the fallback scoring reads whole distributions
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = None
        if args.adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(Path(args.adapter).resolve()))
        self.device = f"cuda x{args.tensor_parallel_size} (vLLM {vllm.__version__})"
        self.batch_size, self.seed = batch_size, seed
        self.end_ids = end_token_ids(self.tokenizer, _generation_eos(path))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in encode_prompts(self.tokenizer, texts)]

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
        outputs = self._run(encode_prompts(self.tokenizer, prompts), params)
        return [cut_at_stop(out.outputs[0].text, stop) for out in outputs]

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
        requests, params = [], []
        for ids in encode_prompts(self.tokenizer, prompts):
            for q, path in enumerate(paths):
                requests.append(ids + path)
                params.append(self._logprob_params(wanted[q]))
        outputs = self._run(requests, params)
        values = np.empty((len(prompts), len(plan.pairs)))
        n_queries = len(plan.query_nodes)
        for p, (q, token) in enumerate(plan.pairs):
            for i in range(len(prompts)):
                values[i, p] = _read_logprob(outputs[i * n_queries + q], token)
        return plan.combine(values)

    def _logprob_params(self, tokens: list[int]):
        if self._has_token_logprobs:
            return self._sampling_params(max_tokens=1, temperature=0.0, logprob_token_ids=tokens)
        return self._sampling_params(max_tokens=1, temperature=0.0, logprobs=-1)


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


def _read_logprob(output, token: int) -> float:
    """The log-probability of `token` at the first generated position of a vLLM request output."""
    found = output.outputs[0].logprobs[0].get(token)
    if found is None:
        raise LlmclsError(f"vLLM returned no log-probability for token {token}; upgrade vllm")
    return float(getattr(found, "logprob", found))
