"""A stand-in for the parts of vLLM's API that `llmcls.backends.vllm` uses, computed with transformers on the CPU, so
the vLLM backend's own logic (request layout, score plans, log-probability read-back, structured-output requests,
LoRA requests) runs in tests without vLLM or a GPU.

    install(monkeypatch)              # `import vllm` now yields this stand-in; returns the list of LLMs created

What it mimics, and how: `LLM(**engine_args)` loads the model folder with transformers (float32); `generate(prompts,
params, lora_request=...)` takes `{"prompt_token_ids": ids}` prompts with one SamplingParams or one per prompt and
returns request outputs whose `outputs[0]` has `text` and `logprobs` (one dict token id -> object with `.logprob`
per generated token). A request with logprob_token_ids (or logprobs=-1, the whole vocabulary) reports the
distribution of its first generated token; other requests decode greedily to max_tokens, a stop token id or a stop
string (cut before it, as vLLM does). Structured outputs follow the regex the way vLLM's engines do: a token is
allowed when the text stays a prefix of a match, and an end token only once the text is a full match. Sampling
(temperature > 0), tensor parallelism and memory settings are recorded, not simulated.
"""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop", "stop_token_ids", "skip_special_tokens", "logprobs",
          "logprob_token_ids", "structured_outputs")


class SamplingParams:
    __struct_fields__ = FIELDS  # what the backend inspects to tell whether logprob_token_ids exists

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(type(self).__struct_fields__)
        if unknown:
            raise TypeError(f"unexpected SamplingParams fields {sorted(unknown)}")
        defaults = {"max_tokens": 16, "temperature": 1.0, "top_p": 1.0, "skip_special_tokens": True}
        for name in FIELDS:
            setattr(self, name, kwargs.get(name, defaults.get(name)))


class StructuredOutputsParams:
    def __init__(self, regex: str):
        self.regex = regex


class LoRARequest:
    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class LLM:
    created: list[LLM] = []

    def __init__(self, model: str, **engine_args):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path, self.engine_args = model, engine_args
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="float32").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
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
            if p.logprob_token_ids is not None or p.logprobs == -1:
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

            adapted = PeftModel.from_pretrained(self.model, lora_request.lora_path)
            self._adapted[lora_request.lora_path] = adapted.eval()
        return self._adapted[lora_request.lora_path]

    @staticmethod
    def _next_logprobs(model, ids: list[int]):
        import torch

        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    def _distribution(self, model, ids, p):
        logprobs = self._next_logprobs(model, ids)
        wanted = range(len(logprobs)) if p.logprob_token_ids is None else p.logprob_token_ids
        first = {int(t): SimpleNamespace(logprob=float(logprobs[t])) for t in wanted}
        return SimpleNamespace(outputs=[SimpleNamespace(text="", token_ids=[], logprobs=[first])])

    def _greedy(self, model, ids, p):
        import regex

        stop_ids = set(p.stop_token_ids or ())
        pattern = p.structured_outputs.regex if p.structured_outputs is not None else None
        generated: list[int] = []
        while len(generated) < p.max_tokens:
            order = self._next_logprobs(model, ids + generated).argsort(descending=True).tolist()
            if pattern is not None:
                order = [t for t in order[:200] if self._allowed(pattern, generated, t, stop_ids, regex)]
                if not order:
                    break
            token = order[0]
            if token in stop_ids:
                break
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=p.skip_special_tokens)
            if any(s in text for s in p.stop or ()):
                break
        text = self.tokenizer.decode(generated, skip_special_tokens=p.skip_special_tokens)
        for s in p.stop or ():
            text = text.split(s, 1)[0]
        return SimpleNamespace(outputs=[SimpleNamespace(text=text, token_ids=generated, logprobs=None)])

    def _allowed(self, pattern, generated, token, stop_ids, regex) -> bool:
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        if token in stop_ids:
            return regex.fullmatch(pattern, text) is not None
        return regex.fullmatch(pattern, self.tokenizer.decode(generated + [token], skip_special_tokens=True),
                               partial=True) is not None


def install(monkeypatch) -> list[LLM]:
    """Make `import vllm` (and the submodules the backend imports) yield this stand-in; returns the engines made."""
    import trl  # noqa: F401  (its import-time probe for an installed vLLM must see the real environment)

    root = types.ModuleType("vllm")
    root.__version__ = "0.0-fake"
    root.LLM, root.SamplingParams = LLM, SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.SamplingParams, sampling.StructuredOutputsParams = SamplingParams, StructuredOutputsParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    root.sampling_params, root.lora, lora.request = sampling, lora, request
    for name, module in {"vllm": root, "vllm.sampling_params": sampling, "vllm.lora": lora,
                         "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, module)
    created: list[LLM] = []
    monkeypatch.setattr(LLM, "created", created)
    return created
