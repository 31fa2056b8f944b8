"""The options of `llmcls sft` that are its own (TRL's SFTConfig and ModelConfig, llmcls's DataArguments and
GenerationArguments hold the rest): the prompt it trains and evaluates with, and what the run keeps and checks. Its
own module so that the modules of the run (`sft_data`, `sft_trainer`, `sft_outputs`) can name it without importing
the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcls.task import PromptArguments


@dataclass
class SFTScriptArguments:
    prompt: str = field(default="zeroshot", metadata={
        "help": "Prompt template (bundled name or .jinja file), used for training and evaluation alike."})
    chat: str = field(default="auto", metadata={
        "help": "auto: the tokenizer's chat template when it has one; on; off (plain layout, for base models).",
        "choices": ["auto", "on", "off"]})
    chat_template_kwargs: str | None = field(default=None, metadata={
        "help": "JSON object passed to the chat template, e.g. '{\"enable_thinking\": false}' for Qwen3-style "
                "thinking models; training and evaluation alike."})
    shuffle_label_order: bool = field(default=False, metadata={
        "help": "Permute the training target's labels per example, once from --seed (augmentation; default: "
                "canonical label-space order, which validation targets keep)."})
    merge: bool = field(default=False, metadata={"help": "Also save the LoRA-merged model (output_dir/merged)."})
    skip_eval: bool = field(default=False, metadata={"help": "Train and save only; no predictions."})
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "Keep the checkpoint-* folders (weights and optimizer state, for --resume_from_checkpoint) after a "
                "successful run; removed by default once the adapter is saved and evaluated, as train-encoder does "
                "(a full fine-tuning checkpoint holds the model's weights and twice their size in optimizer "
                "state)."})
    compile_regions: bool = field(default=True, metadata={
        "help": "With --torch_compile: compile the decoder layer once and reuse it for every layer (accelerate's "
                "regional compilation) instead of tracing the whole model. On 2 CPU cores a 35-step LoRA run of a "
                "24-layer model took 32 s instead of 128 s (fresh compilation caches) at the same step speed; the "
                "whole-model compilation of Qwen2.5-0.5B's shape ran past 220 s on an H100. false: the whole "
                "model."})
    generate_at_eval: int = field(default=0, metadata={
        "help": "At every evaluation (--eval_strategy steps|epoch), also predict the first N validation rows with "
                "the final evaluation's decoding and log eval_gen_micro_f1, eval_gen_macro_f1, eval_gen_samples_f1 "
                "and eval_gen_well_formed_rate (score mode: eval_gen_map, eval_gen_p_at_1); with "
                "--metric_for_best_model eval_gen_micro_f1 --load_best_model_at_end the kept checkpoint is the best "
                "by what the model writes, not by loss. 0: off."})

    def prompt_arguments(self, output_dir: str, seed: int) -> PromptArguments:
        """The generative path's options for this run's prompt (its template, layout and chat template options):
        the model is evaluated, after training and at --generate_at_eval, as it was trained."""
        return PromptArguments(output_dir=output_dir, prompt=self.prompt, chat=self.chat,
                               chat_template_kwargs=self.chat_template_kwargs, seed=seed)
