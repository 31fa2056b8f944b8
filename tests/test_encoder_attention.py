"""encoder_attention: the fused-kernel attention that compiled train-encoder runs on a GPU. On a CPU its function is
transformers' SDPA call, so these tests check what must hold on any device: the model attends through it with the
same masks (padding included) and the same logits, models without transformers' attention interface stay as they
are, and build_trainer sets it only under --torch_compile on a GPU. The kernels themselves are measured on a GPU by
benchmarks/bench_attention_kernels.py and bench_encoder_throughput.py --attention."""

from __future__ import annotations

import pytest
import torch
from conftest import RESOURCES, read_jsonl

from llmcls.encoder_attention import (
    REGISTERED,
    _bias,
    fused_attention,
    fused_kernels_on,
    takes_fused,
    unmasked_sdpa_mask,
    use_fused_attention,
)
from llmcls.labels import LabelSpace

SPACE = LabelSpace(["cs.IT", "cs.LG", "math.IT"])


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    from tiny_encoders import save_tiny_bert, save_tiny_deberta, train_tokenizer

    tokenizer = train_tokenizer([row["abstract"] for row in read_jsonl(RESOURCES / "aapd-train.jsonl")])
    root = tmp_path_factory.mktemp("attention")
    return {"bert": save_tiny_bert(tokenizer, root / "bert"),
            "deberta": save_tiny_deberta(tokenizer, root / "deberta")}


def padded_batch():
    """Two rows, the second padded after 7 tokens: a mask that hides something."""
    ids = torch.randint(10, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


@pytest.mark.parametrize(("pooling", "kind"), [("model", "flash"), ("mean", "flash"), ("model", "unmasked")])
def test_a_model_attends_through_the_fused_function_with_the_same_masks_and_logits(tiny_folders, pooling, kind):
    from llmcls.encoder_model import load_for_training

    torch.manual_seed(0)
    model = load_for_training(str(tiny_folders["bert"]), SPACE, pooling).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    assert use_fused_attention(model, kind)
    encoder = model if pooling == "model" else model.encoder
    assert encoder.config._attn_implementation == REGISTERED[kind]
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits
        # had transformers built no mask for the new attention (it builds none for a name it has no mask function
        # for), the padded row would attend to its padding and its logits would move
        unmasked = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert not torch.allclose(unmasked[1], before[1], atol=1e-6)


def test_a_model_with_its_own_attention_is_left_as_it_is(tiny_folders):
    from llmcls.encoder_model import load_for_training

    model = load_for_training(str(tiny_folders["deberta"]), SPACE)
    implementation = model.config._attn_implementation
    assert not use_fused_attention(model, "flash")
    assert model.config._attn_implementation == implementation


def test_build_trainer_sets_it_only_when_compiling_on_a_gpu(tiny_folders, tmp_path):
    from llmcls.encoder_args import EncoderArguments
    from llmcls.encoder_model import load_for_training, load_tokenizer
    from llmcls.encoder_train import build_trainer

    tokenizer = load_tokenizer(str(tiny_folders["bert"]))
    for compile_ in (False, True):
        model = load_for_training(str(tiny_folders["bert"]), SPACE)
        args = EncoderArguments(output_dir=str(tmp_path), model="bert", torch_compile=compile_, report_to="none",
                                eval_strategy="no", save_strategy="no")
        assert args.fused_attention  # on by default
        build_trainer(model, tokenizer, None, None, args)
        assert model.config._attn_implementation == "sdpa"  # this machine has no GPU


def test_the_bias_of_a_boolean_mask_hides_the_masked_keys_for_every_head():
    query, key = torch.zeros(2, 3, 4, 8, dtype=torch.bfloat16), torch.zeros(2, 3, 5, 8, dtype=torch.bfloat16)
    keep = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    keep[1, :, :, 3:] = False
    bias = _bias(query, key, keep)
    assert bias.shape == (2, 3, 4, 5) and bias.dtype == torch.bfloat16
    assert torch.isneginf(bias[1, :, :, 3:]).all() and (bias[1, :, :, :3] == 0).all() and (bias[0] == 0).all()
    additive = torch.where(keep, 0.0, -1e9)  # float32: cast to the query's dtype
    assert _bias(query, key, additive).dtype == torch.bfloat16


def test_the_unmasked_kind_builds_no_mask_for_a_batch_without_one(monkeypatch):
    """transformers' own check kept a mask hiding nothing when compiled with torch 2.11; its export branch keeps one
    the same way, which stands in for that here (the skip test that differed between torch versions)."""
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "is_torchdynamo_exporting", lambda: True)
    sizes = {"batch_size": 2, "q_length": 4, "kv_length": 4, "mask_function": masking.bidirectional_mask_function,
             "allow_is_bidirectional_skip": True}
    kept = masking.sdpa_mask(attention_mask=None, **sizes)
    assert kept is not None and kept.all()  # a mask that hides nothing
    assert unmasked_sdpa_mask(attention_mask=None, **sizes) is None
    padding = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(unmasked_sdpa_mask(attention_mask=padding, **sizes),
                               masking.sdpa_mask(attention_mask=padding, **sizes))
    # only a bidirectional mask that may be skipped at all is left out, and never a sliding window's (ModernBERT)
    assert unmasked_sdpa_mask(attention_mask=None, **(sizes | {"allow_is_bidirectional_skip": False})) is not None
    window = sizes | {"mask_function": masking.sliding_window_bidirectional_mask_function(2), "local_size": 2}
    torch.testing.assert_close(unmasked_sdpa_mask(attention_mask=None, **window),
                               masking.sdpa_mask(attention_mask=None, **window))
    assert not unmasked_sdpa_mask(attention_mask=None, **window).all()


def test_only_half_precision_queries_with_aligned_heads_take_the_fused_kernels():
    assert takes_fused(torch.zeros(2, 12, 16, 64, dtype=torch.bfloat16))
    assert takes_fused(torch.zeros(2, 12, 16, 256, dtype=torch.float16))
    assert not takes_fused(torch.zeros(2, 12, 16, 64))  # float32: flash attention has none
    assert not takes_fused(torch.zeros(2, 12, 16, 36, dtype=torch.bfloat16))  # not a multiple of 8
    assert not takes_fused(torch.zeros(2, 12, 16, 512, dtype=torch.bfloat16))  # above the kernels' 256


def test_fused_kernels_need_a_recent_cuda_gpu(monkeypatch):
    assert not fused_kernels_on("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # a T4
    assert not fused_kernels_on("cuda:0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100 / H200
    assert fused_kernels_on("cuda:0")


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown attention kind 'fast'"):
        fused_attention("fast")
