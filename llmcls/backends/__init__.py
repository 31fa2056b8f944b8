"""Generation backends: one interface over transformers (`hf`, the default) and vLLM (`vllm`, optional extra).

    backend = load_backend(ModelArguments(model="HuggingFaceTB/SmolLM2-135M-Instruct"), seed=42, batch_size=16)
    texts = backend.generate(prompts, max_new_tokens=24, constraint=LabelConstraint(labels, ", "))
    scores = backend.score(prompts, labels, separator=", ")     # (n_prompts, n_labels) log-probabilities

Prompts are finished strings (chat template applied); a backend tokenises them with `encode_prompts`, so both
backends see the same token ids. Backends import torch, transformers or vllm only when loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class ModelArguments:
    """Which model to load and how (shared by the generative commands and, for loading, by SFT)."""

    model: str | None = field(default=None, metadata={
        "help": "Hugging Face hub id, local model folder, or a .gguf file (converted once to a model folder under "
                "$LLMCLS_CACHE, default ~/.cache/llmcls, and loaded from there afterwards)."})
    adapter: str | None = field(default=None, metadata={"help": "PEFT LoRA adapter folder to load on the model."})
    backend: str = field(default="hf", metadata={
        "help": "hf (transformers) or vllm (optional extra: pip install 'llmcls[vllm]').", "choices": ["hf", "vllm"]})
    dtype: str = field(default="auto", metadata={
        "help": "auto: bfloat16 on a GPU that supports it (else float16), float32 on CPU.",
        "choices": ["auto", "bfloat16", "float16", "float32"]})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available, else cpu), cpu, cuda, cuda:N."})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "Quantise the weights to 4-bit NF4 with bitsandbytes (optional extra: pip install 'llmcls[bnb]')."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the model's folder."})
    static_cache: bool = field(default=False, metadata={
        "help": "HF backend, generation: decode with a static KV cache, whose decoding steps transformers compiles "
                "on a GPU (CUDA graphs: a few launches a token instead of hundreds). Prompts are padded to a "
                "multiple of 64 tokens so that few shapes compile (each new one costs a compilation), and the "
                "prompts' shared prefix is encoded with every batch. For long runs on a GPU (one H100, batch 256, "
                "Qwen2.5-0.5B's shape: 195 -> 350 examples/s constrained after 34 s of compilation, so it pays "
                "from about 15,000 prompts); score mode is unaffected."})
    compile_layers: bool = field(default=False, metadata={
        "help": "HF backend: compile each decoder layer's MLP and norms with torch.compile (the parts that do not "
                "touch the KV cache, so one compilation serves every layer; recompiled once for varying shapes). "
                "For GPUs, where it fuses the element-wise kernels around the matrix products: one H200, batch "
                "256, Qwen2.5-0.5B's shape, score mode 540 -> 701 examples/s after 3.4 s of compilation; "
                "generation not measured. On a CPU it only adds compilation time."})
    tensor_parallel_size: int = field(default=1, metadata={
        "help": "vLLM: GPUs to split the model over (for models larger than one GPU)."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM: share of GPU memory it may use."})
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM: context length to reserve cache for."})


@dataclass(frozen=True)
class LabelConstraint:
    """Constrained decoding: answers are label codes of `labels` joined by `separator`, each at most once."""

    labels: tuple[str, ...]
    separator: str = ", "
    max_labels: int | None = None
    prefix: str = ""  # written before the first label (" " after a plain prompt's "Categories:")
    # end the answer when the model's own choice leaves the format after a label (see backends.constrained)
    stop_off_format: bool = True


class Backend(Protocol):
    name: str  # "hf" or "vllm"
    device: str  # for run records, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"
    tokenizer: Any  # a transformers tokenizer: chat template, token counts
    max_positions: int | None  # the most tokens (prompt and answer) the model takes, when known

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, constraint: LabelConstraint | None = None,
                 stop: Sequence[str] = (), temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
        """The generated text of every prompt (special tokens removed, cut before the first stop string);
        greedy unless `temperature` > 0. With a constraint, `stop` is ignored: the grammar ends the answer."""

    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, separator: str | None = None,
              ends: str = "prefixes") -> np.ndarray:
        """(n_prompts, n_continuations) total log-probabilities of each continuation right after each prompt.

        With `separator`, a continuation's score also counts the probability that it ends there (the next token
        starts the separator or ends the answer): for every continuation (`ends="all"`) or only for those that are
        a token prefix of another (`ends="prefixes"`, the default; see `constrained.ScorePlan`)."""

    def score_batches(self, batches: Iterable[Sequence[str]], continuations: Sequence[str], *,
                      separator: str | None = None, ends: str = "prefixes") -> Iterator[np.ndarray]:
        """`score` of each batch in turn; a backend may start on the next batch before the caller has taken this
        one's scores (the HF backend queues it on the GPU, which then runs while the caller writes)."""


