"""A stand-in for the parts of vLLM's API that `llmcls.backends.vllm` uses, computed with transformers on the CPU, so
the vLLM backend's own logic (request layout, score plans, log-probability read-back, structured-output requests,
LoRA requests) runs in tests without vLLM or a GPU.

    install(monkeypatch)                    # `import vllm` now yields this stand-in; returns the list of LLMs created
    install(monkeypatch, version="0.20.0")  # ... behaving as that vLLM version where versions differ (below)

What it mimics, and how: `LLM(**engine_args)` loads the model folder with transformers (float32); `generate(prompts,
params, lora_request=...)` takes `{"prompt_token_ids": ids}` prompts with one SamplingParams or one per prompt and
returns request outputs whose `outputs[0]` has `text`, `token_ids`, `finish_reason` ("length" when max_tokens ran
out, else "stop") and `logprobs` (one dict token id -> object with `.logprob` per generated token). A request with
logprob_token_ids reports those tokens' log-probabilities at its first generated position; other requests decode
greedily to max_tokens, a stop token id or a stop string (cut before it, as vLLM does). Structured outputs follow
the regex the way vLLM's engines do: a token is allowed when the text stays a prefix of a match, and an end token
only once the text is a full match; a test sets `LLM.ignore_end` to keep them from ending, so that max_tokens cuts
them (mid-label). Sampling (temperature > 0), tensor parallelism and memory settings are recorded, not simulated.

What real vLLM refuses or does differently, it does too (vllm/sampling_params.py, v1/engine/logprobs.py,
model_executor/layers/quantization, config/lora.py, lora/peft_helper.py; the latest rules read are those of 0.33):
- logprob_token_ids lists longer than `vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS` (128, from 0.21) are refused;
- before 0.21 (no `SamplingParams.num_logprobs`) a request with only logprob_token_ids gets `logprobs` None;
  before 0.20 the field does not exist;
- `quantization` must be in QUANTIZATION_METHODS ("bitsandbytes" only before 0.28), `max_lora_rank` one of
  vLLM's sizes, and an adapter must pass PEFTHelper's checks (no DoRA, bias or modules_to_save, no rank above
  max_lora_rank, rank_pattern included);
- an official Mistral folder (consolidated*.safetensors and tekken.json or tokenizer.model.v*) under
  tokenizer_mode "auto" gets vLLM's own MistralTokenizer, which is not an HF tokenizer (no chat_template,
  unk_token_id, eos_token...).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop", "stop_token_ids", "skip_special_tokens", "logprobs",
          "logprob_token_ids", "structured_outputs")
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
QUANTIZATION = "vllm.model_executor.layers.quantization"


class SamplingParams:
    __struct_fields__ = FIELDS  # what the backend inspects to tell whether logprob_token_ids exists

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(type(self).__struct_fields__)
        if unknown:
            raise TypeError(f"unexpected SamplingParams fields {sorted(unknown)}")
        defaults = {"max_tokens": 16, "temperature": 1.0, "top_p": 1.0, "skip_special_tokens": True}
        for name in FIELDS:
            setattr(self, name, kwargs.get(name, defaults.get(name)))
        cap = getattr(sys.modules.get("vllm.sampling_params"), "MAX_LOGPROB_TOKEN_IDS", None)
        if cap is not None and self.logprob_token_ids is not None and len(self.logprob_token_ids) > cap:
            raise ValueError(f"Requested logprob_token_ids of length {len(self.logprob_token_ids)}, which is greater "
                             f"than max allowed: {cap}")

    @property
    def num_logprobs(self) -> int | None:
        """From vLLM 0.21: logprob_token_ids alone asks for log-probabilities (0.20 looked at `logprobs` only)."""
        if self.logprobs is not None:
            return self.logprobs
        return len(self.logprob_token_ids) if self.logprob_token_ids else None


class StructuredOutputsParams:
    def __init__(self, regex: str):
        self.regex = regex


class LoRARequest:
    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class MistralTokenizer:
    """vLLM's tokenizer for official Mistral-format repos: encodes and decodes, but is not an HF tokenizer."""

    def __init__(self, hf):
        self._hf = hf
        self.bos_token_id, self.eos_token_id = hf.bos_token_id, hf.eos_token_id
        self.all_special_tokens = hf.all_special_tokens

    def __call__(self, text, **kwargs):
        return self._hf(text, **kwargs)

    def encode(self, text, **kwargs):
        return self._hf.encode(text, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = False):
        return self._hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_ids(self, tokens):
        return self._hf.convert_tokens_to_ids(tokens)


