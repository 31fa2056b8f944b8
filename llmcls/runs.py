"""Run directories: the one on-disk record that every predicting command writes and `llmcls compare` reads.

```
RUN_DIR/
  config.yaml                  the resolved configuration (and the command line)
  labels.json                  the label space (its order is the column order of every matrix)
  predictions.jsonl            one line per example of the reported split (test when given, else validation)
  thresholds.json              the decision thresholds applied to the scores (runs with scores; Thresholds.to_dict)
  metrics.json                 {"schema": 1, "system", "model", "split", "metrics": {...}, "timing": {...},
                                "environment": {"llmcls", "llmcls_source", "python", "platform", "cpu",
                                "cpu_count", "packages": {...}, "cuda" (a CUDA build)}, ...}
  predictions.<split>.jsonl    other evaluated splits (e.g. validation), same schemas
  metrics.<split>.json
```
Every file is written to a temporary name and renamed into place, so a killed run never leaves a truncated
`metrics.json`. Prediction lines: `{"id", "labels": [gold], "predicted": [...], "scores": {label: float}}`
(`scores` optional; generative runs add `"raw"`, the generated text).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmcls.commands import command_of_system
from llmcls.environment import environment
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.metrics import Thresholds, compute_metrics

SCHEMA = 1
PRIMARY_SPLIT_ORDER = ("test", "validation")


def _default_file_mode() -> int:
    """0o666 less the process's umask: the mode `open()` would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A full disk, a missing permission or a path below a file: one line naming the path, not a traceback."""
    try:
        yield
    except OSError as err:
        raise LlmclsError(f"{path}: cannot write ({err.strerror or err})") from None


