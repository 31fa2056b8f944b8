"""`llmcls benchmark`: every system of a benchmark YAML on the same data, one run directory each, then the report.

    llmcls benchmark --config configs/benchmark_demo.yaml                     # the bundled sample, CPU-sized
    llmcls benchmark --config configs/benchmark_aapd.yaml --test aapd/test.jsonl --only linear,encoder-twoway
    llmcls benchmark --config configs/benchmark_demo.yaml --dry_run           # check it, print the command lines

The YAML (schema in `benchmark_plan.py`) names the data, shared by every system, and the systems: a command
(train-linear, train-encoder, zeroshot, fewshot, sft), optionally one of its recipes, and its options. Steps: check
every system's options with its command's own parser (a typo fails here, in seconds) -> write the row slices of the
data -> run each selected system in this process through its command's `main(argv)`, into OUTPUT_DIR/NAME ->
`llmcls compare OUTPUT_DIR --out OUTPUT_DIR/report`.

Resuming: OUTPUT_DIR/NAME/benchmark.json records the system's options (and their fingerprint), its state and the
digest of the llmcls code that ran it (of every attempt at it: a run resumed after the code changed holds results
of both). A system whose run is complete (metrics.json written, state complete, same fingerprint) is skipped, so
rerunning an interrupted benchmark continues where it stopped; one made by other llmcls code (wholly or in part) is
kept too, and the summary and the report say so (`--rerun outdated` runs those again, resumable;
`--rerun NAMES|all` runs the systems named again, each time). An interrupted
system reruns in its folder (the generative commands keep their finished predictions); a system whose options
changed reruns from an empty folder. A folder holding a finished run that no benchmark made (metrics.json, no
benchmark.json) is refused before anything runs: it is not the benchmark's to replace. A failing system is
reported in one line (traceback in NAME/error.log) and the others still run; the exit status is then 1. The
report covers the systems whose run is complete with the YAML's current options: one whose options changed but
that was not rerun (--only, --skip) is left out, with a note, rather than shown with its old results.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmcls import __version__
from llmcls.benchmark_plan import BenchmarkArguments, Plan, RowSlice, System, make_plan
from llmcls.config import DataArguments, build_parser, check_one_process, parse
from llmcls.environment import source_digest
from llmcls.errors import LlmclsError
from llmcls.progress import console
from llmcls.runs import RECORD, RunDir, atomic_write, read_record

STALE = {"changed": "was made with other options than the YAML's", "new": f"has no {RECORD} (not run by a benchmark)",
         "running": "holds an interrupted run", "failed": "holds a failed run"}  # run_state -> why not reported
FOREIGN = "move it elsewhere, or choose another --output_dir"  # what to do with a finished run no benchmark made


def make_parser():
    return build_parser([DataArguments, BenchmarkArguments], prog="llmcls benchmark",
                        description="Run the systems of a benchmark YAML (--config) on the same data, each into "
                                    "its own run directory (complete ones are skipped), then write the report.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    source = config_source(argv)
    data_args, args = parse(make_parser(), argv)
    check_one_process("benchmark")  # each system that trains in parallel is launched on its own
    plan = make_plan(data_args, args, source)
    for note in plan.notes:
        console.print(f"note: {note}")
    check_foreign_runs(plan)
    if args.dry_run:
        for system in plan.systems:
            try:
                print(system.command_line(plan.out_dir))
            except LlmclsError as err:  # a `package:` model that is not installed
                raise LlmclsError(f"{source}: system {system.name!r}: {err}") from None
        return 0
    for piece in plan.slices:
        write_slice(piece)
    outcomes = run_systems(plan)
    print_summary(outcomes)
    write_report(plan.out_dir, plan.every)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def config_source(argv: list[str]) -> str:
    """The benchmark YAML, for messages (TrlParser reads it)."""
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        return argv[argv.index("--config") + 1]
    return "the command line"


# ---------------------------------------------------------------------------------------------------------------------
# Data slices


def write_slice(piece: RowSlice) -> None:
    """Lines first..last of a JSON-lines file (bundled sample names allowed) into the benchmark's data folder."""
    from llmcls.data import resolve_path

    path = resolve_path(piece.source)
    if path.suffix != ".jsonl":
        raise LlmclsError(f"{piece.source}: row ranges (*_rows) need a JSON-lines (.jsonl) file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise LlmclsError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise LlmclsError(f"{path}:{line}: not UTF-8 text ({err.reason})") from None
    # rows are line numbers; lines end at "\n" only (str.splitlines also breaks at U+2028, U+0085, ..., which a JSON
    # string may hold raw); blank lines keep their number but hold no row
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    if piece.last > len(lines):
        raise LlmclsError(f"{path}: rows {piece.first}-{piece.last} asked for, the file has {len(lines)} lines")
    text = "".join(line.rstrip("\r") + "\n" for line in lines[piece.first - 1:piece.last] if line.strip())
    if not piece.path.exists() or piece.path.read_text(encoding="utf-8") != text:
        atomic_write(piece.path, text)
    console.print(f"data: {piece.path} = rows {piece.first}-{piece.last} of {path}", soft_wrap=True)


# ---------------------------------------------------------------------------------------------------------------------
# Running the systems


@dataclass
class Outcome:
    name: str
    status: str  # ran, skipped (complete), failed
    wall_s: float | None
    metrics: dict[str, Any] | None  # the metrics.json record


def run_systems(plan: Plan) -> list[Outcome]:
    started = time.perf_counter()
    outcomes = []
    for i, system in enumerate(plan.systems, start=1):
        tag = f"[{i}/{len(plan.systems)}] {system.name}"
        outcome = run_system(system, plan.out_dir, tag, plan.reruns)
        outcomes.append(outcome)
        console.print(f"{tag}: {describe(outcome)}; benchmark elapsed {time.perf_counter() - started:.0f}s")
    return outcomes


def check_foreign_runs(plan: Plan) -> None:
    """Refuse, before anything runs, to run a system into a folder holding a finished run that no benchmark made
    (metrics.json, no benchmark.json): the benchmark would replace it, and it has no record to tell whether that
    run is one to keep. Refusing is safer than keeping it aside as .NAME.previous, which a successful rerun
    removes."""
    for system in plan.systems:
        run_dir = plan.out_dir / system.name
        if read_record(run_dir) is None and (run_dir / "metrics.json").exists():
            raise LlmclsError(f"{run_dir} holds a finished run that no benchmark made (metrics.json, no {RECORD}), "
                              f"which system {system.name!r} would replace: {FOREIGN}")


def run_system(system: System, out_dir: Path, tag: str, reruns=lambda name, outdated: False) -> Outcome:
    """Run one system unless its run is complete (and `reruns(name, made by other code)` says no)."""
    run_dir = out_dir / system.name
    previous = out_dir / f".{system.name}.previous"  # a finished run with other options, until its rerun succeeds
    record = read_record(run_dir)
    state = run_state(run_dir, record, system.fingerprint())
    if state in ("changed", "new") and run_state(previous, read_record(previous), system.fingerprint()) == "complete":
        # the options went back to those of the finished run kept aside while a rerun with others was unfinished
        # (an interrupted rerun with these same options resumes instead: its folder's state is running or failed)
        dropped = " (the unfinished rerun with other options is dropped)" if state == "changed" else ""
        shutil.rmtree(run_dir, ignore_errors=True)
        previous.rename(run_dir)
        console.print(f"{tag}: the finished run with these options is back in {run_dir}{dropped}", soft_wrap=True,
                      markup=False)
        record = read_record(run_dir)
        state = run_state(run_dir, record, system.fingerprint())
    older = other_code(record) if state == "complete" else None
    if state == "complete" and not reruns(system.name, bool(older)):
        if older:
            console.print(f"{tag}: complete, made by {older}: kept (--rerun outdated, or --rerun {system.name}, runs "
                          "it again)", soft_wrap=True, markup=False)
        return Outcome(system.name, "skipped (complete" + (", other llmcls code)" if older else ")"),
                       record.get("wall_s"), read_metrics(run_dir))
    why = "--rerun" if state == "complete" else "options changed since its last run"
    finished = record is not None and record.get("status") == "complete" and (run_dir / "metrics.json").exists()
    if state in ("changed", "complete") and finished:
        console.print(f"{tag}: {why}: rerunning it in an empty folder (the finished earlier run waits in {previous} "
                      "until the rerun succeeds)", soft_wrap=True, markup=False)
        shutil.rmtree(previous, ignore_errors=True)
        run_dir.rename(previous)
    elif state == "changed":
        console.print(f"{tag}: options changed since its last run: rerunning it from an empty folder")
        shutil.rmtree(run_dir)
    resume: list[str] = []
    if state in ("running", "failed") and reruns(system.name, False):  # --rerun NAME / all: afresh, each time
        console.print(f"{tag}: --rerun: starting it afresh (the unfinished attempt's results are dropped)")
        shutil.rmtree(run_dir)
    elif state in ("running", "failed"):
        checkpoint = RunDir(run_dir).last_checkpoint() if system.command in RESUME_FLAGS else None
        how = (f"it continues from {Path(checkpoint).name}; --rerun {system.name} starts it afresh" if checkpoint
               else "the generative commands keep their finished predictions")
        console.print(f"{tag}: {'interrupted' if state == 'running' else 'failed'} last time: running it again "
                      f"({how})", soft_wrap=True, markup=False)
        resume = [RESUME_FLAGS[system.command]] if checkpoint else []
    outcome = attempt(system, run_dir, out_dir, tag, resume)
    if previous.exists() and outcome.status == "ran":
        shutil.rmtree(previous)
    elif previous.exists():  # bad input or a crash must not cost the finished run: it goes back in place
        trace, kept = run_dir / "error.log", ""
        if trace.exists():  # named as the rerun's: an error.log beside a finished run would read as that run's
            os.replace(trace, previous / RERUN_ERROR_LOG)
            kept = f"; the failed rerun's traceback is {run_dir / RERUN_ERROR_LOG}"
        shutil.rmtree(run_dir, ignore_errors=True)
        previous.rename(run_dir)
        console.print(f"{tag}: the finished earlier run is back in {run_dir} (with its earlier options{kept})",
                      soft_wrap=True, markup=False)
    return outcome


RERUN_ERROR_LOG = "rerun-error.log"  # in a finished run put back after a rerun with other options failed

# how a training command continues from the last checkpoint an interrupted attempt left (with the same options: its
# fingerprint is unchanged, and the command refuses a checkpoint trained otherwise)
RESUME_FLAGS = {"train-encoder": "--resume=true", "sft": "--resume_from_checkpoint=true"}


def attempt(system: System, run_dir: Path, out_dir: Path, tag: str, extra: list[str] | None = None) -> Outcome:
    """Run one system's command into run_dir (its argv plus `extra`): ran or failed (recorded in benchmark.json
    either way)."""
    try:
        argv = system.argv(out_dir) + (extra or [])
    except LlmclsError as err:  # a `package:` model that is not installed
        return failed(system, run_dir, tag, str(err), 0.0, None)
    console.rule(f"{tag} ({system.command})")
    console.print(" ".join([system.command_line(out_dir), *(extra or [])]), soft_wrap=True, markup=False)
    write_record(run_dir, system, "running")
    started = time.perf_counter()
    try:
        error = call_command(system.command, argv)
    except KeyboardInterrupt:
        console.print(f"{tag}: interrupted; rerun the same command to resume from this system")
        raise
    except Exception as err:  # noqa: BLE001 - one failing system must not stop the others
        error = f"{type(err).__name__}: {err}" if not isinstance(err, LlmclsError) else str(err)
        return failed(system, run_dir, tag, error, time.perf_counter() - started, traceback.format_exc())
    finally:
        release_memory()
    wall = time.perf_counter() - started
    if error is None and not (run_dir / "metrics.json").exists():
        error = "the command finished without writing metrics.json"
    if error is not None:
        return failed(system, run_dir, tag, error, wall, None)
    write_record(run_dir, system, "complete", wall_s=round(wall, 1))
    return Outcome(system.name, "ran", wall, read_metrics(run_dir))


def call_command(command: str, argv: list[str]) -> str | None:
    """Run one command's main(argv) in this process; an error message, or None when it succeeded."""

    from llmcls.commands import command_main

    try:
        code = command_main(command)(argv)
    except SystemExit as err:  # an argparse error or a script's own exit
        code = err.code
    return None if code in (0, None) else f"llmcls {command} exited with status {code}"


def failed(system: System, run_dir: Path, tag: str, error: str, wall: float, trace: str | None) -> Outcome:
    first_line = (error.strip().splitlines() or ["failed"])[0]
    log = ""
    if trace:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "error.log", trace)
        log = f" (traceback in {run_dir / 'error.log'})"
    write_record(run_dir, system, "failed", wall_s=round(wall, 1), error=first_line)
    console.print(f"{tag}: FAILED after {wall:.0f}s: {first_line}{log}", soft_wrap=True, markup=False)
    return Outcome(system.name, "failed", wall, None)


