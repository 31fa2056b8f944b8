"""What a generative run asks the model for each example, and how its answers become prediction records.

The options that say it (`PromptArguments`, `GenerationArguments`: zeroshot / fewshot and sft share them), `Task`
(prompts rendered from the template and fitted to the model's positions, few-shot examples, the backend's
generate or score, answers parsed into records) and `quick_metrics`, the in-memory check `llmcls sft
--generate_at_eval` runs at each evaluation. Files, resuming and the final metrics are `generative_run.py`'s.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from llmcls.backends import Backend, LabelConstraint
from llmcls.config import number_list
from llmcls.corpus import Corpus
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, apply_thresholds, compute_metrics
from llmcls.runs import predictions_from_records

# answers hold at most this many labels when no train/validation split shows the real maximum (AAPD's is 7)
DEFAULT_MAX_LABELS = 8


@dataclass
class PromptArguments:
    output_dir: str = field(default="runs/generative", metadata={"help": "Run directory to write (and resume)."})
    k: int = field(default=0, metadata={"help": "Few-shot examples per prompt, from --train (0: zero-shot)."})
    selection: str = field(default="knn", metadata={
        "help": "How examples are chosen: knn (TF-IDF nearest), random, balanced (label coverage).",
        "choices": ["knn", "random", "balanced"]})
    prompt: str | None = field(default=None, metadata={
        "help": "Prompt template: a bundled name or a .jinja file (default: zeroshot, or fewshot when --k > 0)."})
    chat: str = field(default="auto", metadata={
        "help": "auto: the tokenizer's chat template when it has one; on; off (plain 'Categories:' layout).",
        "choices": ["auto", "on", "off"]})
    chat_template_kwargs: str | None = field(default=None, metadata={
        "help": "JSON object passed to the chat template, e.g. '{\"enable_thinking\": false}' for Qwen3-style "
                "thinking models (an SFT run's own is taken with its adapter)."})
    seed: int = field(default=42, metadata={"help": "Seed of few-shot selection and of sampling."})

    @property
    def template_name(self) -> str:
        """The prompt template: --prompt, else zeroshot, or fewshot when --k > 0."""
        return self.prompt or ("fewshot" if self.k > 0 else "zeroshot")


@dataclass
class GenerationArguments:
    mode: str = field(default="generate", metadata={
        "help": "generate: the model writes its answer; score: every label scored by its log-probability.",
        "choices": ["generate", "score"]})
    constrained: bool = field(default=False, metadata={
        "help": "Generate only label codes, separators and the end: every output parses."})
    stop_off_format: bool = field(default=True, metadata={
        "help": "Constrained mode: end the answer when the model's own first choice leaves the answer format after "
                "a label (e.g. repeating one) instead of forcing further labels (HF backend)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per batch (and per resumable write)."})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "Token budget of an answer (default: sized from the longest formatted label set)."})
    max_labels: int | None = field(default=None, metadata={
        "help": "Most labels in an answer: sizes the token budget, caps constrained answers (default: the largest "
                "label set in --train/--validation, else 8)."})
    temperature: float = field(default=0.0, metadata={"help": "0: greedy decoding; > 0: sampling."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (with --temperature > 0)."})
    min_labels: str = field(default="1,2", metadata={
        "help": "Score mode: always predict at least the top N labels; a list is searched on --validation."})
    per_label_thresholds: bool = field(default=False, metadata={
        "help": "Score mode: one threshold per label instead of one global (needs a large validation split)."})
    score_ends: str = field(default="prefixes", metadata={
        "help": "Score mode: add the probability that the label ends there to labels that are a prefix of another "
                "(prefixes), to all labels (all), or to none.", "choices": ["prefixes", "all", "none"]})

    def check(self) -> None:
        """Values and pairs of options that cannot work, refused before anything is read or loaded (zeroshot,
        fewshot and the evaluation of sft share them)."""
        for option in ("max_new_tokens", "max_labels"):
            if getattr(self, option) is not None and getattr(self, option) < 1:
                raise LlmclsError(f"--{option} must be at least 1 (leave it out for the default), got "
                                  f"{getattr(self, option)}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise LlmclsError("--temperature must be >= 0 and --top_p in (0, 1]")
        number_list(self.min_labels, "min_labels", int, minimum=0)
        for option, applies, where in MODE_OPTIONS:  # a value set for another mode would be ignored without a word
            if getattr(self, option) != GENERATION_DEFAULTS[option] and not applies(self):
                raise LlmclsError(f"--{option} applies to {where} only; it would change nothing here")


# options of one mode only: (name, whether it applies to these arguments, where it applies)
MODE_OPTIONS = (
    ("constrained", lambda a: a.mode == "generate", "--mode generate (score mode generates nothing)"),
    ("per_label_thresholds", lambda a: a.mode == "score",
     "--mode score (thresholds over the labels' scores; generated answers are parsed, not thresholded)"),
    ("min_labels", lambda a: a.mode == "score", "--mode score (generated answers are parsed, not thresholded)"),
    ("score_ends", lambda a: a.mode == "score", "--mode score"),
    ("stop_off_format", lambda a: a.mode == "generate" and a.constrained, "--constrained true"),
    ("temperature", lambda a: a.mode == "generate", "--mode generate (score mode samples nothing)"),
    ("top_p", lambda a: a.mode == "generate" and a.temperature > 0, "sampling (--temperature > 0)"),
)
GENERATION_DEFAULTS = {f.name: f.default for f in fields(GenerationArguments)}


# ---------------------------------------------------------------------------------------------------------------------
# The task


@dataclass
class Task:
    space: LabelSpace
    backend: Backend
    template: Any
    args: GenerationArguments
    chat: bool | None
    pool: list[dict] | None  # few-shot examples: {"title", "abstract", "labels"}
    prompt_args: PromptArguments
    max_new_tokens: int
    max_labels: int
    answer_prefix: str = ""
    shortened: set[str] = field(default_factory=set)  # ids of rows whose abstract was cut to fit the model
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # --chat_template_kwargs, parsed once

    @classmethod
    def build(cls, corpus: Corpus, backend: Backend, prompt_args: PromptArguments,
              gen_args: GenerationArguments) -> Task:
        from llmcls.prompts import CHAT_OPTION, answer_prefix, load_template, parse_template_kwargs

        space = corpus.label_space
        template = load_template(prompt_args.template_name)
        pool = None
        if prompt_args.k > 0:
            train = corpus.get("train")
            pool = [{"title": t, "abstract": a, "labels": ls}
                    for t, a, ls in zip(train["title"], train["abstract"], train["labels"], strict=True)]
        # the largest label set of train/validation caps an answer; the test split's gold labels are never looked at
        seen = [len(labels) for s in ("train", "validation") if corpus.get(s) is not None
                for labels in corpus.get(s)["labels"]]
        max_labels = gen_args.max_labels or (max(seen) if seen else DEFAULT_MAX_LABELS)
        chat = CHAT_OPTION[prompt_args.chat]
        task = cls(space, backend, template, gen_args, chat, pool, prompt_args, 0, max_labels)
        task.template_kwargs = parse_template_kwargs(prompt_args.chat_template_kwargs)
        task.answer_prefix = answer_prefix(backend.tokenizer, chat=chat, template_kwargs=task.template_kwargs)
        task.max_new_tokens = gen_args.max_new_tokens or task.answer_budget()
        if gen_args.constrained and gen_args.max_new_tokens:
            shortest = min(len(backend.tokenizer.encode(task.answer_prefix + lab, add_special_tokens=False))
                           for lab in space.labels)
            if gen_args.max_new_tokens < shortest:  # every answer would come out empty
                raise LlmclsError(f"--max_new_tokens {gen_args.max_new_tokens}: too few for any label in constrained "
                                  f"mode (the shortest takes {shortest} tokens)")
        return task

    def answer_budget(self) -> int:
        """Tokens of the longest formatted answer (the `max_labels` longest labels), plus room for the end token;
        free generation gets 25% more for the lenient spellings the parser still reads."""
        from llmcls.parsing import format_labels

        longest = sorted(self.space.labels, key=lambda lab: -len(self.backend.tokenizer.encode(
            lab, add_special_tokens=False)))[: self.max_labels]
        tokens = len(self.backend.tokenizer.encode(self.answer_prefix + format_labels(longest),
                                                   add_special_tokens=False))
        return tokens + 1 if self.args.constrained else math.ceil(1.25 * tokens) + 2

    def render_one(self, title: str | None, abstract: str, examples: list[dict]) -> str:
        from llmcls.prompts import build_prompt, render_user_message

        message = render_user_message(self.template, title=title, abstract=abstract, label_space=self.space,
                                      examples=examples)
        return build_prompt(self.backend.tokenizer, message, chat=self.chat, template_kwargs=self.template_kwargs)

    def batches(self, rows: list[dict]) -> Iterator[tuple[list[dict], list[str]]]:
        """`rows` in batches of `--batch_size` with their prompts, each fitted to the model's positions, longest
        prompts first (similar lengths in tokens share a batch: counted in characters instead, AAPD's batches hold
        6-25% more padded tokens, `benchmarks/bench_prompt_batching.py`). A row's few-shot examples depend on that
        row alone (and the seed), so a resumed run that prompts only the rows left shows each one the examples an
        uninterrupted run would have."""
        examples: list[list[dict]] = [[] for _ in rows]
        if self.pool:
            from llmcls.fewshot import select_examples

            picks = select_examples([_text(e) for e in self.pool], [e["labels"] for e in self.pool],
                                    [_text(r) for r in rows], k=self.prompt_args.k,
                                    selection=self.prompt_args.selection, seed=self.prompt_args.seed,
                                    train_keys=[e["abstract"] for e in self.pool],
                                    query_keys=[r["abstract"] for r in rows])
            examples = [[self.pool[i] for i in pick] for pick in picks]
        prompts = [self.render_one(row.get("title"), row["abstract"], shown) for row, shown in zip(rows, examples,
                                                                                                   strict=True)]
        lengths = self.backend.count_tokens(prompts)
        limit = getattr(self.backend, "max_positions", None)
        room = None if not limit else limit - self.max_new_tokens
        for j, length in enumerate(lengths):
            if room is not None and length > room:
                prompts[j] = self._fit(rows[j], examples[j], room, limit)
                lengths[j] = self.backend.count_tokens([prompts[j]])[0]
        for batch in length_batches(lengths, self.args.batch_size):
            yield [rows[j] for j in batch], [prompts[j] for j in batch]

    def _fit(self, row: dict, examples: list[dict], room: int, limit: int) -> str:
        """The prompt of `row` with its abstract cut to fit the model's positions with the answer's budget."""
        from llmcls.prompts import fit_abstract

        def render(abstract: str) -> str:
            return self.render_one(row.get("title"), abstract, examples)

        kept = fit_abstract(row["abstract"], lambda text: self.backend.count_tokens([render(text)])[0], room,
                            limit=f"row {row['id']}", answer=f"up to {self.max_new_tokens}, more than the model's "
                            f"{limit} positions", advice="use a shorter prompt (--prompt compact leaves out the label "
                            "list), fewer labels (--top_labels) or fewer examples (--k)")
        self.shortened.add(str(row["id"]))
        return render(kept)

    def predict_batches(self, batches: Iterable[tuple[list[dict], list[str]]]) -> Iterator[list[dict[str, Any]]]:
        """The prediction records of each (rows, prompts) batch in turn (`batches` may be `Task.batches`, read as it
        goes; score mode: provisional `predicted`, final ones need thresholds). In score mode the backend takes the
        next batch before this one's records are handed back (`Backend.score_batches`): the GPU computes it while
        the caller writes them."""
        if self.args.mode == "score":
            waiting: deque[list[dict]] = deque()  # the rows of the batches handed to the backend, in order

            def prompts_of():
                for rows, prompts in batches:
                    waiting.append(rows)
                    yield prompts

            every = self.backend.score_batches(prompts_of(), [self.answer_prefix + lab for lab in self.space.labels],
                                               separator=self._separator(), ends=self.args.score_ends)
            for scores in every:
                rows = waiting.popleft()
                predicted = self.space.from_multi_hot(apply_thresholds(scores, self.fallback_thresholds()))
                # scores as an array row in label-space order (PredictionWriter writes it as {label: score})
                yield [record | {"predicted": pred, "scores": row} for record, pred, row in
                       zip(self._records(rows), predicted, np.asarray(scores, dtype=np.float64), strict=True)]
            return
        for rows, prompts in batches:
            yield self._generated(rows, prompts)

    def _records(self, rows: list[dict]) -> list[dict[str, Any]]:
        """The fields every prediction record starts with."""
        return [{"id": r["id"], "labels": list(r["labels"])} | ({"abstract_cut": True} if str(r["id"]) in
                self.shortened else {}) for r in rows]

    def _generated(self, rows: list[dict], prompts: list[str]) -> list[dict[str, Any]]:
        """Prediction records of one batch in a generation mode: the answers, parsed."""
        from llmcls.parsing import answer_stop_strings, parse_labels

        constraint = (LabelConstraint(self.space.labels, self._separator(), self.max_labels, self.answer_prefix,
                                      self.args.stop_off_format) if self.args.constrained else None)
        texts = self.backend.generate(prompts, max_new_tokens=self.max_new_tokens, constraint=constraint,
                                      stop=answer_stop_strings(), temperature=self.args.temperature,
                                      top_p=self.args.top_p)
        parsed = [parse_labels(text, self.space) for text in texts]
        return [record | {"predicted": p.labels, "raw": text, "well_formed": p.well_formed, "unknown": p.unknown}
                | ({"ambiguous": p.ambiguous} if p.ambiguous else {})  # names two labels share: read as neither
                for record, text, p in zip(self._records(rows), texts, parsed, strict=True)]

    def fallback_thresholds(self) -> Thresholds:
        """Without validation scores: the top `--min_labels` labels (its first value, at least 1)."""
        first = max(1, number_list(self.args.min_labels, "min_labels", int, minimum=0)[0])
        return Thresholds(values=np.full(len(self.space), np.inf), min_labels=first)

    @staticmethod
    def _separator() -> str:
        from llmcls.parsing import ANSWER_SEPARATOR

        return ANSWER_SEPARATOR


def _text(row: dict) -> str:
    return " ".join(part for part in (row.get("title"), row["abstract"]) if part)


def rows_of(ds) -> list[dict]:
    columns = ds.to_dict()  # column by column through Arrow: ds[column] goes row by row
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Positions in batches of `batch_size`, longest prompts first: similar lengths share a batch."""
    order = sorted(range(len(lengths)), key=lambda j: -lengths[j])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def quick_metrics(task: Task, ds, limit: int) -> dict[str, float]:
    """Metrics of the first `limit` rows of `ds`, predicted in memory (no files, no progress bar, no thresholds
    tuned: score mode keeps the top `--min_labels` labels): the check `llmcls sft --generate_at_eval` runs at every
    evaluation. Keys: micro_f1, macro_f1, samples_f1, and well_formed_rate (generation) or map and p_at_1 (score)."""
    rows = rows_of(ds.select(range(min(limit, len(ds)))))
    made = {str(record["id"]): record for records in task.predict_batches(task.batches(rows)) for record in records}
    records = [made[str(row["id"])] for row in rows]
    gold, predicted, scores = record_matrices(task.space, records)
    metrics = compute_metrics(gold, predicted, scores)
    keys = ("micro_f1", "macro_f1", "samples_f1") + (("map", "p_at_1") if scores is not None else ())
    result = {key: float(metrics[key]) for key in keys}
    if scores is None:
        result["well_formed_rate"] = float(generation_stats(task, records)["well_formed_rate"])
    return result


