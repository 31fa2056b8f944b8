"""Finding and loading a causal LM for the generative backends: a hub id, a model folder or a `.gguf` file (converted
once into a normal folder in the cache), the device and dtype (bfloat16 on a GPU that has it, else float16; float32
on CPU), 4-bit quantization through bitsandbytes, and a PEFT adapter (merged into the weights unless the base is 4-bit)
with its adapter_config.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from llmcls.backends import ModelArguments
from llmcls.errors import LlmclsError, missing_extra
from llmcls.model_paths import check_model_path
from llmcls.progress import status


def cache_root() -> Path:
    return Path(os.environ.get("LLMCLS_CACHE", "~/.cache/llmcls")).expanduser()


def gguf_folder(path: str | Path) -> Path:
    """A normal model folder (safetensors, config, tokenizer) converted from a .gguf file, made on first use.

    Dequantising a GGUF file takes ~15 s even for a 135M model; loading the converted folder takes well under a
    second. The folder name ends with a digest of the file's bytes: a changed file is converted again, while the
    same bytes installed anew (a fresh virtual environment, a new modification time, another file name) reuse their
    folder instead of adding another copy (517 MB for SmolLM2-135M).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise LlmclsError(f"{path}: no such GGUF file")
    digest = file_digest(path)
    for done in sorted((cache_root() / "gguf").glob(f"*-{digest}")):
        if (done / "config.json").exists():
            return done
    folder = cache_root() / "gguf" / f"{path.stem}-{digest}"
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    with status(f"Converting {path.name} to a model folder (once) in {folder.parent}"):
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            # dequantize=True gives a plain dense model that save_pretrained can write (packed GGUF blocks cannot be)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                         quantization_config=GgufConfig(dequantize=True))
        except (ValueError, OSError, KeyError) as err:  # not GGUF, truncated, or an architecture transformers lacks
            raise LlmclsError(f"{path}: cannot load as a GGUF model: {str(err).splitlines()[0]}") from None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)  # atomic: a folder that exists is complete
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> digest, for this process


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the BLAKE2b digest of a file's bytes (~0.2 s for a 100 MB file, seconds for a 7B
    model's): computed once per process for a file left unchanged (same size and modification time), since one run
    (`llmcls benchmark`, sft with its evaluation) resolves the same .gguf several times."""
    import hashlib

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.blake2b(digest_size=8)
        with path.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def resolve_model(spec: str) -> str:
    """A loadable name: a .gguf file becomes its converted folder; model folders and hub ids pass through, and any
    other local path is a one-line error (`check_model_path`)."""
    if spec.endswith(".gguf"):
        return str(gguf_folder(spec))
    check_model_path(spec)
    return spec


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(requested).type
    except RuntimeError:
        raise LlmclsError(f"--device {requested}: not a device (auto, cpu, cuda, cuda:N, mps)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise LlmclsError(f"--device {requested}: no CUDA GPU here (torch {torch.__version__}); use --device cpu")
    return requested


def pick_dtype(requested: str, device: str):
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU matmuls in bf16 are slow and less exact on most CPUs


def quantization_config(dtype):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise missing_extra("bitsandbytes", "bnb") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def load_tokenizer(path: str, adapter: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of the adapter folder when it has one (SFT may add tokens or a chat template), else the
    model's; left padding for generation, and a pad token (the EOS token) when the model has none."""
    from transformers import AutoTokenizer

    source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around PEFT's wrapping of a model (an adapter loaded, or one created for training): PEFT reads transformers
    5's deprecated `is_gradient_checkpointing`, a FutureWarning in every run that nothing a user sets can avoid."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated",
                                category=FutureWarning)
        yield


def load_model(path: str, args: ModelArguments, device: str, dtype, quantization=None):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": args.trust_remote_code}
    if quantization is not None:
        kwargs |= {"quantization_config": quantization, "device_map": {"": device}}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if args.adapter:
        from peft import PeftModel

        try:
            with peft_wrapping():
                model = PeftModel.from_pretrained(model, args.adapter)
        except (RuntimeError, ValueError) as err:  # PEFT's traceback for an adapter of another base model
            raise adapter_mismatch(args.adapter, path, err) from None
        if not args.load_in_4bit:  # merged weights generate as fast as the base model
            model = model.merge_and_unload()
    if not args.load_in_4bit:
        model.to(device)
    return model.eval()


def adapter_mismatch(adapter: str, model: str, err: Exception) -> Exception:
    """PEFT's error for an adapter that does not fit the model (trained on another base) as one line, naming the
    base the adapter records; any other error as it was."""
    text = " ".join(str(err).split())
    found = re.search(r"size mismatch for [^ ]+: .*?(?:current model is torch\.Size\(\[[^\]]*\]\))", text)
    if found is None and "not found in the base model" not in text:
        return err
    try:
        trained_on = f" (it was trained on {base_model_of(adapter)})"
    except LlmclsError:
        trained_on = ""
    detail = (found.group(0) if found else text)[:300]
    return LlmclsError(f"--adapter {adapter} does not fit the model {model}{trained_on}: {detail}")


def adapter_config(adapter: str) -> dict:
    """An adapter folder's adapter_config.json as a mapping; a missing or unreadable one is a one-line error."""
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: invalid JSON or UTF-8
        config = None
    if not isinstance(config, dict):
        raise LlmclsError(f"{adapter}: not a PEFT adapter folder (no readable adapter_config.json)")
    return config


def base_model_of(adapter: str) -> str:
    """The base model an adapter was trained on (from its adapter_config.json)."""
    base = adapter_config(adapter).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise LlmclsError(f"{adapter}: adapter_config.json names no base model (base_model_name_or_path): pass "
                          "--model")
    return base


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} threads)" if device == "cpu" else device


def positions_of(config) -> int | None:
    """The positions a model was trained on (max_position_embeddings), when its config says: a longer input crashes
    (learned positions) or is read as garbage (RoPE)."""
    return getattr(config.get_text_config(), "max_position_embeddings", None)