def release_memory() -> None:
    """Systems run one after another in this process: free the last one's model before the next loads."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------------
# benchmark.json: what a run directory was made with, and how far it got


def run_state(run_dir: Path, record: dict[str, Any] | None, fingerprint: str) -> str:
    """new (no record), changed (other options), running (interrupted), failed, or complete."""
    if record is None:
        return "new"
    if record.get("fingerprint") != fingerprint:
        return "changed"
    if record.get("status") == "complete" and (run_dir / "metrics.json").exists():
        return "complete"
    return "failed" if record.get("status") == "failed" else "running"


def write_record(run_dir: Path, system: System, status: str, **extra: Any) -> None:
    record = {"name": system.name, "command": system.command, "status": status,
              "fingerprint": system.fingerprint(), "recipe": str(system.recipe) if system.recipe else None,
              "options": system.options, "llmcls": __version__, "llmcls_source": source_digest(),
              "llmcls_sources": sources_of_attempts(run_dir, read_record(run_dir), system), **extra}
    atomic_write(run_dir / RECORD, json.dumps(record, indent=2, default=str) + "\n")


def sources_of_attempts(run_dir: Path, earlier: dict[str, Any] | None, system: System) -> list[str]:
    """The llmcls sources of every attempt at this run so far, this one last: an interrupted or failed attempt with
    the same options may leave results in the folder (generative predictions, training checkpoints) for this one
    to resume, so a run resumed after the code changed is made by more than one llmcls. One that left none (it
    failed early, or its command resumes nothing) counts no more."""
    current = source_digest()
    if (earlier is None or earlier.get("status") == "complete" or earlier.get("fingerprint") != system.fingerprint()
            or not resumable_results(run_dir)):
        return [current]
    sources = earlier.get("llmcls_sources") or [earlier.get("llmcls_source") or "unrecorded"]
    return [*sources, current] if current not in sources else list(sources)


def resumable_results(run_dir: Path) -> bool:
    """Whether a run folder holds what a rerun of its command continues from: generative predictions (zeroshot,
    fewshot, sft's evaluation) or a Trainer checkpoint."""
    return any(run_dir.glob("predictions*.jsonl")) or any(run_dir.glob("checkpoint-*"))


def other_code(record: dict[str, Any]) -> str | None:
    """How the llmcls that made a run differs from this one ("llmcls 0.1.0 (source 1a2b3c4d5e6f)"), None when it is
    this one. A record written before benchmark.json kept the digest counts as other code: nothing says otherwise;
    so does a run interrupted and resumed by different code (it holds results of both)."""
    sources = record.get("llmcls_sources") or [record.get("llmcls_source") or "unrecorded"]
    if sources == [source_digest()]:
        return None
    if len(sources) > 1:
        return (f"more than one llmcls code (interrupted and resumed after a change: sources {', '.join(sources)}; "
                f"this one {source_digest()})")
    made = f"llmcls {record.get('llmcls', '?')}, source {sources[0]}"
    return f"other llmcls code ({made}; this one {__version__}, source {source_digest()})"


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json record (`RunDir.read_metrics`), None when it has none or it cannot be read."""
    try:
        return RunDir(run_dir).read_metrics()
    except (LlmclsError, OSError):
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Summary and report


def describe(outcome: Outcome) -> str:
    text = outcome.status if outcome.status != "ran" else f"done in {outcome.wall_s:.0f}s"
    if outcome.metrics:
        m = outcome.metrics.get("metrics", {})
        text += f", {outcome.metrics.get('split')} micro-F1 {m.get('micro_f1', float('nan')):.4f}"
    return text


def print_summary(outcomes: list[Outcome]) -> None:
    from rich.table import Table

    table = Table(title="benchmark", title_justify="left")
    for column in ("system", "status", "time (s)", "micro-F1"):
        table.add_column(column, justify="right" if column in ("time (s)", "micro-F1") else "left")
    for o in outcomes:
        micro = (o.metrics or {}).get("metrics", {}).get("micro_f1")
        table.add_row(o.name, o.status, "-" if o.wall_s is None else f"{o.wall_s:.0f}",
                      "-" if micro is None else f"{micro:.4f}")
    console.print(table)


def write_report(out_dir: Path, systems: list[System]) -> None:
    """`llmcls compare RUN... --out OUTPUT_DIR/report` over the YAML's systems whose run is complete and current
    (benchmark.json: state complete, fingerprint of the YAML's options): the table on stdout, the files beside.
    Other run directories left in OUTPUT_DIR (a system since removed from the YAML) stay out, and so does the run
    of a system whose options changed but that was not rerun (--only, --skip, a failure): a note says so."""
    from llmcls import report

    finished, notes = [], []
    for system in systems:
        run_dir = out_dir / system.name
        record = read_record(run_dir)
        state = run_state(run_dir, record, system.fingerprint())
        if state == "complete":
            finished.append(str(run_dir))
            older = other_code(record)
            if older:
                notes.append(f"{system.name}: made by {older}; `llmcls benchmark ... --rerun outdated` runs it "
                             "again")
        elif (run_dir / "metrics.json").exists() or state in ("failed", "running"):
            todo = f"{FOREIGN}, then run the system" if state == "new" else "run the system again"
            notes.append(f"{system.name}: left out of the report: {run_dir} {STALE[state]} ({todo})")
    if not finished:
        for note in notes:
            console.print(f"note: {note}", soft_wrap=True, markup=False)
        console.print("No finished run: no report.")
        return
    report.main([*finished, "--out", str(out_dir / "report")], notes=notes, owns_prefix=True)  # report* reserved


if __name__ == "__main__":
    from llmcls.cli import main as cli_main

    raise SystemExit(cli_main(["benchmark", *sys.argv[1:]]))
