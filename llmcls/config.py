"""Typed arguments shared by the commands, parsed by one mechanism: `trl.TrlParser` over dataclasses.

`--config x.yaml` sets defaults, command-line flags override them, and unknown keys in either are errors.
Flags, dataclass fields and YAML keys share one snake_case name (`--text_field`; `--text-field` also works).
`--NAME none` unsets an llmcls option that defaults to None (one a config file sets, say).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from llmcls.errors import LlmclsError


@dataclass
class DataArguments:
    """Where the data comes from and how it is read, filtered and split."""

    train: str | None = field(default=None, metadata={"help": "Training file (.jsonl/.json/.csv/.parquet[.gz], AAPD "
                                                             "text_*/label_* pair) or a bundled sample name."})
    validation: str | None = field(default=None, metadata={"help": "Validation file or bundled sample name."})
    test: str | None = field(default=None, metadata={"help": "Test file or bundled sample name."})
    labels: str | None = field(default=None, metadata={
        "help": "Fix the label space: a labels.json or a text file with one label a line. Default: the labels of "
                "the training split (of all given splits when there is none)."})
    text_field: str | None = field(default=None, metadata={"help": "Column with the abstract (auto-detected)."})
    title_field: str | None = field(default=None, metadata={"help": "Column with the title (auto-detected)."})
    label_field: str | None = field(default=None, metadata={"help": "Column with the labels (auto-detected)."})
    id_field: str | None = field(default=None, metadata={"help": "Column with the id (default: id, else row number)."})
    label_sep: str | None = field(default=None, metadata={
        "help": "Separator of labels given as one string (default: whitespace, commas or semicolons)."})
    categories: str | None = field(default=None, metadata={
        "help": "Keep only these archives or categories, comma-separated (e.g. 'cs,stat.ML'); other labels are "
                "dropped and rows left without labels are removed."})
    since: str | None = field(default=None, metadata={"help": "Keep rows dated on or after YYYY-MM-DD (snapshot)."})
    until: str | None = field(default=None, metadata={"help": "Keep rows dated on or before YYYY-MM-DD (snapshot)."})
    date_field: str = field(default="update_date", metadata={
        "help": "Date that --since/--until filter on.", "choices": ["update_date", "first_version"]})
    min_label_count: int = field(default=1, metadata={
        "help": "Drop labels with fewer training examples than this."})
    top_labels: int | None = field(default=None, metadata={"help": "Keep only the K most frequent labels."})
    label_level: str = field(default="category", metadata={
        "help": "category (cs.IT) or archive (cs.IT -> cs, cond-mat.str-el -> cond-mat).",
        "choices": ["category", "archive"]})
    split_ratios: str | None = field(default=None, metadata={
        "help": "Split --train into train/validation/test by these ratios (e.g. 0.8,0.1,0.1), stratified so that "
                "every label with at least 3 examples is present in train."})
    # Not `seed`: that name belongs to transformers' TrainingArguments, which shares a parser with this class.
    split_seed: int = field(default=42, metadata={"help": "Seed of --split_ratios."})
    max_train_examples: int | None = field(default=None, metadata={
        "help": "Use only the first N training rows (after filtering), for quick runs."})
    max_eval_examples: int | None = field(default=None, metadata={
        "help": "Use only the first N validation and test rows (after filtering), for quick runs."})
    skip_bad_rows: bool = field(default=False, metadata={
        "help": "Skip malformed or incomplete rows and report their count instead of stopping at the first."})

    def __post_init__(self):
        self.since = check_date_option("since", self.since)
        self.until = check_date_option("until", self.until)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None (unset): the option's help says what happens then."""

    def _get_help_string(self, action):
        if isinstance(action, argparse._StoreFalseAction):  # `--no_X`, which transformers adds for a bool X
            return f"The same as --{action.dest} false."
        return action.help if action.default is None else super()._get_help_string(action)


class _ConfigOption(argparse.Action):
    """`--config FILE` in --help and the usage. TrlParser takes `--config FILE` out of the arguments before argparse
    parses them, so argparse meets only a second --config or an abbreviation of it."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("argument --config: give it once and spelled out, as --config FILE")


def build_parser(dataclass_types: list[type], prog: str, description: str,
                 positional: tuple[str, dict[str, Any]] | None = None):
    """A `trl.TrlParser` over `dataclass_types`, plus one positional argument when given."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=prog, description=description, formatter_class=_HelpFormatter)
    # dest SUPPRESS: never in the parsed namespace (which would add an object to what `parse` returns)
    parser.add_argument("--config", action=_ConfigOption, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                        metavar="FILE", help="A YAML file of defaults for these options (its keys are their names); "
                                             "the options given here override it.")
    for actions in (parser._actions, parser._optionals._group_actions):  # listed first, after --help
        actions.insert(1, actions.pop())
    unsettable = {f.name for dtype in dataclass_types for cls in dtype.__mro__
                  if cls.__module__.startswith("llmcls.") and is_dataclass(cls)
                  for f in fields(cls) if f.default is None and f.name in vars(cls).get("__annotations__", {})}
    for action in parser._actions:
        if action.dest in unsettable and action.type is not None and action.choices is None:
            action.type = _none_or(action.type)
    if positional is not None:
        parser.add_argument(positional[0], **positional[1])
    return parser


