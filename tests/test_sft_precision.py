"""SFT's precision and its evaluation under sharding: the dtype the model trains in (--dtype auto: bf16 for a LoRA
trained in bf16, float32 otherwise; QLoRA's compute dtype from it), the dtype the evaluation runs in (the one
`zeroshot --adapter` loads), and under FSDP / ZeRO-3 an evaluation from the saved adapter loaded afresh instead of
the sharded trainer model. Tiny Llama, CPU; the multi-GPU cases through stand-ins and a forced detection."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import read_jsonl

import llmcls.sft as sft
import llmcls.sft_trainer as sft_trainer
from llmcls.backends.loading import peft_wrapping
from llmcls.cli import main as cli_main
from llmcls.config import parse
from llmcls.errors import LlmclsError
from llmcls.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--activation_checkpointing", "false",
        "--report_to", "none", "--logging_steps", "1", "--save_strategy", "no", "--learning_rate", "5.0e-2",
        "--dataloader_num_workers", "0", "--max_length", "2048", "--prompt", "compact"]
LORA = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8"]
EVAL = ["--validation", "aapd-validation", "--test", "aapd-test", "--max_eval_examples", "8", "--batch_size", "8"]
BF16_ON_CPU = ["--bf16", "true", "--use_cpu", "true"]  # transformers takes --bf16 on a CPU with --use_cpu only


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    """A test decides whether it runs "under accelerate launch"; the shell running the tests does not."""
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(name, raising=False)


def _parse(tmp_path: Path, *extra: str, model: str = "org/model"):
    """(data, script, generation, training, model) arguments of `llmcls sft`."""
    return parse(sft.make_parser(), ["--model_name_or_path", model, "--train", "aapd-train", "--output_dir",
                                     str(tmp_path / "run"), *extra])


def _run_args(model: Path, out: Path) -> list[str]:
    """`llmcls sft` over the tiny model and 12 training rows, two steps."""
    return ["--model_name_or_path", str(model), "--train", "aapd-train", "--max_train_examples", "12",
            "--output_dir", str(out), *FAST]


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


# ------------------------------------------------------------------------------------------------- --dtype auto
def test_dtype_defaults_to_auto_and_a_config_file_or_flag_sets_it(tmp_path):
    assert _parse(tmp_path, "--bf16", "false")[4].dtype == "auto"  # TRL's own default is float32
    config = tmp_path / "sft.yaml"
    config.write_text("dtype: bfloat16\nbf16: false\n")
    assert _parse(tmp_path, "--config", str(config))[4].dtype == "bfloat16"
    assert _parse(tmp_path, "--config", str(config), "--dtype", "float16")[4].dtype == "float16"


def test_auto_dtype_is_bfloat16_for_a_lora_trained_in_bf16_and_float32_otherwise(tmp_path):
    from llmcls.sft import check_options
    from llmcls.sft_trainer import resolve_dtype

    def resolved(*extra: str) -> str:
        _, script_args, _, training_args, model_args = _parse(tmp_path, *extra)
        check_options(training_args, model_args, script_args)  # resolves it, before anything loads
        assert resolve_dtype(model_args, training_args) == model_args.dtype  # once: a second call keeps it
        return model_args.dtype

    assert resolved("--bf16", "false", *LORA) == "float32"  # this machine's default: as before
    assert resolved(*BF16_ON_CPU, *LORA) == "bfloat16"
    assert resolved(*BF16_ON_CPU, "--use_peft", "false") == "float32"  # full fine-tuning: float32 master weights
    assert resolved(*BF16_ON_CPU, *LORA, "--dtype", "float32") == "float32"  # an explicit dtype is kept
    assert resolved("--bf16", "false", *LORA, "--dtype", "bfloat16") == "bfloat16"
    config = tmp_path / "sft.yaml"
    config.write_text("dtype: float16\n")
    assert resolved("--config", str(config), *BF16_ON_CPU, *LORA) == "float16"  # so is a config file's


@pytest.mark.parametrize(("precision", "expected"), [(BF16_ON_CPU, torch.bfloat16), (["--bf16", "false"],
                                                                                     torch.float32)])
@pytest.mark.parametrize("dtype", [[], ["--dtype", "auto"]])
def test_qlora_computes_in_the_resolved_dtype(tmp_path, monkeypatch, precision, expected, dtype):
    """TRL's get_quantization_config takes the 4-bit compute dtype from --dtype: `auto` used to crash there
    (getattr(torch, "auto")) and the default computed in float32. Checked on the arguments the model would load
    with (bitsandbytes and a GPU are not needed to build them)."""
    from transformers import AutoModelForCausalLM

    from llmcls.sft_trainer import load_training_model

    loaded = {}
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **kwargs: loaded.update(kwargs))
    _, _, _, training_args, model_args = _parse(tmp_path, *precision, *LORA, "--load_in_4bit", "true", *dtype)
    load_training_model(model_args, training_args)
    assert loaded["quantization_config"].bnb_4bit_compute_dtype is expected
    assert getattr(torch, loaded["dtype"]) is expected  # the weights outside the 4-bit layers too


def _spy_dtypes(monkeypatch) -> dict[str, list]:
    """The dtype of the model loaded for training and of every model a generation backend is built on."""
    from llmcls.backends.hf import HFBackend

    seen: dict[str, list] = {"trained": [], "evaluated": []}
    load, init = sft_trainer.load_training_model, HFBackend.__init__

    def load_spy(*args, **kwargs):
        model = load(*args, **kwargs)
        seen["trained"].append(model.dtype)
        return model

    def init_spy(self, model, *args, **kwargs):
        seen["evaluated"].append(model.dtype)
        init(self, model, *args, **kwargs)

    monkeypatch.setattr(sft_trainer, "load_training_model", load_spy)
    monkeypatch.setattr(HFBackend, "__init__", init_spy)
    return seen


def test_a_cpu_run_trains_and_evaluates_in_float32_as_before(tiny_llama, tmp_path, monkeypatch):
    seen = _spy_dtypes(monkeypatch)
    out = tmp_path / "run"
    assert cli_main(["sft", *_run_args(tiny_llama, out), "--bf16", "false", *LORA, *EVAL]) == 0
    assert _config(out)["dtype"] == "float32"
    assert seen == {"trained": [torch.float32], "evaluated": [torch.float32]}


@pytest.mark.parametrize("merge", [[], ["--merge", "true"]])
def test_a_bf16_lora_trains_on_bf16_weights_and_evaluates_as_zeroshot_loads_it(tiny_llama, tmp_path, monkeypatch,
                                                                                merge):
    """--bf16 on a CPU: the LoRA's base in bfloat16, and the evaluation in float32, the dtype `zeroshot --adapter`
    loads on a CPU (its metrics are the ones a reuse of the adapter gives), --merge or not."""
    seen = _spy_dtypes(monkeypatch)
    out = tmp_path / "run"
    assert cli_main(["sft", *_run_args(tiny_llama, out), *BF16_ON_CPU, *LORA, *EVAL, "--mode", "score",
                     *merge]) == 0
    assert (out / "merged" / "config.json").exists() == bool(merge)
    assert _config(out)["dtype"] == "bfloat16"
    assert seen == {"trained": [torch.bfloat16], "evaluated": [torch.float32]}
    reuse = tmp_path / "reuse"
    assert cli_main(["zeroshot", "--model", str(tiny_llama), "--adapter", str(out / "adapter"), "--labels",
                     str(out / "labels.json"), *EVAL, "--mode", "score", "--output_dir", str(reuse)]) == 0
    scores = [[json.loads(line)["scores"] for line in (run / "predictions.jsonl").read_text().splitlines()]
              for run in (out, reuse)]
    assert scores[0] == scores[1]  # the adapter merged into a float32 base, not a bf16 merge cast afterwards
    if merge:  # RUN_DIR/merged, the model a user deploys, gives the run's scores too
        merged = tmp_path / "merged-reuse"
        assert cli_main(["zeroshot", "--model", str(out / "merged"), "--labels", str(out / "labels.json"), *EVAL,
                         "--mode", "score", "--prompt", "compact", "--output_dir", str(merged)]) == 0
        assert [json.loads(line)["scores"] for line in (merged / "predictions.jsonl").read_text().splitlines()] \
            == scores[0]


# ------------------------------------------------------------------------------------------------ FSDP / ZeRO-3
def _args(fsdp=None, zero_stage: int | None = None) -> SimpleNamespace:
    """TrainingArguments as far as `sharding` reads them."""
    plugin = None if zero_stage is None else SimpleNamespace(zero_stage=zero_stage)
    return SimpleNamespace(fsdp=fsdp, deepspeed_plugin=plugin)


def _trainer(fsdp_state_dict: str | None = None, zero_stage: int | None = None, save_16bit: bool = False):
    """A trainer as far as `trainer_sharding` and `check_saved_model` read it: its accelerator's plugins."""
    state = SimpleNamespace()
    if fsdp_state_dict is not None:
        state.fsdp_plugin = SimpleNamespace(state_dict_type=f"StateDictType.{fsdp_state_dict}")
    if zero_stage is not None:
        state.deepspeed_plugin = SimpleNamespace(zero_stage=zero_stage, zero3_save_16bit_model=save_16bit)
    return SimpleNamespace(accelerator=SimpleNamespace(state=state))


