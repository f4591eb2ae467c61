#!/usr/bin/env bash
# Pre-training from scratch, offline, in minutes on a CPU:
#   1. gather a corpus that every machine has: a few packages of the Python standard library;
#   2. train a byte-level BPE tokenizer on it;
#   3. pre-train a depth-4 Llama-style model (width, heads and learning rate follow from depth),
#      and compare its held-out perplexity with the unigram baseline;
#   4. generate from it and plot its loss landscape.
# STEPS=1000 ./scripts/pretrain_demo.sh trains longer (default 400: a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RUN=runs/demo-pretrain
CORPUS=runs/demo-corpus
STDLIB=$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
rm -rf "$CORPUS" && mkdir -p "$CORPUS"
for package in json email logging importlib urllib http asyncio unittest concurrent/futures xml/dom; do
  cp -r "$STDLIB/$package" "$CORPUS/${package//\//_}"
done

echo "== tokenizer (4k vocabulary; bytes per token on held-out files)"
lmstack tokenizer train "$CORPUS" "$RUN-tokenizer" --vocab-size 4k --overwrite

echo
echo "== pre-training, depth 4: held-out perplexity vs the unigram baseline"
lmstack train pretrain --data "$CORPUS" --tokenizer "$RUN-tokenizer" --depth 4 --steps "${STEPS:-400}" \
  --max-len 256 --batch-size 8 --out-dir "$RUN" --overwrite

echo
echo "== what it writes, and the loss around it"
lmstack generate "$RUN/model" "def parse(" --raw --max-new-tokens 40
lmstack train landscape "$RUN/model" "$RUN/data" "$RUN/landscape.png" --points 9 --overwrite
echo "metrics: $RUN/metrics.png, landscape: $RUN/landscape.png, lineage: lmstack registry list"
