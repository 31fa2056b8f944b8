"""User-facing errors: the CLI prints them as one line and exits non-zero, never as a traceback."""

from __future__ import annotations


class LlmclsError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


class DataError(LlmclsError):
    """A problem in a data file, located by file, line (or row) and field where known."""

    def __init__(self, path, problem: str, *, line: int | None = None, field: str | None = None,
                 fields: list[str] | None = None, where: str = "line"):
        self.path, self.problem, self.line, self.field, self.fields = str(path), problem, line, field, fields
        if line is None:
            parts = [self.path]
        else:  # "file:17" for text lines; "file: row 17" for formats without lines (Parquet)
            parts = [f"{self.path}:{line}" if where == "line" else f"{self.path}: {where} {line}"]
        message = ": ".join(parts)
        # "field 'abstract' is empty" reads as one phrase; a problem that is a sentence of its own gets a colon
        if field is not None:
            joiner = " " if problem.startswith(("is ", "has ")) else ": "
            message += f": field '{field}'{joiner}{problem}"
        else:
            message += f": {problem}"
        if fields is not None:
            message += f" (fields present: {', '.join(fields) if fields else 'none'})"
        super().__init__(message)


def missing_extra(package: str, extra: str) -> LlmclsError:
    """The error for an optional dependency that is not installed."""
    return LlmclsError(f"{package} is not installed; install it with: pip install 'llmcls[{extra}]'")
