#!/usr/bin/env bash
# The GPU checks of one device session, in one go, from the repository root on a GPU machine:
#   1. tests/test_groupformer_cuda.py: CUDA graphs captured and replayed give what the
#      op-by-op path gives (memorised replies reproduced exactly; bf16 within tolerance);
#   2. benchmarks/speech_tokenizer_latency.py: mHuBERT + k-means op by op against graphed;
#   3. benchmarks/groupformer_latency.py: first packet, direct against text-first, CUDA-graph
#      engine (first: the figures that matter most) against dynamic, qwen2-7b shape in bf16
#      (the goals are printed; a line per configuration as it ends).
#
#     bash benchmarks/gpu_session.sh OUTDIR
#
# GPU machines without network may lack pytest, soundfile or soxr: wheels put in .device/wheels
# (git-ignored; the device tool carries it with carry=[".device"]) are installed then. Make them
# on a machine with the package index:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .device/wheels pytest soundfile soxr
set -u
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
for module in pytest soundfile soxr; do  # only what is missing; installed packages stay as they are
    python -c "import $module" 2>/dev/null || pip install -q --no-index --find-links .device/wheels "$module"
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$out/gpu.txt"
timeout 180 python -m pytest -q -p no:cacheprovider tests/test_groupformer_cuda.py 2>&1 | tee "$out/cuda_tests.txt"
timeout 120 python benchmarks/speech_tokenizer_latency.py --device cuda 2>&1 | tee "$out/speech_tokenizer.txt"
timeout "${LATENCY_TIMEOUT:-360}" python benchmarks/groupformer_latency.py --size qwen2-7b --device cuda \
    --engines graphs,dynamic --json "$out/groupformer_latency.json" 2>&1 | tee "$out/groupformer_latency.txt"
