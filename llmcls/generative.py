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
`--output_dir` skips the finished ids (an interrupt loses at most one batch); at the end the file is rewritten in
data order with the final predictions. metrics.json carries `"generation"`: mode, constrained, well_formed_rate,
unknown_label_rate, any_label_rate (null in score mode, where nothing is generated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from llmcls.backends import Backend, ModelArguments, load_backend
from llmcls.config import DataArguments, build_parser, number_list, parse, to_dict
from llmcls.corpus import Corpus, load_corpus
from llmcls.data import arrow_rows
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds, compute_metrics, tune_best_thresholds
from llmcls.progress import console
from llmcls.runs import PredictionWriter, RunDir, files_fingerprint, primary_split
from llmcls.task import (
    MODE_OPTIONS,
    GenerationArguments,
    PromptArguments,
    Task,
    generation_stats,
    length_batches,
    record_matrices,
    rows_of,
)

FEWSHOT_NEEDS_K = ("fewshot needs --k N, the examples per prompt (drawn from --train); without it the run would be "
                   "zero-shot (llmcls zeroshot)")

# config keys that may change between an interrupted run and its resumption without mixing incompatible predictions;
# the notes follow from the data and the options, compared themselves (a note a newer llmcls adds must not block
# resuming a run an older one began)
RESUMABLE_CHANGES = {"batch_size", "device", "gpu_memory_utilization", "output_dir", "notes"}


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
    adopt_training_prompt(model_args, prompt_args, data_args, gen_args)
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
    check_prompt(prompt_args, gen_args, corpus)
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


def run_splits(corpus: Corpus, backend: Backend, run: RunDir, prompt_args: PromptArguments,
               gen_args: GenerationArguments, *, system: str, model: str, load_s: float | None,
               extra: dict[str, Any] | None = None, train_s: float | None = None) -> dict[str, dict]:
    """Predict validation and test with `backend`, tune thresholds (score mode), write predictions, thresholds and
    metrics into `run` (resuming from its predictions files). Shared with `llmcls sft`, which evaluates its
    trained model here. Returns the metrics by split."""
    task = Task.build(corpus, backend, prompt_args, gen_args)
    if gen_args.mode == "generate" and gen_args.max_new_tokens and gen_args.max_new_tokens < task.answer_budget():
        console.print(f"note: --max_new_tokens {gen_args.max_new_tokens} is below the {task.answer_budget()} tokens "
                      f"of the longest answer allowed ({task.max_labels} labels): a longer answer is cut, and its "
                      "last labels are lost even where it still parses", soft_wrap=True, markup=False)
    evaluated = [s for s in ("validation", "test") if corpus.get(s) is not None]
    primary = primary_split(evaluated)
    outcomes = {split: predict_split(task, corpus.get(split), split, run.file("predictions", split, primary, "jsonl"))
                for split in evaluated}
    thresholds = decide_thresholds(task, outcomes.get("validation"), gen_args)
    if thresholds is not None and "validation" in outcomes:
        run.write_json("thresholds.json", thresholds.to_dict())
    record = {"system": system, "model": model, "load_s": load_s, "extra": extra or {}, "train_s": train_s}
    return {split: finish_split(run, task, outcomes[split], thresholds, split=split, primary=primary, **record)
            for split in evaluated}


def is_finished(run: RunDir, corpus: Corpus, evaluated: list[str]) -> bool:
    """Whether every evaluated split has all its ids predicted and its metrics written (a run killed before its
    metrics, or short of examples, is not)."""
    primary = primary_split(evaluated)
    for split in evaluated:
        if not run.file("metrics", split, primary, "json").exists():
            return False
        done = PredictionWriter(run.file("predictions", split, primary, "jsonl"), corpus.label_space).read()
        if set(done) != set(map(str, arrow_rows(corpus.get(split), ["id"]).column("id").to_pylist())):
            return False
    return True


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
    _, _, prompt_args, gen_args = parsed
    if prompt_args.k is None:  # fewshot's parser has no default for it
        raise LlmclsError(FEWSHOT_NEEDS_K)
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


def check_prompt(prompt_args: PromptArguments, gen_args: GenerationArguments, corpus: Corpus) -> None:
    """What the template, the examples and the label space must allow, checked before the model loads (a GGUF
    conversion or a 7B model takes a while to load)."""
    from llmcls.parsing import ANSWER_SEPARATOR
    from llmcls.prompts import load_template, render_user_message, template_fields

    name = prompt_args.prompt or ("fewshot" if prompt_args.k > 0 else "zeroshot")
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
    if gen_args.mode == "generate":  # answers are parsed: a label with the separator in it would be cut in two
        split = next((lab for lab in corpus.label_space.labels if ANSWER_SEPARATOR.strip() in lab), None)
        if split is not None:
            raise LlmclsError(f"label {split!r} contains {ANSWER_SEPARATOR.strip()!r}, which separates labels in a "
                              "generated answer; rename it (e.g. in a --labels file) or use --mode score")


def adopt_training_prompt(model_args: ModelArguments, prompt_args: PromptArguments, data_args: DataArguments,
                          gen_args: GenerationArguments) -> None:
    """A zero-shot run of a model that `llmcls sft` trained (`--adapter RUN_DIR/adapter`, or `--model` RUN_DIR/merged
    or the RUN_DIR/adapter of full fine-tuning) takes that run's prompt template, layout, label space, label level
    and answer cap unless --prompt / --chat / --labels / --label_level / --max_labels say otherwise: the model is then
    prompted exactly as it was trained, over the labels it learnt, and answers as the run's own evaluation let it
    (greedy predictions equal the run's)."""
    source = model_args.adapter or model_args.model
    if not source or prompt_args.k > 0 or not Path(source).expanduser().is_dir():
        return
    config = Path(source).expanduser().parent / "config.yaml"
    if not config.exists():
        return
    trained = RunDir(config.parent).read_config()
    if trained.get("system") != "sft":
        return
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


def file_fingerprints(model_args: ModelArguments, prompt_args: PromptArguments) -> dict[str, str | None]:
    """What a resumed run must find unchanged at the same paths: the local model, adapter and prompt template (a
    folder whose weights were replaced, or a template edited in place, would mix two runs' answers)."""
    from llmcls.prompts import template_path

    template = template_path(prompt_args.prompt or ("fewshot" if prompt_args.k > 0 else "zeroshot"))
    return {"model": files_fingerprint(model_args.model), "adapter": files_fingerprint(model_args.adapter),
            "prompt": files_fingerprint(template)}


def check_resumable(run: RunDir, config: dict[str, Any], space: LabelSpace) -> None:
    """Refuse to append to predictions made with other options (they would be mixed into one set of metrics), by
    another system (a finished linear or encoder run would be relabelled), over another label space (a --labels
    file edited in place), or by options no config.yaml records."""
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
    old = run.read_config()
    missing = object()
    # an option of another mode changes nothing (an earlier llmcls took one that is now refused: left out now, it
    # must not read as a change)
    idle = {name for name, applies, _ in MODE_OPTIONS if not applies(SimpleNamespace(**config))}
    idle |= {"selection"} if not config.get("k") else set()
    # an option the earlier run's version did not have yet, left unset now, changes nothing
    changed = sorted(key for key in config if key not in RESUMABLE_CHANGES | idle
                     and old.get(key, None if config[key] is None else missing) != config[key])
    if changed:
        details = ", ".join(f"{key}: {old.get(key, '(not set)')!r} -> {config[key]!r}" for key in changed[:3])
        raise LlmclsError(f"{run.path} holds predictions made with other options ({details}); resume with the same "
                          "options, or use a new --output_dir")


# ---------------------------------------------------------------------------------------------------------------------
# Running a split: batches in, records appended, resumable


@dataclass
class SplitOutcome:
    records: list[dict[str, Any]]  # in data order
    wall_s: float
    n_new: int


def predict_split(task: Task, ds, split: str, path) -> SplitOutcome:
    rows = rows_of(ds)
    ids = [str(r["id"]) for r in rows]  # unique: corpus.load_corpus checks
    writer = PredictionWriter(path, task.space)
    done = writer.read()
    pending = [i for i, example_id in enumerate(ids) if example_id not in done]
    if done:
        console.print(f"{split}: resuming, {len(rows) - len(pending)} of {len(rows)} examples already predicted")
    started = time.perf_counter()
    if pending:
        todo = [rows[i] for i in pending]
        prompts, lengths = task.prompts(todo)
        cut = sum(ids[i] in task.shortened for i in pending)
        if cut:
            console.print(f"note: {split}: {cut} abstracts cut to fit the model's {task.backend.max_positions} "
                          "positions (their ends dropped; `abstract_cut` in predictions.jsonl)")
        with _progress() as progress:
            bar = progress.add_task(f"{split} ({task.args.mode})", total=len(pending))
            for batch in length_batches(lengths, task.args.batch_size):
                records = task.predict([todo[j] for j in batch], [prompts[j] for j in batch])
                writer.append(records)
                done.update((str(record["id"]), record) for record in records)  # as read back: no second read
                progress.advance(bar, len(batch))
    wall = time.perf_counter() - started
    return SplitOutcome([done[example_id] for example_id in ids], wall, len(pending))


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.1f} ex/s" if task.speed else "- ex/s")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
                    TimeRemainingColumn(), console=console)