def test_sharding_is_told_from_the_flags_deepspeed_and_an_accelerate_launch(monkeypatch):
    from llmcls.sft import sharding, trainer_sharding

    assert sharding(_args()) is None  # one process, DDP
    assert sharding(_args(fsdp=True)) == "FSDP"  # --fsdp
    assert sharding(_args(zero_stage=3)) == "DeepSpeed ZeRO-3"  # --deepspeed, or the launcher's plugin
    assert sharding(_args(zero_stage=2)) is None  # ZeRO-2 leaves every process the whole model
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --config_file accelerate_configs/fsdp.yaml
    assert sharding(_args()) == "FSDP"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert sharding(_args()) is None
    assert trainer_sharding(_trainer()) is None
    assert trainer_sharding(_trainer(fsdp_state_dict="FULL_STATE_DICT")) == "FSDP"
    assert trainer_sharding(_trainer(zero_stage=3)) == "DeepSpeed ZeRO-3"
    assert trainer_sharding(_trainer(zero_stage=2)) is None


def test_generate_at_eval_is_refused_under_an_accelerate_fsdp_launch(tmp_path, monkeypatch, capsys):
    """The launcher says FSDP through the environment alone (TrainingArguments.fsdp stays unset)."""
    from llmcls.sft import check_evaluation

    data_args, script_args, _, training_args, _ = _parse(tmp_path, "--bf16", "false", "--validation",
                                                         "aapd-validation", "--eval_strategy", "steps",
                                                         "--generate_at_eval", "4")
    check_evaluation(data_args, training_args, script_args)  # one process: fine
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not training_args.fsdp
    with pytest.raises(LlmclsError, match="--generate_at_eval generates with the main process's copy"):
        check_evaluation(data_args, training_args, script_args)


