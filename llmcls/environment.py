"""What produced a run: package versions, the platform and CPU, and a digest of llmcls's own files, recorded in
every metrics.json (`environment()`) and in benchmark.json (`source_digest()`). Reads installed metadata and files
only: nothing heavy is imported.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

ENVIRONMENT_PACKAGES = ("numpy", "scikit-learn", "torch", "transformers", "datasets", "accelerate", "trl", "peft",
                        "bitsandbytes", "vllm")


def environment() -> dict[str, Any]:
    """Versions and hardware of the process writing a run, recorded in metrics.json so that a report can say what
    produced each number (package versions come from the installed metadata: nothing heavy is imported)."""
    import platform
    import sys
    from importlib import metadata

    from llmcls import __version__

    packages = {}
    for name in ENVIRONMENT_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found = {"llmcls": __version__, "llmcls_source": source_digest(), "python": platform.python_version(),
             "platform": platform.platform(),
             "cpu": cpu_name(), "cpu_count": os.cpu_count(), "packages": packages}
    torch = sys.modules.get("torch")  # only when the command already uses it
    if torch is not None and getattr(torch.version, "cuda", None):
        found["cuda"] = torch.version.cuda
    return found


@functools.cache
def source_digest() -> str:
    """A digest of llmcls's own files (code, prompt templates, taxonomy): what tells results of one version of the
    code from another's where `__version__` stays the same (a checkout between releases, a local change)."""
    return files_digest(source_files())


def files_digest(files: list[tuple[str, Path]], size: int = 6) -> str:
    """A digest of (name, path) pairs' names and contents."""
    import hashlib

    digest = hashlib.blake2b(digest_size=size)
    for name, path in files:
        digest.update(name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def source_files() -> list[tuple[str, Path]]:
    """(name under the package, path) of every file of llmcls, sorted; symbolic links followed (in a checkout
    resources/prompts links to the templates' folder)."""
    root = Path(__file__).resolve().parent
    found = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = [d for d in subfolders if d != "__pycache__"]
        paths = [Path(folder) / name for name in files if not name.endswith(".pyc")]
        found += [(str(path.relative_to(root)), path) for path in paths]
    return sorted(found)


def cpu_name() -> str:
    """The CPU model (Linux reports it in /proc/cpuinfo; platform.processor() is often empty there)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
