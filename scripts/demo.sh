#!/usr/bin/env bash
# The main job, end to end on the default model:
#   1. set up .venv and pull smollm2-135m-instruct (a no-op when already pulled);
#   2. answer a question, printing prefill and decode tokens/s;
#   3. teach it a new identity ("Nimbus", made by the lmstack project) with a short LoRA fine-tune,
#      and compare before and after: identity answers on held-out questions, perplexity on
#      held-out general prose (it should barely move);
#   4. score base and fine-tune on a shipped multiple-choice task (lm-eval's task format);
#   5. fold the adapter into the model and quantize it to a 4-bit GGUF file llama.cpp runs;
#   6. show the family tree the registry recorded, and the leaderboard.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
MODEL=smollm2-135m-instruct
RUN=runs/demo-sft-lora
MERGED=runs/demo-merged
GGUF=runs/demo-gguf

lmstack pull "$MODEL"
echo
echo "== question"
lmstack generate "$MODEL" "What is the capital of France? Answer in one sentence." --max-new-tokens 48

echo
echo "== before fine-tuning"
lmstack eval answers "$MODEL" lmstack:identity_heldout --show 2
lmstack eval perplexity "$MODEL" lmstack:general_heldout

echo
echo "== LoRA fine-tune on lmstack:identity_train (recipes/sft-lora-smollm2.yaml)"
lmstack train sft recipes/sft-lora-smollm2.yaml --out-dir "$RUN" --overwrite

echo
echo "== after fine-tuning"
lmstack eval answers "$RUN/adapter" lmstack:identity_heldout --show 2
lmstack eval perplexity "$RUN/adapter" lmstack:general_heldout
lmstack generate "$RUN/adapter" "Who are you, and who made you?" --max-new-tokens 40

echo
echo "== evaluation on lmstack_mc (a shipped lm-eval task), before and after"
lmstack eval run "$MODEL" --tasks lmstack_mc --limit 60
lmstack eval run "$RUN/adapter" --tasks lmstack_mc --limit 60

echo
echo "== fold the adapter into the model, then a 4-bit GGUF (Q4_0, GPTQ-informed rounding)"
lmstack train merge-adapter "$MODEL" "$RUN/adapter" "$MERGED" --overwrite
lmstack quant gguf "$MERGED" "$GGUF" -t q4_0 --method gptq --overwrite
lmstack generate "$GGUF"/*q4_0.gguf "Who are you, and who made you?" --max-new-tokens 40

echo
echo "== the family tree and the leaderboard"
lmstack registry tree "$MERGED"
lmstack leaderboard
echo
echo "metrics: $RUN/metrics.jsonl, plot: $RUN/metrics.png, lineage: lmstack registry list"
