"""After SFT trains: the run directory's files (adapter, tokenizer, config.yaml, labels.json, --merge's merged model)
and the evaluation of validation/test through the generative path, from the trained model in this process or,
under FSDP / ZeRO-3 and for a LoRA trained in another dtype than the evaluation's, from the saved adapter loaded
afresh as `llmcls zeroshot --adapter RUN_DIR/adapter` loads it. A QLoRA adapter merges into the unquantised base
loaded afresh (`save_merged`), never into the 4-/8-bit model it trained on.
"""

from __future__ import annotations

import shutil
import time

from llmcls.config import to_dict
from llmcls.progress import console
from llmcls.runs import RunDir


def save_outputs(trainer, tokenizer, corpus, script_args, gen_args, training_args, model_args, data_args, trained,
                 merge: bool = False):
    """The adapter (or the whole model), its tokenizer, config.yaml and labels.json, and with `merge` the merged
    model, from `trainer.model` (under sharding `finish_from_saved` merges instead)."""
    run = RunDir(training_args.output_dir).create()
    if trainer.accelerator.is_main_process:  # predictions of an earlier model here must not be "resumed" from
        run.clear_results()
        for earlier in ("adapter", "merged"):  # nor its weights kept: a merged/ beside this run's adapter, say
            shutil.rmtree(run.path / earlier, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(run.path / "adapter"))  # the adapter alone for LoRA, the whole model otherwise
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(run.path / "adapter"))
        config = to_dict(data_args, script_args, gen_args, model_args) | {
            "training": training_args.to_dict(), "system": "sft", "data_sizes": corpus.sizes(),
            "notes": corpus.notes, **trained}
        config.pop("output_dir", None)
        run.write_config(_plain(config))
        run.write_labels(corpus.label_space)
        if merge and hasattr(trainer.model, "merge_and_unload"):
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(str(run.path / "merged"))
            tokenizer.save_pretrained(str(run.path / "merged"))
            trainer.model = merged
    return run


def _plain(obj):
    """YAML-safe copy: enums, paths and other objects become strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if obj is None or isinstance(obj, (bool, int, float, str)) else str(obj)


def trainable_parameters(model) -> int:
    """Counted from DeepSpeed's `ds_numel` where ZeRO-3 has partitioned a parameter (its local `numel()` is 0)."""
    return int(sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad))


