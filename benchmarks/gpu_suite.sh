#!/usr/bin/env bash
# Every GPU table of the Benchmarks page (docs/guides/benchmarks.md) in one run (GPU time is scarce: one prepared script, at most 12.5 minutes on
# one H100 with 16 CPU cores). Timed CUDA benchmarks run one after another on cores 0-5; the CPU
# TL-NODE table (single-thread processes, 3 seeds x 4 tasks) runs beside them on cores 6-15, so
# the two never share a core. Each part has its own time limit and writes its own table, so a part
# that fails or runs out of time costs only that table. Seven files in all (the device tool brings
# back at most eight): one table per part, errors.log (every part's stderr) and summary.txt.
#
#   bash benchmarks/gpu_suite.sh OUTDIR            # from the repository root
#   python benchmarks/tables.py OUTDIR/*.md        # afterwards: each table as CSV and JSON
set -u
out=$(realpath -m "${1:-benchmarks_out/gpu}")
mkdir -p "$out"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}

part() {  # part NAME SECONDS CORES COMMAND...: run, time-limited and pinned, into OUTDIR/NAME.md
    local name=$1 seconds=$2 cores=$3
    shift 3
    local start=$SECONDS
    taskset -c "$cores" timeout "$seconds" "$@" >"$out/$name.md" 2> >(sed "s/^/[$name] /" >>"$out/errors.log")
    echo "$name: exit $? after $((SECONDS - start)) s (124: out of time)" | tee -a "$out/summary.txt"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda)"
    nproc
} >"$out/summary.txt" 2>&1

part tlnode_cpu 420 6-15 "$python" bench_tlnode.py --jobs 10 &
part memory 110 0-5 "$python" bench_memory.py --device cuda
part gpu 130 0-5 "$python" bench_gpu.py --diffrax-problems large
part gpu_compiled 200 0-5 "$python" bench_gpu.py --problems large --diffrax-problems --compiled --cpp-wrapper
part overhead 150 0-5 "$python" bench_overhead.py --device cuda --diffrax-python "$python" --pretrain 100
part tlnode_gpu 150 0-5 "$python" bench_tlnode.py --device cuda --jobs 4 --seeds 0 --no-breakdown
wait
