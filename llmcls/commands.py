"""The llmcls commands: their names, modules and descriptions, which of them train or predict into a run directory
(and under which system names), and how to reach a command's parser or main function. A leaf module (it imports
nothing of llmcls), so the CLI, the benchmark and the run directories share one list.
"""

from __future__ import annotations

import importlib

# name -> (module[:function], one-line description); the function defaults to `main(argv)`. Modules are imported only
# when their command runs, so --help is fast.
COMMANDS = {
    "data": ("llmcls.explore", "Inspect data: `data list` (bundled samples), `data stats PATH` (counts, plots)."),
    "train-linear": ("llmcls.linear", "Train the TF-IDF + linear one-vs-rest baseline; writes a run directory."),
    "train-encoder": ("llmcls.encoder", "Fine-tune an encoder (BERT, SciBERT, DeBERTa-v3, ...) with the Two-Way or "
                                        "BCE loss; writes a run directory."),
    "predict-encoder": ("llmcls.encoder_predict", "Predict a file with a trained encoder run; writes a run "
                                                  "directory."),
    "zeroshot": ("llmcls.generative", "Classify by prompting an LLM (free, --constrained or --mode score); writes a "
                                      "run directory."),
    "fewshot": ("llmcls.generative:fewshot", "The same with --k examples per prompt from --train (--selection knn, "
                                             "random, balanced)."),
    "sft": ("llmcls.sft", "LoRA/QLoRA instruction tuning of an LLM (TRL), then its predictions; also "
                          "`accelerate launch llmcls/sft.py`."),
    "benchmark": ("llmcls.benchmark", "Run the systems of a benchmark YAML on the same data (complete ones are "
                                      "skipped), then the report."),
    "evaluate": ("llmcls.evaluation", "Recompute and print the metrics of a predictions.jsonl."),
    "compare": ("llmcls.report", "Compare run directories: one table in the terminal; --out writes the report "
                                 "(Markdown, CSV, LaTeX, HTML, plots)."),
}

# The commands a benchmark YAML can run: each writes a run directory of its own.
RUNNABLE = ("train-linear", "train-encoder", "zeroshot", "fewshot", "sft")
# metrics.json's "system" -> the command that writes such runs (encoder systems are "encoder-<loss>")
_COMMAND_OF_SYSTEM = {"linear": "train-linear", "sft": "sft", "zeroshot": "zeroshot", "fewshot": "zeroshot"}


def command_of_system(system: str) -> str | None:
    """The command that writes runs of `system` (None for an empty name; an unknown one is returned as it is)."""
    if system.startswith("encoder"):
        return "train-encoder"
    return _COMMAND_OF_SYSTEM.get(system, system or None)


def command_module(name: str):
    """The module of a command (its `make_parser`, `SUBCOMMANDS`, ...)."""
    return importlib.import_module(COMMANDS[name][0].partition(":")[0])


def command_main(name: str):
    """The function that runs a command: main(argv) -> exit status."""
    return getattr(command_module(name), COMMANDS[name][0].partition(":")[2] or "main")