def test_what_a_sharded_evaluation_cannot_load_is_refused_before_training(tmp_path, monkeypatch):
    from llmcls.sft import check_options, check_saved_model

    monkeypatch.setattr(sft, "check_quantization", lambda model_args: None)  # no GPU or bitsandbytes here
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    eight_bit = ("--bf16", "false", *LORA, "--load_in_8bit", "true")
    _, script_args, _, training_args, model_args = _parse(tmp_path, *eight_bit)
    with pytest.raises(LlmclsError, match="--load_in_8bit under FSDP: the evaluation after training loads"):
        check_options(training_args, model_args, script_args)
    _, script_args, _, training_args, model_args = _parse(tmp_path, *eight_bit, "--skip_eval", "true")
    check_options(training_args, model_args, script_args)  # train and save only: fine

    def refusal(trainer, *extra: str) -> str | None:
        _, script_args, _, _, model_args = _parse(tmp_path, "--bf16", "false", *extra)
        try:
            check_saved_model(trainer, model_args, script_args)
        except LlmclsError as err:
            assert "\n" not in str(err)
            return str(err)
        return None

    sharded_dict = _trainer(fsdp_state_dict="SHARDED_STATE_DICT")
    assert "FSDP with SHARDED_STATE_DICT saves no whole model" in refusal(sharded_dict, *LORA)
    assert refusal(sharded_dict, *LORA, "--skip_eval", "true") is None
    assert "FSDP with SHARDED_STATE_DICT" in refusal(sharded_dict, *LORA, "--skip_eval", "true", "--merge", "true")
    assert refusal(_trainer(fsdp_state_dict="FULL_STATE_DICT"), *LORA) is None  # accelerate_configs/fsdp.yaml
    unsaved = _trainer(zero_stage=3, save_16bit=False)
    assert "ZeRO-3 without zero3_save_16bit_model" in refusal(unsaved, "--use_peft", "false")
    assert refusal(unsaved, *LORA) is None  # the adapter is gathered and saved whatever the setting
    assert refusal(_trainer(zero_stage=3, save_16bit=True), "--use_peft", "false") is None  # deepspeed_zero3.yaml