def record_matrices(space: LabelSpace, records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gold and predicted multi-hot matrices of records, and their scores (score mode: label-space rows, from
    Task.predict_batches or PredictionWriter) or None: `runs.predictions_from_records`'s, as a tuple."""
    predictions = predictions_from_records(records, space)
    return predictions.gold, predictions.predicted, predictions.scores


def generation_stats(task: Task, records: list[dict]) -> dict[str, Any]:
    """The "generation" entry of metrics.json: how the answers were made (settings resolved at run time
    included) and how well the model kept to the answer format."""
    stats: dict[str, Any] = {"mode": task.args.mode, "constrained": task.args.constrained, "k": task.prompt_args.k,
                             "selection": task.prompt_args.selection if task.prompt_args.k else None,
                             "template": str(task.template.filename), "answer_prefix": task.answer_prefix,
                             "max_new_tokens": task.max_new_tokens, "max_labels": task.max_labels,
                             "abstracts_cut": sum(bool(r.get("abstract_cut")) for r in records)}
    if task.args.mode == "score":
        return stats | {"well_formed_rate": None, "unknown_label_rate": None, "ambiguous_label_rate": None,
                        "any_label_rate": None}
    n = max(len(records), 1)
    known = sum(len(r["predicted"]) for r in records)
    unknown = sum(len(r.get("unknown", [])) for r in records)
    ambiguous = sum(len(r.get("ambiguous", [])) for r in records)
    written = max(known + unknown + ambiguous, 1)
    return stats | {"well_formed_rate": sum(bool(r.get("well_formed")) for r in records) / n,
                    "unknown_label_rate": unknown / written,  # shares of the labels written
                    "ambiguous_label_rate": ambiguous / written,
                    "any_label_rate": sum(bool(r["predicted"]) for r in records) / n}
