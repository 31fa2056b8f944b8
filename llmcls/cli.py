"""`llmcls <command>`: dispatch only. Each command lives in its own module with `main(argv)`."""

from __future__ import annotations

import importlib
import os
import sys

from llmcls import __version__
from llmcls.errors import LlmclsError

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


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: llmcls <command> [options]    (llmcls {__version__})", "",
             "Multi-label classification of scientific abstracts: linear, encoder and LLM systems, one metrics table.",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "`llmcls <command> --help` shows the options of a command."]
    return "\n".join(lines)


def command_module(name: str):
    """The module of a command (its `make_parser`, `SUBCOMMANDS`, ...)."""
    return importlib.import_module(COMMANDS[name][0].partition(":")[0])


def command_main(name: str):
    """The function that runs a command: main(argv) -> exit status."""
    return getattr(command_module(name), COMMANDS[name][0].partition(":")[2] or "main")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"llmcls: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = command_module(name)
    command = " ".join(argv[:2]) if argv[1:2] and argv[1] in getattr(module, "SUBCOMMANDS", {}) else name  # data stats
    try:
        return int(command_main(name)(argv[1:]) or 0)
    except LlmclsError as err:
        print(f"llmcls {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llmcls {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`llmcls compare ... | head`): nothing more to say, and Python's flush of
        # stdout at exit must not raise again, so stdout is pointed at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