def atomic_write(path: str | Path, text: str | bytes | Iterable[str]) -> None:
    """Write text (or bytes, e.g. a PNG, or pieces of text as they are made, e.g. the lines of a large predictions
    file, never all in memory at once) to `path` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    with writing(path):
        _atomic_write(path, text)


def _atomic_write(path: Path, text: str | bytes | Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            if isinstance(text, (str, bytes)):
                handle.write(text)
            else:
                handle.writelines(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates files readable by their owner only; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_suffix(split: str, primary: str) -> str:
    return "" if split == primary else f".{split}"


def primary_split(splits: Iterable[str]) -> str:
    """The split reported in `metrics.json`: test when it was evaluated, else validation."""
    present = set(splits)
    return next((s for s in PRIMARY_SPLIT_ORDER if s in present), next(iter(sorted(present)), "test"))


@dataclass
class Predictions:
    """Predictions of one split: ids, gold and predicted multi-hot matrices, optional scores, optional raw text."""

    ids: list[str]
    gold: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray | None = None
    raw: list[str] | None = None
    labelled: np.ndarray | None = None  # rows with gold labels (predict-encoder on a file without some); None: all

    def records(self, space: LabelSpace) -> Iterator[dict[str, Any]]:
        """One record a row; a row without gold labels has `"labels": null` (predicted, never scored)."""
        gold, pred = space.from_multi_hot(self.gold), space.from_multi_hot(self.predicted)
        for i, example_id in enumerate(self.ids):
            labels = gold[i] if self.labelled is None or self.labelled[i] else None
            record: dict[str, Any] = {"id": example_id, "labels": labels, "predicted": pred[i]}
            if self.scores is not None:
                record["scores"] = {lab: float(s) for lab, s in zip(space.labels, self.scores[i],
                                                                              strict=True)}
            if self.raw is not None:
                record["raw"] = self.raw[i]
            yield record


class RunDir:
    """Writer and reader of one run directory."""

    def __init__(self, path: str | Path):
        if isinstance(path, str) and not path.strip():  # Path("") is the working directory
            raise LlmclsError("--output_dir is empty; give the run's folder (e.g. runs/linear)")
        self.path = Path(path)

    def create(self) -> RunDir:
        if self.path.exists() and not self.path.is_dir():
            raise LlmclsError(f"{self.path}: is a file, not a run directory (choose another --output_dir)")
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        return self

    def command(self) -> str | None:
        """The llmcls command that wrote the finished run in this folder (None when there is none): read off its
        metrics.json's system and its config.yaml."""
        if not (self.path / "metrics.json").exists():
            return None
        if "trained_run" in self.read_config():
            return "predict-encoder"
        return command_of_system(str(self.read_metrics().get("system", "")))

    def check_foreign(self, command: str) -> None:
        """Refuse to write over a config.yaml that no run wrote (a recipe, a project's own file): every run writes
        labels.json beside its config.yaml, and predictions and metrics after it."""
        run_files = ("labels.json", "predictions*.jsonl", "metrics*.json")
        if (self.path / "config.yaml").is_file() and not any(any(self.path.glob(name)) for name in run_files):
            raise LlmclsError(f"{self.path / 'config.yaml'} is no llmcls run's (no labels.json, predictions or "
                              f"metrics beside it), and `llmcls {command}` would write its own config.yaml there; "
                              "choose another --output_dir")

    def check_overwrite(self, command: str) -> None:
        """Refuse to write over a finished run that another command made (a typo in --output_dir would lose it), or
        over a config.yaml no run wrote (`check_foreign`); a rerun of the same command replaces its earlier results
        (see `clear_results`)."""
        self.check_foreign(command)
        earlier = self.command()
        if earlier is not None and earlier != command:
            raise LlmclsError(f"{self.path} holds a finished `llmcls {earlier}` run, which `llmcls {command}` would "
                              "replace; choose another --output_dir (or remove that run)")
        if earlier == command and command != "zeroshot":  # a finished zeroshot run is kept, not redone
            from llmcls.progress import console

            console.print(f"note: {self.path} holds a finished `llmcls {command}` run: this run replaces it once its "
                          "results are ready (another --output_dir keeps both)", soft_wrap=True, markup=False)
        if earlier is None and command != "zeroshot" and any(self.path.glob("predictions*.jsonl")) \
                and (self.path / "config.yaml").exists() \
                and self.read_config().get("system") in ("zeroshot", "fewshot"):
            raise LlmclsError(f"{self.path} holds the predictions of an unfinished `llmcls zeroshot` run (rerun it to "
                              f"resume), which `llmcls {command}` would replace; choose another --output_dir")

    def clear_results(self) -> None:
        """Remove the predictions, metrics and thresholds of an earlier run in this directory. A command that makes
        new results (not one resuming its own) calls it once they are ready to write, so a rerun with other splits
        or options never leaves the old run's files beside the new ones, and a rerun that fails earlier leaves the
        old run whole."""
        for pattern in ("predictions*.jsonl", "metrics*.json", "thresholds.json"):
            for path in self.path.glob(pattern):
                path.unlink()

    def remove_checkpoints(self) -> None:
        """Remove the Trainer's checkpoint-* folders (weights and optimizer state, kept only for resuming), once a
        run has finished."""
        for checkpoint in self.path.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)

    def check_fresh_start(self, resume_option: str) -> None:
        """A training run that does not resume must not start where an earlier one left checkpoints: they would
        stand beside its own, and a later resume would take the higher step, the earlier run's."""
        if any(self.path.glob("checkpoint-*")):
            raise LlmclsError(f"{self.path} holds checkpoint-* folders of an earlier run: continue it with "
                              f"{resume_option}, or remove them (or choose another --output_dir) to train afresh")

    def last_checkpoint(self) -> str | None:
        """The Trainer's latest complete checkpoint-N folder here (highest N), or None. The Trainer writes a
        checkpoint's trainer_state.json after its weights and optimizer state, so a folder without one is a save
        that was cut short (a kill during the save): resuming goes back to the checkpoint before it."""
        steps = {int(p.name.split("-", 1)[1]): p for p in self.path.glob("checkpoint-*")
                 if p.name.split("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()}
        return str(steps[max(steps)]) if steps else None

    def required_last_checkpoint(self, option: str) -> str:
        """`last_checkpoint`, which `option` (e.g. `--resume`) asked for: a one-line error when there is none."""
        last = self.last_checkpoint()
        if last is None:
            raise LlmclsError(f"{option}: no checkpoint-* folder in {self.path} to resume from (a complete one holds "
                              "a trainer_state.json)")
        return last

    def file(self, stem: str, split: str, primary: str, ext: str) -> Path:
        return self.path / f"{stem}{split_suffix(split, primary)}.{ext}"

    def write_config(self, config: dict[str, Any]) -> None:
        import yaml

        atomic_write(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2) + "\n")

    def write_labels(self, space: LabelSpace) -> None:
        atomic_write(self.path / "labels.json", space.to_json())

    def write_predictions(self, predictions: Predictions, space: LabelSpace, split: str, primary: str) -> Path:
        path = self.file("predictions", split, primary, "jsonl")
        atomic_write(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in predictions.records(space)))
        return path

    def write_split(self, predictions: Predictions, space: LabelSpace, split: str, primary: str, *, system: str,
                    model: str, timing: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Write one split's predictions and the metrics (metrics.py) of its rows with gold labels; returns those
        metrics, or None (and no metrics file) when no row has gold labels."""
        self.write_predictions(predictions, space, split, primary)
        if predictions.labelled is not None and not predictions.labelled.any():
            return None
        rows = slice(None) if predictions.labelled is None else predictions.labelled
        scores = None if predictions.scores is None else predictions.scores[rows]
        metrics = compute_metrics(predictions.gold[rows], predictions.predicted[rows], scores)
        self.write_metrics(metrics, system=system, model=model, split=split, primary=primary, timing=timing,
                           extra=extra)
        return metrics

    def write_metrics(self, metrics: dict[str, Any], *, system: str, model: str, split: str, primary: str,
                      timing: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        record = {"schema": SCHEMA, "system": system, "model": model, "split": split, "metrics": metrics,
                  "timing": timing, "environment": environment(), **(extra or {})}
        path = self.file("metrics", split, primary, "json")
        self.write_json(path.name, record)
        return path

    def read_metrics(self, split: str | None = None) -> dict[str, Any]:
        path = self.path / ("metrics.json" if split is None else f"metrics.{split}.json")
        if not path.exists():
            raise LlmclsError(f"{self.path}: not a finished run directory (no {path.name})")
        record = read_json(path)
        if not isinstance(record, dict):
            raise LlmclsError(f"{path}: not a metrics record (a JSON {type(record).__name__}, not an object)")
        if record.get("schema") != SCHEMA:
            raise LlmclsError(f"{path}: unknown schema {record.get('schema')!r} (this llmcls reads {SCHEMA})")
        return record

    def read_thresholds(self) -> Thresholds:
        """thresholds.json (the tuned thresholds of a run with scores); a missing, unreadable or malformed one is a
        one-line error naming the file."""
        path = self.path / "thresholds.json"
        record = read_json(path)
        values = record.get("values") if isinstance(record, dict) else None
        if not isinstance(values, list):
            raise LlmclsError(f"{path}: no 'values' list of thresholds (not a thresholds file?)")
        try:
            return Thresholds.from_dict(record)
        except (TypeError, ValueError) as err:
            raise LlmclsError(f"{path}: invalid thresholds ({' '.join(str(err).split())})") from None

    def read_config(self) -> dict[str, Any]:
        """config.yaml as a mapping ({} when the run has none); an unreadable one is a one-line error."""
        path = self.path / "config.yaml"
        if not path.exists():
            return {}
        import yaml

        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise LlmclsError(f"{path}: invalid YAML{where}") from None
        if config is not None and not isinstance(config, dict):
            raise LlmclsError(f"{path}: expected a mapping of options, got {type(config).__name__}")
        return config or {}

    def label_space(self) -> LabelSpace | None:
        """labels.json (None when the run has none); an unreadable one is a one-line error."""
        path = self.path / "labels.json"
        if not path.exists():
            return None
        try:
            return LabelSpace.load(path)
        except ValueError as err:
            raise LlmclsError(str(err)) from None


RECORD = "benchmark.json"  # what `llmcls benchmark` records of a system's run folder: options, status, code


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's benchmark record (`RECORD`); None when it has none or it cannot be read."""
    try:
        record = json.loads((run_dir / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing, unreadable or invalid one is a one-line error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LlmclsError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LlmclsError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None


def files_fingerprint(path: str | Path | None) -> str | None:
    """A cheap fingerprint of a local model, adapter or template (a file, or the files of a folder): names, sizes and
    the first and last MiB of each file, so replacing weights at the same path changes it (a random-initialised and a
    trained model of one shape differ within their first MiB) without hashing gigabytes. None for what is not a
    local path (a hub id)."""
    import hashlib

    if path is None or not Path(path).expanduser().exists():
        return None
    path = Path(path).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.blake2b(digest_size=8)
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{size}\n".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()


def check_checkpoint(path: str | Path, option: str) -> None:
    """A folder `--resume...` may continue from: a Trainer checkpoint has a trainer_state.json."""
    if not Path(path).is_dir():
        raise LlmclsError(f"{option}: no checkpoint folder {path}")
    if not (Path(path) / "trainer_state.json").is_file():
        raise LlmclsError(f"{option}: {path} is not a Trainer checkpoint folder (no trainer_state.json); give a "
                          "checkpoint-* folder of an interrupted run")


def wants_last_checkpoint(value: Any) -> bool:
    """Whether a --resume_from_checkpoint value asks for the last checkpoint in the output folder (`true`) rather
    than naming a folder."""
    return value is not None and str(value).lower() == "true"


def checkpoint_step(path: str | Path) -> int:
    """The training step a Trainer checkpoint was saved at (a resumed run records it: its time is the rest)."""
    return int(read_json(Path(path) / "trainer_state.json")["global_step"])


def split_summary(split: str, metrics: dict[str, Any], n: int) -> str:
    """The line a command prints for a scored split."""
    return (f"{split}: micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"P@1 {metrics['p_at_1']:.4f}  ({n} examples)")


def read_predictions(path: str | Path, space: LabelSpace | None = None) -> list[dict[str, Any]]:
    """Records of a predictions.jsonl; errors name the file, the line and the field. With `space`, each record's
    scores become a float64 row over it as the line is read (labels outside the space dropped, missing ones -inf,
    as `predictions_from_records` reads them), so a large file is never held as dictionaries of floats."""
    path = Path(path)
    records = []
    lines: dict[str, int] = {}  # id -> its line: an example predicted twice would be scored twice (and paired wrong)
    try:
        with open(path, "rb") as handle:  # bytes, decoded a line at a time: a bad byte is named by its line
            for number, raw in enumerate(handle, start=1):
                line = _decoded(raw, path, number)
                if line.strip():
                    record = _prediction_record(line, path, number)
                    if "id" in record:
                        first = lines.setdefault(str(record["id"]), number)
                        if first != number:
                            raise LlmclsError(f"{path}:{number}: id {str(record['id'])!r} was predicted on line "
                                              f"{first} already: ids are unique in a predictions file (two runs "
                                              "appended to one file?)")
                    if space is not None and isinstance(record.get("scores"), dict):
                        record["scores"] = _scores_over(record["scores"], space)
                    records.append(record)
    except OSError as err:
        raise LlmclsError(f"{path}: cannot read ({err.strerror})") from None
    return records


def _decoded(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LlmclsError(f"{path}:{number}: not UTF-8 text ({err.reason})") from None


def _prediction_record(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise LlmclsError(f"{path}:{number}: malformed JSON ({err.msg} at column {err.colno})") from None
    for key in ("labels", "predicted"):
        if key == "labels" and isinstance(record, dict) and record.get(key, []) is None:
            continue  # a row predicted without gold labels
        if not isinstance(record, dict) or not isinstance(record.get(key), list):
            present = ", ".join(record) if isinstance(record, dict) else "none"
            raise LlmclsError(f"{path}:{number}: field '{key}' is missing or not a list (fields present: {present})")
        odd = next((item for item in record[key] if not isinstance(item, str)), None)
        if odd is not None:
            raise LlmclsError(f"{path}:{number}: field '{key}' holds {odd!r}, not a label string")
    scores = record.get("scores")
    if scores is not None:
        if not isinstance(scores, dict):
            raise LlmclsError(f"{path}:{number}: field 'scores' is not a mapping of label to number")
        # the common case checked at C speed (a run's file holds rows x labels scores); the slow scan names the culprit
        if not set(map(type, scores.values())) <= {float, int} or any(map(math.isnan, scores.values())):
            odd = next(((label, value) for label, value in scores.items()
                        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value))
            raise LlmclsError(f"{path}:{number}: field 'scores' gives {odd[0]!r} the score {odd[1]!r}, not a number")
    return record


def scored_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with gold labels: what metrics are computed on (`"labels": null` marks a row that was predicted
    without gold labels, which predict-encoder keeps in its predictions.jsonl but never scores)."""
    return [r for r in records if r["labels"] is not None]


def predictions_from_records(records: list[dict[str, Any]], space: LabelSpace) -> Predictions:
    """Rebuild matrices from prediction records over `space` (labels outside it are ignored); pass the
    `scored_records`."""
    gold = space.to_multi_hot([r["labels"] for r in records], unknown="ignore")
    predicted = space.to_multi_hot([r["predicted"] for r in records], unknown="ignore")
    scores = None
    if records and all(isinstance(r.get("scores"), dict | np.ndarray) for r in records):
        scores = np.stack([_scores_over(r["scores"], space) for r in records])
    return Predictions([str(r.get("id", i)) for i, r in enumerate(records)], gold, predicted, scores)


def _scores_over(scores: dict[str, float] | np.ndarray, space: LabelSpace) -> np.ndarray:
    """A record's scores as a float64 row over `space` (an array row is one already)."""
    if isinstance(scores, np.ndarray):
        return scores
    labels = list(space.labels)
    if list(scores) == labels:  # written over this space, in its order: the common case, at C speed
        return np.fromiter(scores.values(), dtype=np.float64, count=len(labels))
    row = np.full(len(labels), -np.inf)
    for label, value in scores.items():
        if label in space:
            row[space.index(label)] = float(value)
    return row


class PredictionWriter:
    """Appends prediction records to a JSON-lines file as they are made, so an interrupted run loses at most the
    batches in flight and a rerun skips the finished ids.

    `read()` returns the finished records by id; a last line cut short by a kill (no newline) is dropped from the
    file first, so appended lines never join it. `append()` writes, flushes and fsyncs one batch. `rewrite()`
    replaces the file atomically (the final, ordered predictions), a line at a time.

    With `space` (the run's label space), records hold their `"scores"` as a float64 array in its order rather
    than a {label: score} mapping: 100,000 rows of 150 labels take 120 MB so instead of ~3 GB of Python floats in
    dictionaries. `read()` converts the file's mappings (which must be over exactly these labels), `append()` and
    `rewrite()` write arrays back as mappings, so the file is the same either way.
    """

    def __init__(self, path: str | Path, space: LabelSpace | None = None):
        self.path = Path(path)
        self.space = space

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        records: dict[str, dict[str, Any]] = {}
        end = 0  # bytes of whole lines read
        with open(self.path, "rb") as handle:  # a line at a time: the file can be gigabytes
            for number, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):
                    break
                end += len(raw)
                line = _decoded(raw, self.path, number)
                if line.strip():
                    record = _prediction_record(line, self.path, number)
                    if self.space is not None and record.get("scores") is not None:
                        record["scores"] = self._score_row(record["scores"], number)
                    records[str(record.get("id"))] = record
        if end < self.path.stat().st_size:
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        return records

    def _score_row(self, scores: dict[str, float], number: int) -> np.ndarray:
        """`_scores_over` for a file this run wrote: over exactly its labels, else a one-line error."""
        if len(scores) != len(self.space) or not all(label in self.space for label in scores):
            odd = sorted(set(scores) ^ set(self.space.labels))[:3]
            raise LlmclsError(f"{self.path}:{number}: field 'scores' is over other labels than this run's "
                              f"({', '.join(odd)} differ); start the run in a new folder")
        return _scores_over(scores, self.space)

    def _line(self, record: dict[str, Any]) -> str:
        scores = record.get("scores")
        if isinstance(scores, np.ndarray):
            record = record | {"scores": dict(zip(self.space.labels, scores.tolist(), strict=True))}
        return json.dumps(record, ensure_ascii=False) + "\n"

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(map(self._line, records))
        with writing(self.path):  # a write cut short leaves a partial last line, which read() drops
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        atomic_write(self.path, map(self._line, records))
