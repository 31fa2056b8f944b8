"""LoRA / QLoRA / full supervised fine-tuning of a causal LM with TRL, then evaluation through the generative path.

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml llmcls/sft.py \\
        --config configs/sft_qwen2.5-1.5b_lora.yaml --learning_rate 1.0e-4
    llmcls sft --config configs/sft_smollm2-135m_lora.yaml            # one process (one GPU; a CPU takes hours)

Each training abstract becomes a prompt-completion pair built exactly as at inference: the same template
(`prompts/`), the same chat template (plain layout for base models), and as target `format_labels(labels)` in
label-space order (the canonical order: most frequent label first; `--shuffle_label_order` permutes it per example,
once, as an augmentation) framed as the chat template frames an assistant's content (`prompts.answer_prefix`
before it, the end-of-turn text after it), so the trained model learns to stop. Prompt and
target are tokenised as at inference (`backends.encode_prompts` for the prompt; the target as it follows the
prompt's tail, `constrained.continuation_ids`), and the loss covers the target tokens only, end token included.
After training, the adapter (and with `--merge` a merged model) is saved under `--output_dir`, and the model
predicts `--validation` / `--test` with the generative path's code (free or `--constrained` decoding, or `--mode
score`), writing the same run directory files as every other system. Under FSDP or DeepSpeed ZeRO-3, which shard
the trained model over the processes, the main process predicts with the saved adapter (or model) loaded afresh,
as `llmcls zeroshot --adapter RUN_DIR/adapter` would load it.

This module: the parser, the options' checks and the steps of a run; `sft_args` holds llmcls's own options,
`sft_data` builds the training examples, `sft_trainer` the model and the trainer, `sft_outputs` writes the run
directory and evaluates.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from llmcls.config import (
    NON_BLOCKING_BATCHES,
    SAMPLER_HELP,
    DataArguments,
    bf16_gpu,
    build_parser,
    check_distributed,
    parse,
    refuse_empty,
)
from llmcls.corpus import load_corpus
from llmcls.errors import LlmclsError, missing_extra
from llmcls.progress import console
from llmcls.runs import RunDir, check_checkpoint, checkpoint_step, wants_last_checkpoint
from llmcls.sft_args import SFTScriptArguments
from llmcls.sft_data import build_sft_dataset, load_training_tokenizer, model_positions
from llmcls.sft_outputs import (
    evaluate,
    finish_from_saved,
    lora_in_other_dtype,
    release_training_model,
    save_merged,
    save_outputs,
    trainable_parameters,
    trained_backend,
)
from llmcls.sft_trainer import GenerationCheck, make_trainer, resolve_dtype
from llmcls.task import GenerationArguments

# help texts that state llmcls's defaults (make_parser) in place of TRL's and transformers'
HELP = {
    "bf16": "bf16 (mixed) precision instead of float32: on by default where a CUDA GPU supports bfloat16 (and --fp16 "
            "is off), else off (the default shown is this machine's). On a CPU, --bf16 true needs --use_cpu true.",
    "train_sampling_strategy": SAMPLER_HELP,
    "dtype": "Dtype the model's weights load in. auto: bfloat16 when a LoRA or QLoRA trains in bf16 (--bf16, on by "
             "default on a bf16 GPU; also QLoRA's 4-bit compute dtype), else float32 (a full fine-tuning keeps "
             "float32 master weights under bf16 autocast). The evaluation after training runs in the dtype `llmcls "
             "zeroshot --adapter RUN_DIR/adapter` would load.",
}


def make_parser():
    from trl import ModelConfig, SFTConfig

    parser = build_parser([DataArguments, SFTScriptArguments, GenerationArguments, SFTConfig, ModelConfig],
                          prog="llmcls sft",
                          description="LoRA/QLoRA SFT of a causal LM on abstracts -> labels (TRL), then evaluation.")
    # The Trainer's NaN/inf filter reads the loss back from the GPU every step, a synchronisation that keeps the CPU
    # from queueing the next step (measured on an H200, LoRA on Qwen2.5-0.5B's shape: 32.8k -> 37.4k tokens/s
    # together with the benchmark's own per-step sync removed). A YAML key or a flag still sets it.
    parser.set_defaults(logging_nan_inf_filter=False)
    # Batches of similar lengths (a LengthGroupedSampler, seeded by epoch: llmcls/sampling.py) pad less: on AAPD's
    # 1,000 validation rows with SmolLM2's tokenizer, padding is 15.7% of a random batch of 16 with the zero-shot
    # prompt (label list) and 2.4% grouped, 35.7% and 6.8% with the compact prompt (benchmarks/bench_sft_padding.py);
    # the SmolLM2 recipe's 160 first examples trained in 246 s instead of 294 s on 2 CPU cores. The encoder's default
    # too; `random` restores shuffled batches.
    parser.set_defaults(train_sampling_strategy="group_by_length")
    # TRL's ModelConfig loads in float32 unless told otherwise, bf16 training included: a LoRA's frozen base weights
    # then take twice the memory and QLoRA computes in float32. `auto` is resolved by `resolve_dtype`.
    parser.set_defaults(dtype="auto")
    # TRL turns bf16 on unless --fp16, and transformers then refuses to parse on a machine without a bf16 GPU: there
    # the default is float32, as train-encoder's (its EncoderArguments). A YAML key or a flag still sets it.
    if not bf16_gpu():
        parser.set_defaults(bf16=False)
    import torch

    if not torch.cuda.is_available():  # pinning needs an accelerator; torch warns on every loader otherwise
        parser.set_defaults(dataloader_pin_memory=False)
    else:
        parser.set_defaults(accelerator_config=dict(NON_BLOCKING_BATCHES))
    for action in parser._actions:
        action.help = HELP.get(action.dest, action.help)
    return parser


def main(argv: list[str] | None = None) -> int:
    data_args, script_args, gen_args, training_args, model_args = parse(make_parser(), argv)
    check_distributed(training_args.world_size)
    check_values((data_args, script_args, gen_args, training_args, model_args))
    check_here(training_args, model_args, script_args)
    RunDir(training_args.output_dir).check_overwrite("sft")
    if training_args.resume_from_checkpoint is None:
        RunDir(training_args.output_dir).check_fresh_start("--resume_from_checkpoint true")
    corpus = load_corpus(data_args, required=("train",))
    tokenizer = load_training_tokenizer(model_args, training_args)
    positions = model_positions(model_args, training_args)
    train_ds = build_sft_dataset(corpus, "train", tokenizer, script_args, training_args, positions)
    eval_ds = (build_sft_dataset(corpus, "validation", tokenizer, script_args, training_args, positions)
               if training_args.eval_strategy != "no" else None)  # check_evaluation: a validation split is given
    check = None
    if script_args.generate_at_eval:
        check = GenerationCheck(corpus, tokenizer, script_args, gen_args, training_args.seed)
    trainer = make_trainer(model_args, training_args, tokenizer, train_ds, eval_ds, check,
                           compile_regions=script_args.compile_regions)
    sharded = trainer_sharding(trainer)
    if sharded:
        check_saved_model(trainer, model_args, script_args)  # before training, not after it
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_s = time.perf_counter() - started
    trained = {"params_trained": trainable_parameters(trainer.model), "train_s": round(train_s, 3),
               "train_processes": training_args.world_size}
    if training_args.resume_from_checkpoint:  # train_s is then the resumed part only
        trained["resumed_from_step"] = checkpoint_step(training_args.resume_from_checkpoint)
    # evaluated from the saved adapter loaded afresh: a sharded model needs the other processes' shards for a forward
    # pass, and a LoRA trained in another dtype than the evaluation's is merged as zeroshot --adapter merges it (told
    # before --merge merges the trained model in place)
    from_saved = bool(sharded) or (not script_args.skip_eval and lora_in_other_dtype(trainer.model))
    # merged into the unquantised base loaded afresh: a sharded model is not whole here, a QLoRA adapter merged into
    # its 4-bit (8-bit) model in place would be requantised with it, and an evaluation from the saved adapter scores
    # the merge zeroshot makes (RUN_DIR/merged must then give the run's answers too)
    merge_afresh = script_args.merge and model_args.use_peft and bool(
        from_saved or model_args.load_in_4bit or model_args.load_in_8bit)
    run = save_outputs(trainer, tokenizer, corpus, script_args, gen_args, training_args, model_args, data_args,
                       trained, merge=script_args.merge and not merge_afresh)
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:  # the main process alone evaluates; the others must not wait for
        return 0  # it in a collective, which would time out (--ddp_timeout) on a long evaluation
    if from_saved:
        release_training_model(trainer)
        finish_from_saved(run, tokenizer, corpus, script_args, gen_args, training_args, model_args, trained,
                          merge=merge_afresh)
    else:
        if not script_args.skip_eval:  # QLoRA: the 4-bit (8-bit) model as trained, its adapter unmerged
            evaluate(trained_backend(trainer, tokenizer, gen_args), corpus, run, script_args, gen_args,
                     training_args, model_args, trained)
        if merge_afresh:
            release_training_model(trainer)
            save_merged(run, tokenizer, model_args, training_args, gen_args)
    if not script_args.keep_checkpoints:
        RunDir(training_args.output_dir).remove_checkpoints()  # after the evaluation: a crash there can resume
    console.print(f"Run written to {run.path}", soft_wrap=True, markup=False)
    return 0


def check_values(parsed: tuple) -> None:
    """The values and pairs of options refused before any file is read (`llmcls benchmark` checks every sft system's
    this way before the first system runs): training's, then the evaluation's, as zeroshot checks them."""
    data_args, script_args, gen_args, training_args, model_args = parsed
    refuse_empty(script_args, gen_args)  # llmcls's own options (TRL's and transformers' take their own checks)
    check_options(training_args, model_args, script_args)
    gen_args.check()
    check_evaluation(data_args, training_args, script_args)


def check_options(training_args, model_args, script_args: SFTScriptArguments) -> None:
    if not model_args.model_name_or_path:
        raise LlmclsError("--model_name_or_path is required (a hub id, a model folder or a .gguf file)")
    base = Path(model_args.model_name_or_path).expanduser().resolve()
    for replaced in ("adapter", "merged"):  # the run replaces them once trained: the base would be gone
        folder = (Path(training_args.output_dir).expanduser() / replaced).resolve()
        if base == folder or folder in base.parents:
            raise LlmclsError(f"--model_name_or_path {model_args.model_name_or_path} lies in --output_dir's "
                              f"{replaced}/, which this run replaces with its own: copy the model elsewhere, or "
                              "choose another --output_dir")
    sharded = sharding(training_args)
    if sharded and model_args.load_in_8bit and not script_args.skip_eval:
        raise LlmclsError(f"--load_in_8bit under {sharded}: the evaluation after training loads the "
                          "saved adapter afresh (the processes shard the trained model), on a 4-bit or unquantised "
                          "base only; use --load_in_4bit, or add --skip_eval true")
    resolve_dtype(model_args, training_args)
    if training_args.padding_free and not training_args.packing and training_args.max_length is not None:
        # TRL refuses it (it would not cut the joined examples to max_length) once the model is loaded
        raise LlmclsError(f"--padding_free true without --packing leaves --max_length {training_args.max_length} "
                          "unenforced, which TRL refuses: add --max_length null (prompts are still cut to the "
                          "model's positions) or --packing true")
    targets = model_args.lora_target_modules or []
    if isinstance(targets, str):  # one value ("all-linear") comes as a string
        targets = [targets]
    if any("," in target for target in targets):  # "q_proj,v_proj", like llmcls's other list options
        model_args.lora_target_modules = targets = [t.strip() for target in targets for t in target.split(",")
                                                    if t.strip()]
    from llmcls.prompts import parse_template_kwargs

    parse_template_kwargs(script_args.chat_template_kwargs)
    if script_args.merge and not model_args.use_peft:
        raise LlmclsError("--merge folds a LoRA adapter into the base weights; with --use_peft false the saved model "
                          "is whole already (RUN_DIR/adapter)")
    check_ignored_options(training_args, model_args)
    if model_args.use_peft and targets_lm_head(model_args.lora_target_modules):
        # TRL computes the loss from lm_head.weight directly (no full logits), so a LoRA there would never train.
        raise LlmclsError(f"--lora_target_modules {' '.join(targets)}: a LoRA on lm_head is not trained by TRL's "
                          "loss; leave lm_head out (use --lora_modules_to_save lm_head to train the head fully)")


def check_here(training_args, model_args, script_args: SFTScriptArguments) -> None:
    """What this machine and its disk must hold (after `check_values`, which `llmcls benchmark` runs for every system,
    selected or not, wherever it plans): QLoRA's GPU and bitsandbytes, the checkpoint to resume from, the prompt
    template."""
    check_quantization(model_args)
    resume = training_args.resume_from_checkpoint
    if wants_last_checkpoint(resume):  # the last checkpoint in --output_dir
        resume = training_args.resume_from_checkpoint = RunDir(training_args.output_dir).required_last_checkpoint(
            "--resume_from_checkpoint true")
    if resume is not None:
        check_checkpoint(resume, "--resume_from_checkpoint")
    from llmcls.prompts import template_reference

    script_args.prompt = template_reference(script_args.prompt)  # `zeroshot --adapter` takes it from anywhere


def targets_lm_head(targets: str | list[str] | None) -> bool:
    """Whether PEFT would put a LoRA on the `lm_head` module: a list names modules (or their name's last parts), a
    single string (TRL's ModelConfig makes one of a one-item list) is a regular expression that must match a
    module's whole name."""
    import re

    if isinstance(targets, str):
        try:
            return re.fullmatch(targets, "lm_head") is not None
        except re.error:  # PEFT reports it when it builds the adapter
            return False
    return "lm_head" in (targets or [])


def check_quantization(model_args) -> None:
    """4-bit and 8-bit weights (QLoRA) load through bitsandbytes onto a CUDA GPU: said before the data is read and
    tokenised, not when the model loads."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise LlmclsError("--load_in_4bit/--load_in_8bit (QLoRA) needs a CUDA GPU and bitsandbytes; on a CPU "
                          "leave them false (a LoRA on the unquantised weights)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise missing_extra("bitsandbytes", "bnb")


def check_evaluation(data_args, training_args, script_args: SFTScriptArguments) -> None:
    """Evaluation options that the Trainer would refuse only once the data is tokenised and the model loaded, or
    at the first evaluation."""
    strategy = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy))
    if strategy != "no" and data_args.validation is None and not data_args.split_ratios:
        raise LlmclsError(f"--eval_strategy {strategy} evaluates on a validation split: give --validation (or "
                          "--split_ratios), or set --eval_strategy no")
    metric = training_args.metric_for_best_model or ""
    if metric.removeprefix("eval_").startswith("gen_") and not script_args.generate_at_eval:
        raise LlmclsError(f"--metric_for_best_model {metric} is measured only with --generate_at_eval N (the first N "
                          "validation rows predicted at each evaluation)")
    if script_args.generate_at_eval:
        if strategy == "no":
            raise LlmclsError("--generate_at_eval needs evaluations: set --eval_strategy steps (with --eval_steps) "
                              "or epoch")
        if sharding(training_args):
            raise LlmclsError("--generate_at_eval generates with the main process's copy of the model, which FSDP "
                              "and DeepSpeed ZeRO-3 shard; use it on one GPU or under DDP")


def sharding(training_args) -> str | None:
    """How training will shard the model's weights over the processes ("FSDP", "DeepSpeed ZeRO-3" or None), known
    before the trainer exists: from --fsdp, from --deepspeed's config, or from `accelerate launch --config_file`
    (fsdp.yaml, deepspeed_zero3.yaml), which says so only through environment variables (ACCELERATE_USE_FSDP;
    accelerate's DeepSpeed plugin, which TrainingArguments builds, reads ACCELERATE_DEEPSPEED_ZERO_STAGE). ZeRO-1/2
    and DDP leave every process the whole model."""
    from accelerate.utils import parse_flag_from_env

    if training_args.fsdp or parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return "FSDP"
    plugin = getattr(training_args, "deepspeed_plugin", None)
    return "DeepSpeed ZeRO-3" if plugin is not None and plugin.zero_stage == 3 else None


def trainer_sharding(trainer) -> str | None:
    """What `sharding` tells from the arguments, read from the plugins the trainer's accelerator was built with: the
    final evaluation takes the saved model instead of `trainer.model` when they shard it."""
    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is not None:
        return "FSDP"
    plugin = getattr(state, "deepspeed_plugin", None)
    return "DeepSpeed ZeRO-3" if plugin is not None and plugin.zero_stage == 3 else None


def check_saved_model(trainer, model_args, script_args: SFTScriptArguments) -> None:
    """Under sharding the evaluation and --merge load what `trainer.save_model` writes, which is a loadable model only
    with the launcher's full-state-dict settings (accelerate_configs/ has them): refused before training otherwise."""
    if script_args.skip_eval and not script_args.merge:
        return
    state = trainer.accelerator.state
    fsdp = getattr(state, "fsdp_plugin", None)
    advice = "the evaluation after training loads the saved model; add --skip_eval true to train and save only"
    if fsdp is not None and "FULL_STATE_DICT" not in str(fsdp.state_dict_type):
        raise LlmclsError(f"FSDP with {str(fsdp.state_dict_type).rsplit('.', 1)[-1]} saves no whole model (set "
                          f"fsdp_state_dict_type: FULL_STATE_DICT in the accelerate config, as fsdp.yaml does): "
                          f"{advice}")
    deepspeed = getattr(state, "deepspeed_plugin", None)
    if (deepspeed is not None and deepspeed.zero_stage == 3 and not model_args.use_peft
            and not deepspeed.zero3_save_16bit_model):
        raise LlmclsError("DeepSpeed ZeRO-3 without zero3_save_16bit_model saves a full fine-tuning as ZeRO "
                          "partitions only (set zero3_save_16bit_model: true in the accelerate config, as "
                          f"deepspeed_zero3.yaml does): {advice}")


def check_ignored_options(training_args, model_args) -> None:
    """TRL options that llmcls's own data path would ignore while config.yaml recorded them as used: refused."""
    from trl import ModelConfig

    if training_args.completion_only_loss is False:
        raise LlmclsError("--completion_only_loss false: llmcls sft always trains on the answer only (the prompt's "
                          "labels are -100)")
    if training_args.assistant_only_loss:
        raise LlmclsError("--assistant_only_loss: llmcls sft builds prompt-completion pairs and trains on the "
                          "completion already; leave it off")
    for name in ("chat_template_path", "eos_token"):  # TRL applies them after llmcls has rendered the examples
        if getattr(training_args, name, None):
            raise LlmclsError(f"--{name}: training examples are rendered with the model's own tokenizer before TRL "
                              "would apply it, so training and evaluation would differ; put the chat template or "
                              "end token in the model folder's tokenizer files instead")
    if not model_args.use_peft:
        defaults = ModelConfig()
        lora = [name for name in vars(defaults) if (name.startswith("lora_") or name in ("use_rslora", "use_dora"))
                and getattr(model_args, name) != getattr(defaults, name)]
        if lora:
            raise LlmclsError(f"--{lora[0]} applies to a LoRA: add --use_peft true (without it every weight is "
                              "trained and the LoRA options do nothing)")


if __name__ == "__main__":  # `accelerate launch llmcls/sft.py ...`: the same command, one-line errors
    from llmcls.cli import main as cli_main
    raise SystemExit(cli_main(["sft", *sys.argv[1:]]))
