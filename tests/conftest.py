"""Shared fixtures: real rows from the bundled samples, written to temporary files in the formats under test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests never touch the network or the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESOURCES = Path(__file__).resolve().parents[1] / "llmcls" / "resources" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_datasets_cache(tmp_path_factory):
    """datasets' cache in a temporary folder, so tests neither reuse nor pollute ~/.cache."""
    import datasets

    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    datasets.config.HF_DATASETS_CACHE = cache
    datasets.disable_progress_bars()


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def aapd_rows() -> list[dict]:
    return read_jsonl(RESOURCES / "aapd-train.jsonl")


@pytest.fixture(scope="session")
def snapshot_rows() -> list[dict]:
    return read_jsonl(RESOURCES / "arxiv-snapshot.jsonl")


# the tiny Llama of tests/tiny_llms.py that writes label answers, and its HF backend: shared by the backend tests and
# the vLLM compatibility tests (each test module builds its own)
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_llms import build_label_llama

    return build_label_llama(tmp_path_factory.mktemp("tiny") / "llama", read_jsonl(RESOURCES / "aapd-train.jsonl"))


@pytest.fixture(scope="module")
def backend(tiny_dir):
    from llmcls.backends import ModelArguments, load_backend

    return load_backend(ModelArguments(model=str(tiny_dir), device="cpu"), batch_size=3)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama whose tokenizer learnt the sample's abstracts, labels and the zero-shot and compact
    prompts (the SFT tests; test_sft.py keeps its own, trained without the compact prompt)."""
    from tiny_llms import build_tiny_llama

    rows = read_jsonl(RESOURCES / "aapd-train.jsonl")
    texts = [r["abstract"] for r in rows] + [" ".join(r["labels"]) for r in rows]
    root = Path(__file__).resolve().parents[1]
    texts += [(root / "prompts" / name).read_text() for name in ("zeroshot.jinja", "compact.jinja")]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", texts)
