"""Where a model comes from: a one-line error for a local path that holds no model, or a model transformers cannot
find, shared by the encoder, the generative backends and SFT (no torch or transformers import here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmcls.errors import LlmclsError

# what a saved tokenizer leaves in a model folder (fast tokenizers, SentencePiece, WordPiece, BPE vocabularies)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.txt",
                   "vocab.json")


def check_model_path(name: str) -> None:
    """A one-line error for a local path that holds no model. transformers would raise a ValueError about the
    tokenizer or `model_type` for a folder without config.json, read a file as a config, and take a missing path
    for a malformed hub id; hub ids (and paths that could be one) are left to `model_errors`."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(name)
    if name.startswith("package:") and not path.exists():
        raise LlmclsError(f"cannot load model {name}: `package:NAME` is read by `llmcls benchmark` configs only; pass "
                          "the model's path here (the .gguf file or model folder inside the installed package)")
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return
        if (path / "config.json").is_file():
            if any((path / file).is_file() for file in TOKENIZER_FILES):
                return
            problem = f"no tokenizer in the folder (none of {', '.join(TOKENIZER_FILES)})"
        else:
            problem = "not a model folder (no config.json)"
    elif path.exists():
        problem = "a file, not a model folder"
    else:
        try:
            validate_repo_id(name)
        except HFValidationError:
            problem = "no such file or folder"
        else:
            return  # a hub id, or a path that could be one: transformers looks it up
    raise LlmclsError(f"cannot load model {name}: {problem}")


@contextmanager
def model_errors(name: str) -> Iterator[None]:
    """transformers' OSError for a model it cannot find (a hub id not cached while offline, a typo, a folder
    without weights) as one line."""
    try:
        yield
    except OSError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LlmclsError(f"cannot load model {name}: {reason}") from None