def quantized(model) -> bool:
    """Whether `model` holds bitsandbytes 4-bit or 8-bit weights (QLoRA): merging an adapter into those would
    requantise the merged weights, and casting them is not possible."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def lora_in_other_dtype(model) -> bool:
    """Whether `model` is a LoRA (not quantized) whose base trained in another dtype than the evaluation runs in
    (`pick_dtype`, as `zeroshot --adapter` loads it): merged there and cast, its weights would differ by rounding
    from the adapter merged into a base loaded in the evaluation's dtype (bf16 LoRA on a CPU: scores off by ~1e-3),
    so such a run is evaluated from the saved adapter loaded afresh."""
    from llmcls.backends.loading import pick_dtype

    if not hasattr(model, "merge_and_unload") or quantized(model):
        return False
    base = model.get_base_model()
    return base.dtype != pick_dtype("auto", str(base.device))


def trained_backend(trainer, tokenizer, gen_args):
    """The trained model as a generation backend (one process, or DDP, where every process holds all of it), merged,
    in the dtype `llmcls zeroshot --adapter RUN_DIR/adapter` (`--model RUN_DIR/adapter` after full fine-tuning)
    loads on this device (`pick_dtype`): a full fine-tuning's float32 master weights are cast, as loading them in
    that dtype does (a LoRA trained in another dtype is evaluated from its saved adapter: `lora_in_other_dtype`). A
    4-bit or 8-bit model keeps its adapter unmerged and its dtypes (QLoRA: compute in --dtype)."""
    from llmcls.backends.loading import pick_dtype
    from llmcls.sft_trainer import generation_backend

    model = trainer.model
    if hasattr(model, "merge_and_unload") and not quantized(model):
        model = model.merge_and_unload()  # the adapter is saved; merged weights generate faster
    if not quantized(model):
        dtype = pick_dtype("auto", str(model.device))
        if model.dtype != dtype:
            model = model.to(dtype)
    return generation_backend(model, tokenizer, gen_args.batch_size)


def release_training_model(trainer) -> None:
    """Drop the main process's references to its shard of the model, the optimiser state and the accelerator's
    wrappers (DeepSpeed's engine), so that the model loaded afresh for the evaluation has their memory."""
    import gc

    import torch

    try:
        trainer.accelerator.free_memory()  # DeepSpeed's engine.destroy() among others
    except Exception as err:  # freeing is a saving, not a step of the run: evaluate anyway
        console.print(f"note: the trained model's memory was not released ({type(err).__name__}: "
                      f"{' '.join(str(err).split())[:200]})")
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = trainer.deepspeed = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def saved_backend(run, model_args, training_args, gen_args, *, load_in_4bit: bool):
    """The saved model loaded as `llmcls zeroshot --adapter RUN_DIR/adapter` loads it (after full fine-tuning `--model
    RUN_DIR/adapter`): the base model with the adapter merged (unless 4-bit), in `--dtype auto`'s dtype, on the main
    process's device. Transformers' global DeepSpeed config is unset first: under it, ZeRO-3 would partition the
    fresh model over processes that have exited, and `generate` would wait for them (synced_gpus)."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from llmcls.backends import ModelArguments, load_backend

    unset_hf_deepspeed_config()
    saved = str(run.path / "adapter")
    args = ModelArguments(model=model_args.model_name_or_path if model_args.use_peft else saved,
                          adapter=saved if model_args.use_peft else None, device=str(training_args.device),
                          load_in_4bit=load_in_4bit, trust_remote_code=training_args.trust_remote_code)
    return load_backend(args, seed=training_args.seed, batch_size=gen_args.batch_size)


def finish_from_saved(run, tokenizer, corpus, script_args, gen_args, training_args, model_args, trained, *,
                      merge: bool) -> None:
    """`merge` and the evaluation on the main process alone, from the saved adapter (or model) loaded afresh rather
    than from the trainer's model: under FSDP or ZeRO-3, whose sharded model needs the other processes' shards for
    a forward pass, and for a LoRA trained in another dtype than the evaluation's (`lora_in_other_dtype`). The
    evaluation is then the one `zeroshot --adapter RUN_DIR/adapter` gives."""
    backend, load_s = None, None
    if merge:
        backend, load_s = save_merged(run, tokenizer, model_args, training_args, gen_args)
        if model_args.load_in_4bit:  # evaluated as trained: 4-bit, the adapter unmerged
            backend = None
    if script_args.skip_eval:
        return
    if backend is None:
        started = time.perf_counter()
        backend = saved_backend(run, model_args, training_args, gen_args, load_in_4bit=model_args.load_in_4bit)
        load_s = time.perf_counter() - started
    evaluate(backend, corpus, run, script_args, gen_args, training_args, model_args, trained, load_s=round(load_s, 3))


def save_merged(run, tokenizer, model_args, training_args, gen_args):
    """RUN_DIR/merged: the saved adapter merged into the unquantised base loaded afresh (in `--dtype auto`'s dtype,
    as zeroshot loads it). Returns that backend and its load time in seconds."""
    started = time.perf_counter()
    backend = saved_backend(run, model_args, training_args, gen_args, load_in_4bit=False)
    load_s = time.perf_counter() - started
    backend.model.save_pretrained(str(run.path / "merged"))
    tokenizer.save_pretrained(str(run.path / "merged"))
    return backend, load_s


def evaluate(backend, corpus, run, script_args, gen_args, training_args, model_args, trained,
             load_s: float | None = None) -> None:
    """Predict validation/test with the trained model through the generative path (same prompts, same parser).
    `load_s`: the time the model took to load afresh (None: the model trained in this process)."""
    from llmcls.generative_run import run_splits

    prompt_args = script_args.prompt_arguments(str(run.path), training_args.seed)
    peft = f" + LoRA r={model_args.lora_r}" if model_args.use_peft else " (full fine-tuning)"
    run_splits(corpus, backend, run, prompt_args, gen_args, system="sft",
               model=f"{model_args.model_name_or_path}{peft}", load_s=load_s,
               extra={key: trained[key] for key in ("params_trained", "train_processes", "resumed_from_step")
                      if key in trained},
               train_s=trained["train_s"])