# ---------------------------------------------------------------------------------------------------------------------
# Thresholds, metrics and the final files


def decide_thresholds(task: Task, validation: SplitOutcome | None, args: GenerationArguments) -> Thresholds | None:
    """Score mode: thresholds (and min_labels) tuned on validation for micro-F1, else the top-N fallback."""
    if args.mode != "score":
        return None
    if validation is None:
        fallback = task.fallback_thresholds()
        console.print(f"note: score mode without --validation: no thresholds to tune, so every row gets its top "
                      f"{fallback.min_labels} label(s) (--min_labels); pass --validation to tune them")
        return fallback
    gold, _, scores = record_matrices(task.space, validation.records)
    return tune_best_thresholds(gold, scores, min_labels=number_list(args.min_labels, "min_labels", int, minimum=0),
                                per_label=args.per_label_thresholds, report=lambda tuned: console.print(
                                    f"  min_labels={tuned.min_labels}: validation micro-F1 "
                                    f"{tuned.validation_micro_f1:.4f}"))


def finish_split(run: RunDir, task: Task, outcome: SplitOutcome, thresholds: Thresholds | None, *, split: str,
                 primary: str, system: str, model: str, load_s: float | None, extra: dict[str, Any],
                 train_s: float | None) -> dict[str, Any]:
    gold, predicted, scores = record_matrices(task.space, outcome.records)
    records = outcome.records
    if thresholds is not None and scores is not None:
        predicted = apply_thresholds(scores, thresholds)
        records = [r | {"predicted": labels} for r, labels in zip(records, task.space.from_multi_hot(predicted),
                                                                  strict=True)]
    PredictionWriter(run.file("predictions", split, primary, "jsonl"), task.space).rewrite(records)
    metrics = compute_metrics(gold, predicted, scores)
    timing = _timing(run, task, outcome, split, primary, load_s)
    if train_s is not None:
        timing["train_s"] = round(train_s, 3)
    stats = generation_stats(task, records)
    run.write_metrics(metrics, system=system, model=model, split=split, primary=primary, timing=timing,
                      extra={"generation": stats, **extra})
    formed = f"  well-formed {stats['well_formed_rate']:.1%}" if stats["well_formed_rate"] is not None else ""
    rate = timing.get("examples_per_s")  # None for a split resumed whole: no speed measured in this run
    speed = f", {rate} ex/s" if rate is not None else ", resumed: speed not measured"
    console.print(f"{split}: micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}{formed}  "
                  f"({len(records)} examples{speed})")
    return metrics


def _timing(run: RunDir, task: Task, outcome: SplitOutcome, split: str, primary: str,
            load_s: float | None) -> dict:
    if outcome.n_new == 0:  # everything was resumed: keep the speed measured when the predictions were made
        path = run.file("metrics", split, primary, "json")
        if path.exists():
            import json

            return dict(json.loads(path.read_text(encoding="utf-8")).get("timing", {}))
    timed = outcome.n_new > 0  # nothing predicted in this process, no earlier record: no speed to report
    return {"wall_s": round(outcome.wall_s, 3) if timed else None,
            "examples_per_s": round(outcome.n_new / max(outcome.wall_s, 1e-9), 2) if timed else None,
            "examples_timed": outcome.n_new, "device": task.backend.device, "backend": task.backend.name,
            "batch_size": task.args.batch_size, "load_s": None if load_s is None else round(load_s, 3)}


if __name__ == "__main__":
    raise SystemExit(main())
