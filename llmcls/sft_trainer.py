"""The model and the trainer of `llmcls sft`: the base model loaded in `--dtype auto`'s dtype (QLoRA quantised onto
each process's GPU), TRL's SFTTrainer with llmcls's seeded length grouping, deferred per-step metrics and a
parameter count made once, and the generation check at each evaluation (`--generate_at_eval`).
"""

from __future__ import annotations

from typing import Any

from llmcls.corpus import Corpus
from llmcls.errors import LlmclsError
from llmcls.sft_args import SFTScriptArguments


def make_trainer(model_args, training_args, tokenizer, train_ds, eval_ds, check: GenerationCheck | None = None, *,
                 compile_regions: bool = True):
    from trl import get_peft_config

    from llmcls.backends.loading import peft_wrapping

    model = load_training_model(model_args, training_args)
    trainer_class = _trainer_class(checked=check is not None)
    try:
        with peft_wrapping():  # TRL wraps the model in PEFT's LoRA here
            trainer = trainer_class(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                                    processing_class=tokenizer, peft_config=get_peft_config(model_args))
    except ValueError as err:  # PEFT: --lora_target_modules names no module of this model
        if type(err).__name__ != "NoMatchingPeftModuleError":
            raise
        targets = model_args.lora_target_modules
        raise LlmclsError(f"--lora_target_modules {targets if isinstance(targets, str) else ' '.join(targets)}: "
                          f"{' '.join(str(err).split())[:300]}") from None
    if training_args.torch_compile:  # the Trainer's compile plugin, read when training prepares the model
        trainer.accelerator.state.dynamo_plugin.use_regional_compilation = compile_regions
    if check is not None:
        trainer.generation_check = check
    return trainer


