"""SFT's training examples: each abstract becomes the prompt `llmcls zeroshot` would send and its gold labels the
target (`prompts.build_completion`: the answer prefix, the labels in label-space order or shuffled with
--shuffle_label_order, the end of the turn), tokenised as at inference, with the loss on the target only and every
example fitted to --max_length and the model's positions by cutting the abstract (`prompts.fit_abstract`).
"""

from __future__ import annotations

import random

from llmcls.corpus import Corpus
from llmcls.progress import console
from llmcls.sft_args import SFTScriptArguments


def load_training_tokenizer(model_args, training_args):
    from llmcls.backends.loading import load_tokenizer, resolve_model
    from llmcls.model_paths import model_errors

    path = resolve_model(model_args.model_name_or_path)
    with model_errors(path):
        tokenizer = load_tokenizer(path, trust_remote_code=training_args.trust_remote_code)
    tokenizer.padding_side = "right"  # training pads on the right; generation (evaluate) switches to left
    return tokenizer


def model_positions(model_args, training_args) -> int | None:
    """The most tokens the model takes (its config's max_position_embeddings), when it says."""
    from transformers import AutoConfig

    from llmcls.backends.loading import positions_of, resolve_model
    from llmcls.model_paths import model_errors

    path = resolve_model(model_args.model_name_or_path)
    with model_errors(path):
        return positions_of(AutoConfig.from_pretrained(path, trust_remote_code=training_args.trust_remote_code))


def build_sft_dataset(corpus: Corpus, split: str, tokenizer, script_args: SFTScriptArguments, training_args,
                      max_positions: int | None = None):
    """`input_ids` and `labels` (-100 on the prompt) for every row of `split`, each within --max_length and the
    model's positions."""
    import datasets

    from llmcls.backends import encode_prompts
    from llmcls.backends.constrained import common_suffix, continuation_ids
    from llmcls.prompts import (
        CHAT_OPTION,
        build_completion,
        build_prompt,
        load_template,
        parse_template_kwargs,
        render_user_message,
    )

    space, ds = corpus.label_space, corpus.get(split)
    template = load_template(script_args.prompt)
    chat = CHAT_OPTION[script_args.chat]
    template_kwargs = parse_template_kwargs(script_args.chat_template_kwargs)
    rng = random.Random(training_args.seed)

    def prompt(title: str | None, abstract: str) -> str:
        message = render_user_message(template, title=title, abstract=abstract, label_space=space)
        return build_prompt(tokenizer, message, chat=chat, template_kwargs=template_kwargs)

    rows_in = list(zip(ds["title"], ds["abstract"], ds["labels"], strict=True))
    completions = []
    for _, _, labels in rows_in:
        ordered = [lab for lab in space.labels if lab in set(labels)]
        if script_args.shuffle_label_order and split == "train":  # validation's eval_loss: the order inference asks
            rng.shuffle(ordered)
        completions.append(build_completion(tokenizer, ordered, chat=chat, template_kwargs=template_kwargs))
    prompts = [prompt(title, abstract) for title, abstract, _ in rows_in]
    prompt_ids = encode_prompts(tokenizer, prompts)
    # the answer's ids as they follow the prompt (a SentencePiece tokenizer marks a word start that the answer alone
    # would get as an extra token), from the prompts' common tail: what constrained decoding and score mode use
    context = common_suffix(prompts)
    completion_ids = [continuation_ids(tokenizer, context, completion) for completion in completions]
    limits = [n for n in (training_args.max_length, max_positions) if n]
    limit = min(limits, default=None)
    what = (f"--max_length {limit}" if limit == training_args.max_length
            else f"the model's {limit} positions (max_position_embeddings)")
    rows, cut = [], 0
    for (title, abstract, _), p_ids, c_ids in zip(rows_in, prompt_ids, completion_ids, strict=True):
        room = None if limit is None else limit - len(c_ids)
        if room is not None and len(p_ids) > room:  # the answer and its end token are never cut: the abstract is
            p_ids = fit_prompt(lambda text, title=title: encode_prompts(tokenizer, [prompt(title, text)])[0],
                               abstract, room, limit, what)
            cut += 1
        rows.append({"input_ids": p_ids + c_ids, "labels": [-100] * len(p_ids) + c_ids})
    if cut:
        console.print(f"note: {split}: {cut} prompts cut to fit {what} (the end of the abstract is dropped, the "
                      "answer kept)")
    return datasets.Dataset.from_list(rows)


def fit_prompt(encode, abstract: str, room: int, max_length: int, what: str) -> list[int]:
    """The token ids of the prompt (`encode(abstract)`) with the abstract shortened, from its end, until the prompt
    takes at most `room` tokens of `max_length` (`what`: --max_length or the model's positions)."""
    from llmcls.prompts import fit_abstract

    advice = ("raise --max_length or " if what.startswith("--") else "") + ("use a shorter prompt (--prompt compact "
                                                                            "leaves out the label list)")
    return encode(fit_abstract(abstract, lambda text: len(encode(text)), room, limit=what,
                               answer=str(max_length - room), advice=advice))
