"""Attention for compiled encoder training: SDPA's fused kernels called by name.

Under torch.compile, BERT's attention with dropout ran unfused in train-encoder's step on an H200 (session 15: SDPA's
math path, batched matmuls and a softmax + dropout kernel, about 30% of the step's kernel time), where the eager step
ran cuDNN's fused kernel. Calling a fused kernel's aten op (`_scaled_dot_product_{flash,efficient,cudnn}_attention`,
each with its autograd formula) leaves the compiled graph no kernel to choose. `use_fused_attention(model, kind)`
registers such an attention function with transformers' `AttentionInterface` (and SDPA's masks for it) and sets it
on the model; models that do not attend through that interface with SDPA (DeBERTa-v2/v3) are left as they are.
`encoder_train.build_trainer` does so with `flash` under `--torch_compile` on a GPU (`--fused_attention`, on by
default).

Kinds: `flash` and `cudnn` take batches without a mask (train-encoder's collator drops a mask that hides nothing), the
memory-efficient kernel any with a mask (an additive bias in the query's dtype); `unmasked`: `flash` with masks that
stay absent for batches without `attention_mask` (`unmasked_sdpa_mask`: compiled with torch 2.11, transformers built
one hiding nothing, so `flash` ran the memory-efficient kernel throughout; not yet measured in the whole step);
`efficient`: always that kernel; `island`: transformers' own SDPA call left out of the compiled graph
(`torch.compiler.disable`: eager SDPA picks its kernel; a graph break each layer). Outside a compiled graph and off
CUDA every kind is transformers' SDPA call (eager, SDPA picks cuDNN's kernel itself).
"""

from __future__ import annotations

import torch

KINDS = ("flash", "unmasked", "cudnn", "efficient", "island")
# the names they are registered under: transformers reads any name with "flash" in it as a flash-attention package
REGISTERED = {"flash": "llmcls_fused_fa", "unmasked": "llmcls_fused_fa_unmasked", "cudnn": "llmcls_fused_cudnn",
              "efficient": "llmcls_fused_mem", "island": "llmcls_sdpa_island"}


def unmasked_sdpa_mask(*, attention_mask=None, allow_is_bidirectional_skip: bool = False, local_size=None,
                       **kwargs):
    """transformers' SDPA mask, except that a bidirectional mask over a batch that came without `attention_mask` is
    no mask at all. Compiled with torch 2.11, transformers' own check materialised a (batch, 1, q, kv) mask hiding
    nothing for such batches (session 16, H200), which sends attention to the memory-efficient kernel with a bias
    where the flash kernel could run. train-encoder's collator leaves `attention_mask` out only when no row is
    padded."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and allow_is_bidirectional_skip and local_size is None:
        return None
    return sdpa_mask(attention_mask=attention_mask, allow_is_bidirectional_skip=allow_is_bidirectional_skip,
                     local_size=local_size, **kwargs)


def _bias(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A boolean keep-mask (True: attend) or an additive mask as a (batch, heads, q, kv) bias in the query's dtype."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(~mask, float("-inf"))
    return mask.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])


def takes_fused(query: torch.Tensor) -> bool:
    """Whether SDPA's fused kernels take queries like this one: half precision (flash and cuDNN have no float32) and
    a head size that is a multiple of 8 up to 256 (the kernels' alignment and limit). Others keep transformers'
    SDPA call, which picks a kernel itself."""
    head = query.shape[-1]
    return query.dtype in (torch.float16, torch.bfloat16) and head % 8 == 0 and head <= 256


def fused_attention(kind: str):
    """An attention function with transformers' signature (module, query, key, value, attention_mask, dropout,
    scaling, ...) -> (output (batch, length, heads, head dim), None) that calls the fused kernel `kind` names."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r} (use one of {', '.join(KINDS)})")
    if kind == "island":
        return torch.compiler.disable(sdpa_attention_forward)
    if kind == "unmasked":
        kind = "flash"  # the same kernels; only its masks differ (`unmasked_sdpa_mask`)
    aten = torch.ops.aten

    def forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
        if (not torch.compiler.is_compiling() or not query.is_cuda or not takes_fused(query)
                or getattr(module, "is_causal", False) or kwargs.get("position_bias") is not None):
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
        if attention_mask is None and kind == "flash":
            out = aten._scaled_dot_product_flash_attention(query, key, value, dropout, scale=scaling)[0]
        elif attention_mask is None and kind == "cudnn":
            out = aten._scaled_dot_product_cudnn_attention(query, key, value, None, True, dropout,
                                                           scale=scaling)[0]
        else:
            bias = None if attention_mask is None else _bias(query, key, attention_mask)
            out = aten._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout,
                                                               scale=scaling)[0]
        return out.transpose(1, 2).contiguous(), None

    return forward


def fused_kernels_on(device) -> bool:
    """Whether `device` runs SDPA's flash and memory-efficient kernels as `flash` calls them: a CUDA GPU of compute
    capability 8.0 or later (Ampere on; flash attention needs it)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def use_fused_attention(model, kind: str) -> bool:
    """Register `fused_attention(kind)` and set it on `model` (or on the encoder inside a mean-pooling head); False,
    and the model unchanged, when the model does not attend through transformers' AttentionInterface with SDPA."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    target = model if hasattr(model, "set_attn_implementation") else getattr(model, "encoder", model)
    config = getattr(target, "config", None)
    if (not getattr(target, "_supports_attention_backend", False)
            or getattr(config, "_attn_implementation", None) != "sdpa"):
        return False
    name = REGISTERED[kind]
    AttentionInterface.register(name, fused_attention(kind))
    # and SDPA's masks for it: transformers builds no mask at all for an attention name it has no mask function for
    AttentionMaskInterface.register(name, unmasked_sdpa_mask if kind == "unmasked" else sdpa_mask)
    target.set_attn_implementation(name)
    return True
