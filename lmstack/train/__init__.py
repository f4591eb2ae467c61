"""Post-training: supervised fine-tuning and preference alignment, on one small shared loop.

    recipe.py       YAML recipes and command-line overrides
    core.py         the loop: AdamW, schedule, accumulation, clipping, eval, early stopping, resume
    checkpoint.py   exact, atomic checkpoints (weights, optimizer, scheduler, RNG, step, metrics)
    distributed.py  torchrun data parallelism (DDP; FSDP on GPUs)
    metrics.py      metrics.jsonl, TensorBoard events, metrics.png
    samples.py      the data a recipe names, tokenized
    method.py       full / LoRA / DoRA / QLoRA, and what a run saves and records
    sft.py          supervised fine-tuning (masked next-token cross-entropy)
    preference.py   DPO, IPO, cDPO, KTO, ORPO
    rejection.py    preference pairs from the model's own best and worst answers
    merge.py        fold an adapter into its base model
    cli.py          `lmstack train ...`

Nothing is imported here, so `lmstack train --help` starts without torch.
"""
