"""Tiny causal language models for offline tests: a random Llama built from a config, with a byte-level BPE tokenizer
trained here by the `tokenizers` library and a ChatML chat template, saved as a normal model folder so the real
`from_pretrained(path)` code runs.

    from tiny_llms import build_tiny_llama
    path = build_tiny_llama(tmp_path / "llama", texts)        # -> folder with config, weights, tokenizer, template

Random weights make the model's output arbitrary but deterministic for a seed: good for testing that plumbing works
(shapes, parsing, resuming, constrained decoding), never for testing quality.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# ChatML, the layout of SmolLM2, Qwen2.5 and many others: the tests exercise the same chat-template path as them.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 600, *, chat_template: str | None = CHATML_TEMPLATE):
    """A byte-level BPE tokenizer (GPT-2 style pre-tokenisation) trained on `texts`, as a transformers tokenizer.

    `<|im_end|>` is the end-of-sequence token (as in SmolLM2-Instruct); padding uses `<|endoftext|>`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token="<|im_start|>", unk_token=None)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llama(out_dir: str | Path, texts: Iterable[str], *, vocab_size: int = 600, hidden_size: int = 32,
                     layers: int = 2, seed: int = 0, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Save a randomly initialised 2-layer Llama (grouped-query attention, ~40k parameters) and its tokenizer.

    `texts` train the tokenizer: pass the abstracts, label codes and prompt text the test will use, so that they
    tokenise into a realistic mix of merged and single-byte tokens. Returns `out_dir`.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size, chat_template=chat_template)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=tokenizer.eos_token_id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_lora_adapter(base_dir: str | Path, out_dir: str | Path, *, rank: int = 4, seed: int = 1) -> Path:
    """Save a PEFT LoRA adapter for the model in `base_dir` with random (non-zero) B matrices, so that loading it
    visibly changes the model's outputs. Returns `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmcls.backends.loading import peft_wrapping

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    with peft_wrapping():  # as llmcls wraps models: without transformers 5's is_gradient_checkpointing warning
        peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank,
                                                      target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero (a no-op adapter); make it matter
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(out_dir)
    return Path(out_dir)


# Prefix pairs on purpose: "cs" / "cs.IT" and "math" / "math-ph" (archive-level label spaces have them).
PREFIX_LABELS = ("cs.IT", "math.IT", "cs.LG", "cs", "cs.AI", "math", "math-ph", "stat.ML", "physics.soc-ph",
                 "cond-mat.stat-mech")


def build_label_llama(out_dir: str | Path, rows: list[dict]) -> Path:
    """The backends' tiny Llama: its tokenizer trained on `rows`' abstracts and label lists and on PREFIX_LABELS."""
    texts = [r["abstract"] for r in rows] + [", ".join(r["labels"]) for r in rows] + [", ".join(PREFIX_LABELS)] * 20
    return build_tiny_llama(out_dir, texts)


def label_prompts(tokenizer, rows: list[dict]) -> list[str]:
    """Chat prompts over PREFIX_LABELS for `rows`: a long shared head (a backend encodes it once) and abstracts of
    different lengths (padding)."""
    head = f"Classify the abstract into these categories: {', '.join(PREFIX_LABELS)}. Answer with the codes only.\n"
    return [tokenizer.apply_chat_template(
        [{"role": "user", "content": head + " ".join(r["abstract"].split()[: 12 + 9 * i])}],
        tokenize=False, add_generation_prompt=True) for i, r in enumerate(rows)]