def _force_sharding(monkeypatch) -> tuple[dict, list]:
    """Run `main` as if its trainer were sharded; return the trainer it made (and the model the trainer trained)
    and the arguments of every backend loaded afresh."""
    from llmcls import backends

    made: dict = {}
    loads: list = []
    make, load = sft.make_trainer, backends.load_backend

    def make_spy(*args, **kwargs):
        made["trainer"] = trainer = make(*args, **kwargs)
        made["model"] = trainer.model
        return trainer

    def load_spy(args, **kwargs):
        loads.append(args)
        return load(args, **kwargs)

    monkeypatch.setattr(sft, "trainer_sharding", lambda trainer: "FSDP")
    monkeypatch.setattr(sft, "make_trainer", make_spy)
    monkeypatch.setattr(backends, "load_backend", load_spy)
    return made, loads


def _spy_backend_models(monkeypatch) -> list:
    from llmcls.backends.hf import HFBackend

    models: list = []
    init = HFBackend.__init__

    def init_spy(self, model, *args, **kwargs):
        models.append(model)
        init(self, model, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "__init__", init_spy)
    return models


def test_a_sharded_lora_run_evaluates_and_merges_the_saved_adapter_loaded_afresh(tiny_llama, tmp_path,
                                                                                  monkeypatch):
    made, loads = _force_sharding(monkeypatch)
    models = _spy_backend_models(monkeypatch)
    out = tmp_path / "run"
    assert cli_main(["sft", *_run_args(tiny_llama, out), "--bf16", "false", *LORA, *EVAL, "--merge", "true"]) == 0
    # one fresh load, as `zeroshot --adapter RUN_DIR/adapter` makes it, serves the merge and the evaluation
    assert [(a.model, a.adapter, a.dtype, a.load_in_4bit) for a in loads] == [
        (str(tiny_llama), str(out / "adapter"), "auto", False)]
    trained = made["model"]
    assert models and all(m is not trained and m is not trained.get_base_model() for m in models)
    assert any("lora_A" in name for name, _ in trained.named_parameters())  # never merged: not used at all
    assert made["trainer"].model is None  # released before the fresh copy loaded
    for record in (RunDir(out).read_metrics(), RunDir(out).read_metrics("validation")):
        assert record["system"] == "sft" and record["timing"]["examples_timed"] == 8
        assert record["timing"]["load_s"] is not None and record["params_trained"] > 0
    assert len(read_jsonl(out / "predictions.jsonl")) == 8
    assert len(read_jsonl(out / "predictions.validation.jsonl")) == 8
    assert (out / "merged" / "config.json").exists() and (out / "merged" / "tokenizer_config.json").exists()
    # the run's answers are those of the reuse command
    monkeypatch.undo()
    assert cli_main(["zeroshot", "--adapter", str(out / "adapter"), "--test", "aapd-test", "--max_eval_examples",
                     "8", "--batch_size", "8", "--output_dir", str(tmp_path / "reuse")]) == 0
    own, reused = (read_jsonl(path / "predictions.jsonl") for path in (out, tmp_path / "reuse"))
    assert [(r["id"], r["raw"]) for r in reused] == [(r["id"], r["raw"]) for r in own]