def load_backend(args: ModelArguments, *, seed: int = 42, batch_size: int = 16,
                 check_tokenizer: Callable[[Any], None] | None = None) -> Backend:
    """The backend `args` name. `check_tokenizer(tokenizer)` may raise before the model's weights load (HF backend;
    vLLM loads both at once), so that a prompt layout the tokenizer cannot render fails fast."""
    from llmcls.errors import LlmclsError

    if not args.model and not args.adapter:  # an adapter names its base model
        raise LlmclsError("--model is required (a hub id, a model folder or a .gguf file)")
    if args.backend == "vllm":
        from llmcls.backends.vllm import VLLMBackend

        backend = VLLMBackend(args, seed=seed, batch_size=batch_size)
        if check_tokenizer is not None:
            check_tokenizer(backend.tokenizer)
        return backend
    from llmcls.backends.hf import HFBackend

    return HFBackend.load(args, seed=seed, batch_size=batch_size, check_tokenizer=check_tokenizer)


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of finished prompts, with the tokenizer's special tokens (BOS) but never a doubled BOS.

    Chat templates of some models (Llama 3) write the BOS token themselves and tokenizers add it again; a plain
    prompt (no chat template) needs the tokenizer's BOS. Adding it and dropping a duplicate covers both.
    """
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    result = []
    for text, ids in zip(texts, tokenizer(list(texts), add_special_tokens=True)["input_ids"], strict=True):
        ids = list(ids)
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        # a tokenizer configured to append EOS (add_eos_token) would end every prompt before the answer starts
        if eos is not None and ids and ids[-1] == eos and not text.endswith(str(tokenizer.eos_token)):
            ids = ids[:-1]
        result.append(ids)
    return result


def count_tokens(tokenizer, texts: Sequence[str], chunk: int = 256) -> list[int]:
    """Lengths of `encode_prompts(tokenizer, texts)`, encoded a chunk at a time: a whole split at once held every
    prompt's encoding (about 100 KB a row for 800-token prompts: 11 GB for 100k rows) to keep only its length."""
    return [len(ids) for start in range(0, len(texts), chunk)
            for ids in encode_prompts(tokenizer, texts[start:start + chunk])]


# Tokens that end an assistant turn in common chat formats (ChatML, Llama 3, Phi, Gemma, Mistral, GPT-2).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                      "</s>")


def end_token_ids(tokenizer, eos_token_id: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """Token ids that end an answer: the model's EOS id(s) and any end-of-turn token the tokenizer has as a
    special token (a chat model's generation config often names only one of them)."""
    ids: list[int] = []
    for value in (eos_token_id, tokenizer.eos_token_id):
        if value is None:
            continue
        ids.extend([value] if isinstance(value, int) else list(value))
    special = set(tokenizer.all_special_tokens) | {str(t) for t in getattr(tokenizer, "added_tokens_decoder",
                                                                            {}).values()}
    for token in END_OF_TURN_TOKENS:
        if token in special:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                ids.append(token_id)
    if not ids:
        from llmcls.errors import LlmclsError

        raise LlmclsError("the tokenizer has no end-of-sequence token; cannot tell where an answer ends")
    return tuple(dict.fromkeys(ids))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string (generation stops after emitting it; it is not part of the answer)."""
    cut = min((index for index in (text.find(s) for s in stop if s) if index >= 0), default=len(text))
    return text[:cut]
