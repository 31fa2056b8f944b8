"""`llmcls zeroshot` / `llmcls fewshot`: ask an LLM for the arXiv categories of each abstract.

    llmcls zeroshot --model HuggingFaceTB/SmolLM2-135M-Instruct --test aapd-test --labels labels.json \\
        --constrained --output_dir runs/zeroshot
    llmcls fewshot --k 5 --selection knn --train aapd-train --test aapd-test --model MODEL --output_dir runs/fewshot
    llmcls zeroshot --mode score --validation aapd-validation --test aapd-test --model MODEL --output_dir runs/score

Per example: render the prompt (`prompts/*.jinja`, the model's chat template) -> the backend generates an answer
(free, or `--constrained` to label codes) and `parsing.parse_labels` reads it, or, with `--mode score`, the backend
scores every label by its log-probability as the answer -> `metrics.py` scores the split. The two commands are one:
`--k` > 0 makes it few-shot (examples from `--train`, chosen by `--selection`); `system` in metrics.json says which.

Score mode gives a score for every label, so ranking metrics (P@k, nDCG, mAP) exist and thresholds (and "at least
`--min_labels`") are tuned on `--validation` like the encoders'; without validation the top `--min_labels` labels
are predicted. Predictions are appended to predictions.jsonl batch by batch: rerunning the same command in the same
`--output_dir` skips the finished ids (an interrupt loses at most the batches in flight: one, or in score mode
two, the next being queued on the GPU while a batch's records are written); at the end the file is rewritten in
data order with the final predictions. metrics.json carries `"generation"`: mode, constrained, well_formed_rate,
unknown_label_rate, ambiguous_label_rate (names two labels of the space share), any_label_rate (null in score mode,
where nothing is generated).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llmcls.backends import ModelArguments, load_backend
from llmcls.config import (
    NOT_RECORDED,
    DataArguments,
    build_parser,
    changed_options,
    describe_changes,
    parse,
    refuse_empty,
    to_dict,
)
from llmcls.corpus import Corpus, load_corpus
from llmcls.errors import LlmclsError
from llmcls.generative_run import is_finished, run_splits
from llmcls.labels import LabelSpace
from llmcls.progress import console
from llmcls.runs import RunDir, files_fingerprint
from llmcls.task import MODE_OPTIONS, GenerationArguments, PromptArguments, rows_of

FEWSHOT_NEEDS_K = ("fewshot needs --k N, the examples per prompt (drawn from --train); without it the run would be "
                   "zero-shot (llmcls zeroshot)")

# config keys that may change between an interrupted run and its resumption without mixing incompatible predictions;
# the notes follow from the data and the options, compared themselves (a note a newer llmcls adds must not block
# resuming a run an older one began); --compile_layers changes how the same computation runs, as --batch_size does
RESUMABLE_CHANGES = {"batch_size", "compile_layers", "device", "gpu_memory_utilization", "output_dir", "notes"}


def make_parser(command: str = "zeroshot"):
    parser = build_parser([DataArguments, ModelArguments, PromptArguments, GenerationArguments],
                          prog=f"llmcls {command}",
                          description="Classify abstracts by prompting an LLM (zero-shot, or few-shot with --k); "
                                      "writes a run directory.")
    if command == "fewshot":  # no default: fewshot is refused without --k (0 would be zero-shot)
        parser.set_defaults(k=None)
        for action in parser._actions:
            if action.dest == "k":
                action.help = "Few-shot examples per prompt, from --train (required)."
    return parser


def fewshot(argv: list[str] | None = None) -> int:
    """`llmcls fewshot`: the same command, which must be given --k."""
    return main(argv, command="fewshot")


def main(argv: list[str] | None = None, command: str = "zeroshot") -> int:
    data_args, model_args, prompt_args, gen_args = parse(make_parser(command), argv)
    if command == "fewshot" and not prompt_args.k:
        raise LlmclsError(FEWSHOT_NEEDS_K)
    check_options(model_args, prompt_args, gen_args)
    fine_tuned = adopt_training_prompt(model_args, prompt_args, data_args, gen_args) or bool(model_args.adapter)
    system = "fewshot" if prompt_args.k > 0 else "zeroshot"
    corpus = load_corpus(data_args, required=("train",) if prompt_args.k > 0 else ())
    evaluated = [s for s in ("validation", "test") if corpus.get(s) is not None]
    if not evaluated:
        raise LlmclsError("nothing to classify: pass --test (and/or --validation)")
    if data_args.labels is None and corpus.get("train") is None:
        note = (f"the label space is the {len(corpus.label_space)} labels found in the gold answers of "
                f"--{' and --'.join(evaluated)} (no --train or --labels): the prompt offers only those (constrained "
                "decoding allows only those), a hint a real deployment does not get on a small file; pass --labels "
                "(an earlier run's labels.json, say) for the full space")
        corpus.notes.append(note)
        console.print(f"note: {note}", soft_wrap=True, markup=False)
    check_prompt(prompt_args, gen_args, corpus, fine_tuned=fine_tuned)
    run = RunDir(prompt_args.output_dir).create()
    config = to_dict(data_args, model_args, prompt_args, gen_args) | {
        "system": system, "data_sizes": corpus.sizes(), "data_fingerprints": corpus.fingerprints(),
        "notes": corpus.notes, "file_fingerprints": file_fingerprints(model_args, prompt_args)}
    check_resumable(run, config, corpus.label_space)
    if is_finished(run, corpus, evaluated):  # a rerun of a finished run: the model need not even load
        console.print(f"{run.path} is complete (every example predicted, metrics written): nothing to do")
        return 0
    run.write_config(config)
    run.write_labels(corpus.label_space)
    started = time.perf_counter()
    from llmcls.prompts import CHAT_OPTION, use_chat

    chat = CHAT_OPTION[prompt_args.chat]  # --chat on without a chat template fails before the weights load
    backend = load_backend(model_args, seed=prompt_args.seed, batch_size=gen_args.batch_size,
                           check_tokenizer=lambda tokenizer: use_chat(tokenizer, chat))
    load_s = time.perf_counter() - started
    trained = {"params_trained": 0} if not model_args.adapter else None  # prompting trains nothing
    run_splits(corpus, backend, run, prompt_args, gen_args, system=system, model=model_label(model_args),
               load_s=load_s, extra=trained)
    console.print(f"Run written to {run.path}")
    return 0


def model_label(args: ModelArguments) -> str:
    if not args.adapter:
        return args.model
    from llmcls.backends.loading import base_model_of

    return f"{args.model or base_model_of(args.adapter)} + {args.adapter}"


def check_options(model_args: ModelArguments, prompt_args: PromptArguments, gen_args: GenerationArguments) -> None:
    """Option values checked before anything is read or loaded."""
    if not model_args.model and not model_args.adapter:
        raise LlmclsError("--model is required (a hub id, a model folder or a .gguf file)")
    check_values((None, model_args, prompt_args, gen_args))
    if model_args.adapter:
        check_adapter(model_args.adapter)


def check_values(parsed: tuple) -> None:
    """The values and pairs of options refused without looking at any file (`llmcls benchmark` checks every
    system's this way before the first one runs)."""
    _, model_args, prompt_args, gen_args = parsed
    if prompt_args.k is None:  # fewshot's parser has no default for it
        raise LlmclsError(FEWSHOT_NEEDS_K)
    refuse_empty(model_args, prompt_args, gen_args)
    hf_only = [f"--{name}" for name in ("static_cache", "compile_layers") if getattr(model_args, name)]
    if model_args.backend != "hf" and hf_only:
        raise LlmclsError(f"{' and '.join(hf_only)} {'apply' if len(hf_only) > 1 else 'applies'} to the HF backend; "
                          "vLLM compiles the model and captures its CUDA graphs itself")
    gen_args.check()
    if prompt_args.k < 0:
        raise LlmclsError(f"--k must be >= 0, got {prompt_args.k}")
    if not prompt_args.k and prompt_args.selection != "knn":  # the default: cannot be told from a user's knn
        raise LlmclsError(f"--selection {prompt_args.selection} applies to few-shot prompts (--k > 0); a zero-shot "
                          "prompt shows no examples")
    from llmcls.prompts import parse_template_kwargs

    parse_template_kwargs(prompt_args.chat_template_kwargs)


def check_adapter(adapter: str) -> None:
    """A local --adapter must be a PEFT adapter folder; an `owner/name` that is no local path is left to the hub."""
    path = Path(adapter).expanduser()
    if path.is_dir():
        if not (path / "adapter_config.json").is_file():
            raise LlmclsError(f"--adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    elif path.exists() or adapter.startswith((".", "/", "~")) or adapter.count("/") != 1:
        raise LlmclsError(f"--adapter {adapter}: no such adapter folder")


def check_prompt(prompt_args: PromptArguments, gen_args: GenerationArguments, corpus: Corpus,
                 fine_tuned: bool = False) -> None:
    """What the template, the examples and the label space must allow, checked before the model loads (a GGUF
    conversion or a 7B model takes a while to load); a note when a template that lists no labels prompts a model
    that no `--adapter` or `llmcls sft` run has taught them."""
    from llmcls.parsing import ANSWER_SEPARATOR
    from llmcls.prompts import load_template, render_user_message, template_fields

    name = prompt_args.template_name
    template = load_template(name)
    examples: list[dict] = []
    if prompt_args.k > 0:
        if "examples" not in template_fields(template):
            raise LlmclsError(f"--k {prompt_args.k}: the prompt template {name} never uses the field 'examples', so "
                              "the run would be zero-shot; use a few-shot template (e.g. --prompt fewshot)")
        if len(corpus.get("train")) < prompt_args.k:
            raise LlmclsError(f"--k {prompt_args.k}: the training split has only {len(corpus.get('train'))} rows")
        examples = rows_of(corpus.get("train").select(range(prompt_args.k)))
    first = rows_of(next(corpus.get(s) for s in ("test", "validation") if corpus.get(s) is not None).select([0]))[0]
    render_user_message(template, title=first.get("title"), abstract=first["abstract"],
                        label_space=corpus.label_space, examples=examples)  # a failing expression shows here
    if not fine_tuned and not template_fields(template) & {"labels", "label_list"}:
        how = ("constrained decoding keeps its answers inside the label space" if gen_args.constrained else
               "score mode ranks the labels all the same" if gen_args.mode == "score" else
               "its free answers are read against labels it was never shown")
        console.print(f"note: the prompt template {name} lists no labels, and the model was not fine-tuned on them "
                      f"(no --adapter, no llmcls sft run): it is not told which categories exist ({how}); the "
                      "template is meant for models that llmcls sft trained with it", soft_wrap=True, markup=False)
    if gen_args.mode == "generate":  # answers are parsed: a label with the separator in it would be cut in two
        split = next((lab for lab in corpus.label_space.labels if ANSWER_SEPARATOR.strip() in lab), None)
        if split is not None:
            raise LlmclsError(f"label {split!r} contains {ANSWER_SEPARATOR.strip()!r}, which separates labels in a "
                              "generated answer; rename it (e.g. in a --labels file) or use --mode score")


def adopt_training_prompt(model_args: ModelArguments, prompt_args: PromptArguments, data_args: DataArguments,
                          gen_args: GenerationArguments) -> bool:
    """A zero-shot run of a model that `llmcls sft` trained (`--adapter RUN_DIR/adapter`, or `--model` RUN_DIR/merged
    or the RUN_DIR/adapter of full fine-tuning) takes that run's prompt template, layout, label space, label level
    and answer cap unless --prompt / --chat / --labels / --label_level / --max_labels say otherwise: the model is then
    prompted exactly as it was trained, over the labels it learnt, and answers as the run's own evaluation let it
    (greedy predictions equal the run's). Returns whether the model is such a run's."""
    source = model_args.adapter or model_args.model
    if not source or prompt_args.k > 0 or not Path(source).expanduser().is_dir():
        return False
    config = Path(source).expanduser().parent / "config.yaml"
    if not config.exists():
        return False
    trained = RunDir(config.parent).read_config()
    if trained.get("system") != "sft":
        return False
    taken = []
    if prompt_args.prompt is None and trained.get("prompt"):
        prompt_args.prompt = trained["prompt"]
        taken.append(f"--prompt {prompt_args.prompt}")
    if prompt_args.chat == "auto" and trained.get("chat") in ("on", "off"):
        prompt_args.chat = trained["chat"]
        taken.append(f"--chat {prompt_args.chat}")
    if prompt_args.chat_template_kwargs is None and trained.get("chat_template_kwargs"):
        prompt_args.chat_template_kwargs = trained["chat_template_kwargs"]
        taken.append(f"--chat_template_kwargs '{prompt_args.chat_template_kwargs}'")
    if data_args.labels is None and (config.parent / "labels.json").exists():
        data_args.labels = str(config.parent / "labels.json")
        taken.append(f"--labels {data_args.labels}")
    if data_args.label_level == "category" and trained.get("label_level", "category") != "category":
        data_args.label_level = trained["label_level"]
        taken.append(f"--label_level {data_args.label_level}")
    evaluated = (config.parent / "metrics.json").exists() and RunDir(config.parent).read_metrics()
    max_labels = (evaluated or {}).get("generation", {}).get("max_labels")
    if not gen_args.max_labels and max_labels:  # the run's own answer cap (from its training labels): same budget
        gen_args.max_labels = int(max_labels)
        taken.append(f"--max_labels {gen_args.max_labels}")
    if taken:
        console.print(f"{' '.join(taken)}: as the model was trained ({config})")
    if trained.get("load_in_4bit") and not model_args.load_in_4bit:
        console.print(f"note: {config.parent} trained on a 4-bit base model and evaluated it so; add --load_in_4bit "
                      "true to predict as it did")
    return True


def file_fingerprints(model_args: ModelArguments, prompt_args: PromptArguments) -> dict[str, str | None]:
    """What a resumed run must find unchanged at the same paths: the local model, adapter and prompt template (a
    folder whose weights were replaced, or a template edited in place, would mix two runs' answers)."""
    from llmcls.prompts import template_path

    template = template_path(prompt_args.template_name)
    return {"model": files_fingerprint(model_args.model), "adapter": files_fingerprint(model_args.adapter),
            "prompt": files_fingerprint(template)}


FILE_OPTIONS = ("train", "validation", "test", "labels")


def comparable_options(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the options that one value can be spelt several ways as that value: --chat_template_kwargs as
    the mapping it parses to (YAML or JSON, any spacing), the data files and --prompt as the absolute path of the file
    they name (a relative path, a bundled sample or template name), where there is one; otherwise as given."""
    from llmcls.data import resolve_path
    from llmcls.prompts import parse_template_kwargs, template_path

    def path(find):
        return lambda spec: str(Path(find(spec)).resolve())

    out = dict(config)
    readers = {"chat_template_kwargs": parse_template_kwargs, "prompt": path(template_path)}
    readers |= dict.fromkeys(FILE_OPTIONS, path(resolve_path))
    for name, read in readers.items():  # a YAML recipe may give chat_template_kwargs as a mapping; files as text
        if isinstance(out.get(name), str) or (name == "chat_template_kwargs" and isinstance(out.get(name), dict)):
            with contextlib.suppress(LlmclsError, OSError):
                out[name] = read(out[name])
    return out


def check_resumable(run: RunDir, config: dict[str, Any], space: LabelSpace) -> None:
    """Refuse to append to predictions made with other options (they would be mixed into one set of metrics), by
    another system (a finished linear or encoder run would be relabelled), over another label space (a --labels
    file edited in place), or by options no config.yaml records."""
    run.check_foreign("zeroshot")  # a config.yaml no run wrote
    if not any(run.path.glob("predictions*.jsonl")):
        return
    if not (run.path / "config.yaml").exists():
        raise LlmclsError(f"{run.path} holds predictions but no config.yaml, so how they were made is unknown; use a "
                          "new --output_dir")
    run.check_overwrite("zeroshot")  # a finished run of another command: said as such
    earlier = run.label_space()
    if earlier is not None and earlier.labels != space.labels:
        def listed(labels: list[str]) -> str:
            return ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")

        gone, new = sorted(set(earlier.labels) - set(space.labels)), sorted(set(space.labels) - set(earlier.labels))
        changes = ([f"without {listed(gone)}"] if gone else []) + ([f"with {listed(new)}"] if new else [])
        how = (f"{len(earlier)} labels, now {len(space)}: {', '.join(changes)}" if changes
               else "the same labels in another order")
        raise LlmclsError(f"{run.path} holds predictions over another label space ({how}); resume with the same "
                          "labels, or use a new --output_dir")
    # an option of another mode changes nothing (an earlier llmcls took one that is now refused: left out now, it
    # must not read as a change)
    idle = {name for name, applies, _ in MODE_OPTIONS if not applies(SimpleNamespace(**config))}
    idle |= {"selection"} if not config.get("k") else set()
    recorded = run.read_config()
    changed = sorted((name, recorded.get(name, NOT_RECORDED), config[name]) for name, _, _ in changed_options(
        comparable_options(recorded), comparable_options(config), ignore=RESUMABLE_CHANGES | idle))
    if changed:
        raise LlmclsError(f"{run.path} holds predictions made with other options "
                          f"({describe_changes(changed, absent='(not set)')}); resume with the same options, or use "
                          "a new --output_dir")


if __name__ == "__main__":
    raise SystemExit(main())