class LLM:
    created: list[LLM] = []
    ignore_end = False  # a test sets it: structured outputs never choose an end token, so max_tokens cuts them

    def __init__(self, model: str, **engine_args):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quantization = engine_args.get("quantization")
        if quantization is not None and quantization not in sys.modules[QUANTIZATION].QUANTIZATION_METHODS:
            raise ValueError(f"Invalid quantization method: {quantization}")
        self.model_path, self.engine_args = model, engine_args
        self.max_lora_rank = engine_args.get("max_lora_rank", 16)
        if engine_args.get("enable_lora") and self.max_lora_rank not in MAX_LORA_RANKS:
            raise ValueError(f"max_lora_rank ({self.max_lora_rank}) must be one of {MAX_LORA_RANKS}")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="float32").eval()
        self.hf_tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer = self.hf_tokenizer
        folder = Path(model)  # an official Mistral repo: consolidated weights and a Mistral tokenizer file
        if engine_args.get("tokenizer_mode", "auto") == "auto" and any(folder.glob("consolidated*.safetensors")) and (
                any(folder.glob("tekken.json")) or any(folder.glob("tokenizer.model.v*"))):
            self.tokenizer = MistralTokenizer(self.hf_tokenizer)
        max_model_len = engine_args.get("max_model_len") or self.model.config.max_position_embeddings
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=max_model_len))
        self._adapted: dict[str, object] = {}
        self.requests: list[tuple[list[int], SamplingParams]] = []
        LLM.created.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm: bool = True, lora_request: LoRARequest | None = None):
        all_params = params if isinstance(params, list) else [params] * len(prompts)
        model = self._model_for(lora_request)
        outputs = []
        for prompt, p in zip(prompts, all_params, strict=True):
            ids = list(prompt["prompt_token_ids"])
            self.requests.append((ids, p))
            if p.logprob_token_ids is not None:
                outputs.append(self._distribution(model, ids, p))
            else:
                outputs.append(self._greedy(model, ids, p))
        return outputs

    def _model_for(self, lora_request):
        if lora_request is None:
            return self.model
        if not self.engine_args.get("enable_lora"):
            raise ValueError("a LoRA request on an engine built without enable_lora")
        if lora_request.lora_path not in self._adapted:
            from peft import PeftModel

            self._validate_adapter(lora_request.lora_path)
            from llmcls.backends.loading import peft_wrapping

            with peft_wrapping():
                adapted = PeftModel.from_pretrained(self.model, lora_request.lora_path)
            self._adapted[lora_request.lora_path] = adapted.eval()
        return self._adapted[lora_request.lora_path]

    def _validate_adapter(self, path: str):
        """PEFTHelper.validate_legal: the adapter features vLLM does not implement."""
        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
        errors = []
        if set(config.get("modules_to_save") or ()) - {"classifier", "score"}:
            errors.append("vLLM only supports modules_to_save being either None or ['classifier', 'score'].")
        if config.get("use_dora"):
            errors.append("vLLM does not yet support DoRA.")
        rank = max([config["r"], *(config.get("rank_pattern") or {}).values()])
        if rank > self.max_lora_rank:
            errors.append(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
        if config.get("bias", "none") != "none":
            errors.append("Adapter bias is not supported.")
        if errors:
            raise ValueError(" ".join(errors))

    @staticmethod
    def _next_logprobs(model, ids: list[int]):
        import torch

        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    def _distribution(self, model, ids, p):
        logprobs = self._next_logprobs(model, ids)
        counted = p.num_logprobs if hasattr(type(p), "num_logprobs") else p.logprobs
        sampled = int(logprobs.argmax())
        first = {t: SimpleNamespace(logprob=float(logprobs[t])) for t in [sampled, *map(int, p.logprob_token_ids)]}
        return SimpleNamespace(outputs=[SimpleNamespace(text="", token_ids=[sampled], finish_reason="length",
                                                        logprobs=None if counted is None else [first])])

    def _greedy(self, model, ids, p):
        import regex

        stop_ids = set(p.stop_token_ids or ())
        pattern = p.structured_outputs.regex if p.structured_outputs is not None else None
        generated: list[int] = []
        finish = "length"
        while len(generated) < p.max_tokens:
            order = self._next_logprobs(model, ids + generated).argsort(descending=True).tolist()
            if pattern is not None:  # the most likely token the grammar allows
                order = [next((t for t in order if self._allowed(pattern, generated, t, stop_ids, regex)), None)]
            token = order[0]
            if token is None or token in stop_ids:
                finish = "stop"
                break
            generated.append(token)
            text = self.hf_tokenizer.decode(generated, skip_special_tokens=p.skip_special_tokens)
            if any(s in text for s in p.stop or ()):
                finish = "stop"
                break
        text = self.hf_tokenizer.decode(generated, skip_special_tokens=p.skip_special_tokens)
        for s in p.stop or ():
            text = text.split(s, 1)[0]
        return SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=generated, finish_reason=finish,
                                                        logprobs=None)])

    def _allowed(self, pattern, generated, token, stop_ids, regex) -> bool:
        text = self.hf_tokenizer.decode(generated)
        if token in stop_ids:
            return not self.ignore_end and regex.fullmatch(pattern, text) is not None
        # special tokens keep their text: the grammar has no room for them
        return regex.fullmatch(pattern, self.hf_tokenizer.decode(generated + [token]), partial=True) is not None