def test_a_sharded_full_fine_tuning_evaluates_the_saved_model(tiny_llama, tmp_path, monkeypatch):
    made, loads = _force_sharding(monkeypatch)
    models = _spy_backend_models(monkeypatch)
    out = tmp_path / "run"
    assert cli_main(["sft", *_run_args(tiny_llama, out), "--bf16", "false", "--use_peft", "false",
                     "--learning_rate", "1.0e-3", *EVAL]) == 0
    assert [(a.model, a.adapter) for a in loads] == [(str(out / "adapter"), None)]
    assert models and all(m is not made["model"] for m in models)
    assert RunDir(out).read_metrics()["timing"]["examples_timed"] == 8
    assert RunDir(out).read_metrics("validation")["timing"]["examples_timed"] == 8


def test_the_generation_check_gives_a_flash_attention_model_its_attention_back(tiny_llama, monkeypatch):
    """--generate_at_eval predicts through sdpa (score mode's and the shared prefix's masks) and training goes on
    with the FlashAttention it was loaded with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import llmcls.task as task
    from llmcls.config import DataArguments
    from llmcls.corpus import load_corpus
    from llmcls.task import GenerationArguments

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).train()  # in training, as the check finds it
    model.config._attn_implementation_internal = "flash_attention_2"  # as loaded with it (the kernel is not here)
    seen = []

    def spy(t, ds, limit):
        seen.append(model.config._attn_implementation)
        return {"micro_f1": 0.0}

    monkeypatch.setattr(task, "quick_metrics", spy)
    monkeypatch.setattr(type(model), "_check_and_adjust_attn_implementation", lambda self, name, **kw: name)
    corpus = load_corpus(DataArguments(validation="aapd-validation", max_eval_examples=4))
    check = sft_trainer.GenerationCheck(corpus, AutoTokenizer.from_pretrained(tiny_llama),
                                sft.SFTScriptArguments(generate_at_eval=4), GenerationArguments(), seed=0)
    assert check.measure(model) == {"micro_f1": 0.0}
    assert seen == ["sdpa"] and model.config._attn_implementation == "flash_attention_2" and model.training


def test_a_qlora_adapter_merges_into_the_unquantised_base_and_evaluates_unmerged(tiny_llama, tmp_path, monkeypatch):
    """QLoRA with --merge, one process: the evaluation runs on the quantised model as trained (adapter unmerged), and
    RUN_DIR/merged is the saved adapter merged into the base loaded afresh without quantisation (merged in place,
    the weights would be requantised). bitsandbytes needs a GPU: the trained model is the tiny float32 Llama marked
    8-bit, which is what llmcls and TRL read."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmcls import backends

    load, loads = sft_trainer.load_training_model, []
    backend_load = backends.load_backend

    def load_marked(model_args, training_args):
        model_args.load_in_8bit = False  # the real load: plain float32 weights
        model = load(model_args, training_args)
        model_args.load_in_8bit = True
        model.is_loaded_in_8bit = True
        return model

    def load_spy(args, **kwargs):
        loads.append(args)
        return backend_load(args, **kwargs)

    monkeypatch.setattr(sft, "check_quantization", lambda model_args: None)
    monkeypatch.setattr(sft_trainer, "load_training_model", load_marked)
    monkeypatch.setattr(backends, "load_backend", load_spy)
    models = _spy_backend_models(monkeypatch)
    out = tmp_path / "run"
    assert cli_main(["sft", *_run_args(tiny_llama, out), "--bf16", "false", *LORA, "--load_in_8bit", "true", *EVAL,
                     "--merge", "true"]) == 0
    assert len(models) == 2  # the evaluation's, then the merge's
    assert any("lora_A" in name for name, _ in models[0].named_parameters())  # evaluated as trained: unmerged
    assert [(a.model, a.adapter, a.load_in_4bit) for a in loads] == [(str(tiny_llama), str(out / "adapter"), False)]
    assert RunDir(out).read_metrics()["timing"]["examples_timed"] == 8
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    with peft_wrapping():
        expected = PeftModel.from_pretrained(base, str(out / "adapter")).merge_and_unload().state_dict()
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype=torch.float32).state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.equal(merged[name], expected[name]) for name in expected)
