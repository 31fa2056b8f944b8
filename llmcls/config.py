"""Typed arguments shared by the commands, parsed by one mechanism: `trl.TrlParser` over dataclasses.

`--config x.yaml` sets defaults, command-line flags override them, and unknown keys in either are errors.
Flags, dataclass fields and YAML keys share one snake_case name (`--text_field`; `--text-field` also works).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
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


def build_parser(dataclass_types: list[type], prog: str, description: str,
                 positional: tuple[str, dict[str, Any]] | None = None):
    """A `trl.TrlParser` over `dataclass_types`, plus one positional argument when given."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types, prog=prog, description=description)
    if positional is not None:
        parser.add_argument(positional[0], **positional[1])
    return parser


def parse(parser, argv: list[str] | None) -> tuple[Any, ...]:
    """Parse `argv` into the parser's dataclasses (plus a namespace holding the positional, if any).

    Config-file problems (missing or invalid YAML, unknown keys, a value of the wrong type, an impossible date)
    become one-line `LlmclsError`s naming the file; `--config=FILE` works like `--config FILE`.
    """
    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[i:i + 1] = ["--config", arg.split("=", 1)[1]]
            break
    config = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"), None)
    if config is not None:
        def error(message: str):  # a bad value in the file: argparse would print its usage and exit
            raise LlmclsError(f"{config}: {message}")

        parser.error = error
    try:
        return parser.parse_args_and_config(args=argv)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LlmclsError(f"{config}: invalid YAML{where} ({getattr(err, 'problem', None) or 'unreadable'})") from None
    except (OSError, ValueError) as err:  # unreadable --config, unknown YAML keys, bad YAML mapping, a bad date
        raise LlmclsError(_config_problem(parser, config, " ".join(str(err).split()))) from None


def _config_problem(parser, config: str | None, message: str) -> str:
    """TRL's and YAML's messages about a config file, said in the file's terms."""
    import re

    unknown = re.match(r"Unknown arguments from config file: \['--([^']+)'", message)
    if unknown and config is not None:
        return f"{config}: unknown field {unknown.group(1)!r}{suggestion(unknown.group(1), option_names(parser))}"
    if config is not None and re.search(r"month must be|day is out of range|year .* out of range", message):
        return f"{config}: a date that does not exist ({message}); dates are YYYY-MM-DD"
    return message


def option_names(parser) -> list[str]:
    """The option names (dataclass fields) a parser takes, sorted."""
    return sorted({action.dest for action in parser._actions} - {"help"})


def suggestion(word: str, choices: list[str]) -> str:
    """A hint for a mistyped `word`: ` (did you mean 'x'?)` with the closest of `choices`, or nothing."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def to_dict(*objs: Any) -> dict[str, Any]:
    """Merge dataclass instances into one plain dict (the resolved configuration of a run)."""
    from dataclasses import asdict, is_dataclass

    merged: dict[str, Any] = {}
    for obj in objs:
        merged.update(asdict(obj) if is_dataclass(obj) else vars(obj))
    return merged


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
    if not values or (minimum is not None and min(values) < minimum):
        raise LlmclsError(f"--{option} must be {kind} >= {minimum:g} separated by commas, got {text!r}")
    return values


def command_line() -> str:
    """The command line that started this process, for run records."""
    return " ".join(sys.argv)