def _none_or(cast):
    """`cast`, except that `none` or `null` (any case) is None."""
    def convert(text):
        return None if str(text).lower() in ("none", "null") else cast(text)

    convert.__name__ = getattr(cast, "__name__", "value")  # argparse's "invalid int value: 'x'" names the type
    return convert


def parse(parser, argv: list[str] | None) -> tuple[Any, ...]:
    """Parse `argv` into the parser's dataclasses (plus a namespace holding the positional, if any).

    Every problem is a one-line `LlmclsError`: argparse's (a bad choice, a missing value; naming the config file when
    the bad value is the file's), an unknown option or config key (with the closest known name), and config-file
    problems (missing or invalid YAML, a value of the wrong type, an impossible date). `--config=FILE` works like
    `--config FILE`.
    """
    import re
    import warnings

    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i:i + 1] = ["--config", arg.split("=", 1)[1]]
            break
    if argv[-1:] == ["--config"]:
        raise LlmclsError("argument --config: expected one argument")
    config = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"), None)
    if config is not None and not config.strip():
        raise LlmclsError("--config is empty; give a YAML file (see configs/), or leave --config out")
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}

    def error(message: str):  # argparse would print its usage and exit
        named = re.match(r"argument ([^\s:]+):", message)
        in_file = config is not None and named is not None and not given & set(named.group(1).split("/"))
        raise LlmclsError(f"{config}: {message}" if in_file else message)

    parser.error = error
    try:
        with warnings.catch_warnings():
            # TRL's SFTConfig defaults transformers 5's deprecated `gradient_checkpointing` to True, so every sft
            # run that names neither it nor `activation_checkpointing` got the deprecation warning (the old name is
            # still honoured: `--gradient_checkpointing false` turns checkpointing off)
            warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
            *parsed, unknown_keys, unknown_args = parser.parse_args_and_config(
                args=argv, return_remaining_strings=True, separate_remaining_strings=True)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LlmclsError(f"{config}: invalid YAML{where} ({getattr(err, 'problem', None) or 'unreadable'})") from None
    except (OSError, ValueError) as err:  # unreadable --config, bad YAML mapping, a bad date
        raise LlmclsError(_config_problem(config, " ".join(str(err).split()))) from None
    if unknown_args:
        raise LlmclsError(_unknown_argument(parser, unknown_args))
    if unknown_keys:  # ["--key", "value", ...]
        key = unknown_keys[0][2:]
        raise LlmclsError(f"{config}: unknown field {key!r}{suggestion(key, option_names(parser))}")
    for options in parsed:  # torch would refuse a batch of 0 only once the data is read and the model loaded
        for name in POSITIVE_OPTIONS:
            value = getattr(options, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise LlmclsError(f"--{name} must be at least 1, got {value}")
        _check_choices(options, config if config is not None else "", given)
    return tuple(parsed)


def _check_choices(options: Any, config: str, given: set[str]) -> None:
    """The choices of llmcls's own options, for values a --config file set: argparse checks only the command line's
    (`chat: off` came as False, a KeyError deep in the run; `label_level: Archive` read as category)."""
    if not is_dataclass(options):
        return
    own = {name for cls in type(options).__mro__ if cls.__module__.startswith("llmcls.")
           for name in vars(cls).get("__annotations__", {})}
    for spec in fields(options):
        choices = spec.metadata.get("choices")
        value = getattr(options, spec.name, None)
        if spec.name not in own or not choices or value is None or value in choices:
            continue
        where = f"{config}: field {spec.name!r}" if f"--{spec.name}" not in given and config else f"--{spec.name}"
        hint = (" (YAML reads unquoted on/off/yes/no as true/false: quote the value)"
                if isinstance(value, bool) else "")
        raise LlmclsError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")


# sizes that must be positive, wherever a command has them (Trainer options included)
POSITIVE_OPTIONS = ("batch_size", "per_device_train_batch_size", "per_device_eval_batch_size",
                    "gradient_accumulation_steps")


def _config_problem(config: str | None, message: str) -> str:
    """YAML's message about an impossible date in a config file, said in the file's terms."""
    import re

    if config is not None and re.search(r"month must be|day is out of range|year .* out of range", message):
        return f"{config}: a date that does not exist ({message}); dates are YYYY-MM-DD"
    return message


def _unknown_argument(parser, words: list[str]) -> str:
    """What argparse could not place: the first unknown option with the closest known one, or a stray word."""
    word = next((w for w in words if w.startswith("-")), words[0])
    if not word.startswith("-"):
        return f"unexpected argument {word!r}"
    name = word.split("=", 1)[0]
    known = [option for action in parser._actions for option in action.option_strings]
    return f"unknown option {name}{suggestion(name, known)}"


def option_names(parser) -> list[str]:
    """The option names (dataclass fields) a parser takes, sorted."""
    return sorted({action.dest for action in parser._actions} - {"help", argparse.SUPPRESS})


def suggestion(word: str, choices: list[str]) -> str:
    """A hint for a mistyped `word`: ` (did you mean 'x'?)` with the closest of `choices`, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --train_sampling_strategy of train-encoder and sft, whose default both set to group_by_length (transformers' help
# says random)
SAMPLER_HELP = ("Sampler for training: 'group_by_length' (batches of similar lengths: less padding; each epoch's "
                "order from the seed and the epoch, so a resumed run trains on the same batches), 'random', "
                "'sequential', or 'batch_rebalance' (padded tokens balanced across devices and gradient-accumulation "
                "steps).")


# the Trainers' accelerator_config on a GPU (train-encoder's and sft's default): batches, pinned by the data loader,
# go to the GPU without blocking. A blocking copy waits for the previous step's kernels before the host can queue the
# next step's: the one wait per step that train-encoder's H200 profile found (session 15).
NON_BLOCKING_BATCHES = {"non_blocking": True}


def bf16_gpu() -> bool:
    """Whether a CUDA GPU with bfloat16 is here: the default of train-encoder's and sft's --bf16, and what
    predict-encoder needs to repeat a run's bf16 autocast."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def launched_processes() -> int:
    """How many processes `accelerate launch` / `torch.distributed.run` started for this command (1 without them)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def check_one_process(command: str) -> None:
    """A command that does not divide its work: under a launcher every process would redo it and write the same
    files."""
    if launched_processes() > 1:
        raise LlmclsError(f"{command} runs in one process, but {launched_processes()} were launched (run it "
                          "without accelerate launch / torchrun)")


def check_distributed(world_size: int) -> None:
    """Several processes were launched but the training arguments are not distributed (a CPU without --use_cpu
    true): each process would train on all the data and write the run directory."""
    if launched_processes() > 1 and world_size == 1:
        raise LlmclsError(f"{launched_processes()} processes were launched but training is not distributed over "
                          "them; on CPUs add --use_cpu true (gloo), on GPUs check that each process sees one")


def to_dict(*objs: Any) -> dict[str, Any]:
    """Merge dataclass instances into one plain dict (the resolved configuration of a run)."""
    from dataclasses import asdict, is_dataclass

    merged: dict[str, Any] = {}
    for obj in objs:
        merged.update(asdict(obj) if is_dataclass(obj) else vars(obj))
    return merged


# the old value of an option that the earlier run did not record (`changed_options`)
NOT_RECORDED = object()


def changed_options(old: dict[str, Any], new: dict[str, Any],
                    ignore: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """The options of `new` (in its order, less `ignore`) whose value differs from the one `old` recorded, as (name,
    old value, new value): what an interrupted run was made with against what would resume it. An option `old` lacks
    (an earlier llmcls did not have it yet) is no change while it is unset (None) now; otherwise its old value is
    `NOT_RECORDED`."""
    ignored = set(ignore)
    return [(name, old.get(name, NOT_RECORDED), value) for name, value in new.items()
            if name not in ignored and old.get(name, None if value is None else NOT_RECORDED) != value]


def describe_changes(changes: list[tuple[str, Any, Any]], absent: str = "(not recorded)", shown: int = 3) -> str:
    """`changed_options`' changes as `name: old -> new`, the first `shown` of them, then how many more."""
    details = ", ".join(f"{name}: {absent if before is NOT_RECORDED else repr(before)} -> {after!r}"
                        for name, before, after in changes[:shown])
    return details + (f", and {len(changes) - shown} more" if len(changes) > shown else "")


def refuse_empty(*options: Any) -> None:
    """A one-line error for the first string option given as "" (an unset shell variable): read as unset, it would
    run with the default instead (`--adapter ""` without the adapter), silently."""
    for obj in options:
        empty = next((f.name for f in fields(obj) if isinstance(getattr(obj, f.name), str)
                      and not getattr(obj, f.name).strip()), None)
        if empty is not None:
            raise LlmclsError(f"--{empty} is empty; leave it out for its default, or give a value")


def check_date_option(name: str, value) -> str | None:
    """`--since` / `--until` as an ISO date string (a YAML config gives a `datetime.date`), or a one-line error."""
    import datetime

    if value is None:
        return None
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    try:
        if isinstance(value, str) and len(value) == 10 and value[4] == value[7] == "-":
            return datetime.date.fromisoformat(value).isoformat()
    except ValueError:  # 2008-13-01
        pass
    raise LlmclsError(f"--{name}: expected a date YYYY-MM-DD, got {value!r}")


def number_list(text: str, option: str, cast=float, minimum: float | None = None) -> list:
    """A comma-separated option value as numbers (`--c 1,2,4`, `--min_labels 0,1`), or a one-line error."""
    kind = "integers" if cast is int else "numbers"
    try:
        values = [cast(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise LlmclsError(f"--{option} must be {kind} separated by commas, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values) or (minimum is not None and min(values) < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise LlmclsError(f"--{option} must be finite {kind}{bound} separated by commas, got {text!r}")
    return values


def command_line() -> str:
    """The command line that started this process, for run records."""
    return " ".join(sys.argv)