def install(monkeypatch, version: str = "0.33.0") -> list[LLM]:
    """Make `import vllm` (and the submodules the backend imports) yield this stand-in, behaving as vLLM `version`;
    returns the engines made."""
    import trl  # noqa: F401  (its import-time probe for an installed vLLM must see the real environment)

    release = tuple(int(part) for part in version.split(".")[:2])
    root = types.ModuleType("vllm")
    root.__version__ = version
    root.LLM, root.SamplingParams = LLM, SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.SamplingParams, sampling.StructuredOutputsParams = SamplingParams, StructuredOutputsParams
    if release >= (0, 21):
        sampling.MAX_LOGPROB_TOKEN_IDS = 128
    else:
        monkeypatch.delattr(SamplingParams, "num_logprobs")
    if release < (0, 20):
        monkeypatch.setattr(SamplingParams, "__struct_fields__", tuple(f for f in FIELDS if f != "logprob_token_ids"))
    quantization = types.ModuleType(QUANTIZATION)
    quantization.QUANTIZATION_METHODS = ["awq", "fp8", "gptq", "gptq_marlin", "awq_marlin", "compressed-tensors",
                                         *(["bitsandbytes"] if release < (0, 28) else [])]
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    root.sampling_params, root.lora, lora.request = sampling, lora, request
    for name, module in {"vllm": root, "vllm.sampling_params": sampling, "vllm.lora": lora,
                         "vllm.lora.request": request, "vllm.model_executor": types.ModuleType("vllm.model_executor"),
                         "vllm.model_executor.layers": types.ModuleType("vllm.model_executor.layers"),
                         QUANTIZATION: quantization}.items():
        monkeypatch.setitem(sys.modules, name, module)
    created: list[LLM] = []
    monkeypatch.setattr(LLM, "created", created)
    return created