class DeferredMetrics:
    """SFTTrainer's training loss on its plain path, with the numbers it logs (entropy, mean token accuracy, tokens
    seen) left on the device until the next log. TRL reads four of them back every step (`.item()`, `if n > 0`),
    each a synchronisation that keeps the CPU from queueing the next step while the GPU works, and LoRA on a small
    model is launch-bound (GPU busy under a third of an H200's time in the profile). The loss and the logged values
    are TRL's own, computed from the same tensors (tested against TRL's method); every other path (evaluation, an
    auxiliary loss, label smoothing, a loss function, DFT, sequence parallelism, `return_outputs`) is TRL's."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._plain_loss(return_outputs):
            self._settle()  # an evaluation logs the tokens seen so far
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        import torch

        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = (-outputs.log_probs).sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        gather = self.accelerator.gather_for_metrics
        if "attention_mask" in inputs:
            seen = inputs["attention_mask"].sum()
        else:  # padding-free batches carry position ids instead
            seen = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
        self._deferred = [*getattr(self, "_deferred", []),
                          (gather(outputs.label_mask.sum()).sum(), gather(outputs.entropy.detach().sum()).sum(),
                           gather(outputs.is_top1.sum()).sum(), gather(seen).sum())]
        return loss

    def _plain_loss(self, return_outputs: bool) -> bool:
        config = getattr(self.accelerator, "parallelism_config", None)
        return (self.model.training and not return_outputs and not self.aux_loss_enabled
                and self.compute_loss_func is None and self.label_smoother is None and self.args.loss_type == "nll"
                and not (config is not None and getattr(config, "sp_enabled", False)))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._settle()
        super().log(logs, start_time)

    def _settle(self) -> None:
        """The deferred numbers read back, into TRL's metrics as TRL puts them there each step."""
        for valid, entropy, correct, seen in getattr(self, "_deferred", []):
            metrics = self._metrics["train"]
            metrics["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
            metrics["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
            self._total_train_tokens += seen.item() // self._tp_size
            metrics["num_tokens"] = [self._total_train_tokens]
        self._deferred = []


def _trainer_class(checked: bool):
    from trl import SFTTrainer

    from llmcls.flops import CountedFlops
    from llmcls.sampling import SeededLengthGrouping

    class LlmclsSFTTrainer(SeededLengthGrouping, CountedFlops, DeferredMetrics, SFTTrainer):
        """SFTTrainer whose batches grouped by length come in an order set by the seed and the epoch (so a resumed
        run trains on the uninterrupted run's batches), and that counts the model's parameters once for its FLOPs
        log (`llmcls.flops`)."""

    class GenerationCheckedSFTTrainer(LlmclsSFTTrainer):
        """The same, whose evaluations also report what the model writes (`GenerationCheck`)."""

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            written = {f"{metric_key_prefix}_gen_{key}": value for key, value in self.generation_check(self).items()}
            self.log(written)
            metrics.update(written)  # the dict the Trainer reads metric_for_best_model from
            return metrics

    return GenerationCheckedSFTTrainer if checked else LlmclsSFTTrainer


class GenerationCheck:
    """Predict the first `--generate_at_eval` validation rows with the model being trained, through the generative
    path (same prompts, decoding and parser as the final evaluation), and return their metrics. The main process
    generates; under DDP the others receive its result, so every process selects the same best checkpoint."""

    def __init__(self, corpus: Corpus, tokenizer, script_args: SFTScriptArguments, gen_args, seed: int):
        self.corpus, self.tokenizer, self.script_args, self.gen_args, self.seed = (corpus, tokenizer, script_args,
                                                                                    gen_args, seed)

    def __call__(self, trainer) -> dict[str, float]:
        result: list[Any] = [None]
        if trainer.accelerator.is_main_process:
            result = [self.measure(trainer.model)]
        if trainer.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(result)
        return result[0]

    def measure(self, model) -> dict[str, float]:
        from llmcls.task import Task, quick_metrics

        training, side, cache = model.training, self.tokenizer.padding_side, model.config.use_cache
        backend = None
        try:
            backend = generation_backend(model, self.tokenizer, self.gen_args.batch_size)
            task = Task.build(self.corpus, backend, self.script_args.prompt_arguments("", self.seed), self.gen_args)
            return quick_metrics(task, self.corpus.get("validation"), self.script_args.generate_at_eval)
        finally:
            if backend is not None:  # training goes on with the attention it had (FlashAttention: sdpa meanwhile)
                backend.restore_attention()
            model.train(training)
            model.config.use_cache = cache
            self.tokenizer.padding_side = side


def generation_backend(model, tokenizer, batch_size: int):
    """`model` as a generation backend: in evaluation mode, with the KV cache that gradient checkpointing turned off
    for training back on, and `tokenizer` padding on the left (training pads on the right)."""
    from llmcls.backends.hf import HFBackend

    model.eval()
    if getattr(model.config, "use_cache", None) is False:
        model.config.use_cache = True
    tokenizer.padding_side = "left"
    return HFBackend(model, tokenizer, batch_size=batch_size)


def resolve_dtype(model_args, training_args) -> str:
    """--dtype auto (llmcls's default; TRL's is float32) as a dtype, set on `model_args` before the model and its
    quantization config are built (TRL's `get_quantization_config` takes QLoRA's compute dtype from it, and
    config.yaml records it): bfloat16 when a LoRA or QLoRA trains in bf16, since its base weights are frozen and
    bf16 autocast computes in bf16 anyway (half the memory), else float32. A full fine-tuning keeps float32: its
    optimiser updates the loaded weights, and small updates vanish in bfloat16's 8-bit mantissa. An explicit dtype
    is kept."""
    if model_args.dtype in (None, "auto"):
        model_args.dtype = "bfloat16" if training_args.bf16 and model_args.use_peft else "float32"
    return model_args.dtype


def load_training_model(model_args, training_args):
    from transformers import AutoModelForCausalLM
    from trl import get_quantization_config

    from llmcls.backends.loading import resolve_model
    from llmcls.model_paths import model_errors

    resolve_dtype(model_args, training_args)  # done by check_options already, unless a caller skipped it
    quantization = get_quantization_config(model_args)
    device_map = None
    if quantization is not None:
        from accelerate import PartialState

        # each process quantises onto its own GPU (check_options made sure there is one)
        device_map = {"": PartialState().local_process_index}
    kwargs: dict[str, Any] = {"trust_remote_code": training_args.trust_remote_code,
                              "attn_implementation": model_args.attn_implementation,
                              "quantization_config": quantization, "device_map": device_map,
                              "dtype": model_args.dtype}
    path = resolve_model(model_args.model_name_or_path)
    with model_errors(path):
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
