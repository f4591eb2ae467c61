"""Pre-training: a tokenizer and a small Llama-style model from raw text, and the numbers around it.

    corpus.py              read text files, folders, JSONL, Parquet as documents; clean and dedup them
    tokenizer_training.py  byte-level BPE (`tokenizers`), compression report, vocabulary-size study
    shards.py              memory-mapped token shards with an index; windows; the unigram baseline
    pipeline.py            corpus -> shards, reused while nothing changed, recorded in the registry
    sizing.py              one depth knob -> width, heads, learning rate; FLOPs; initialisation
    recipe.py              pre-training defaults, and the input checks that run before torch loads
    run.py                 `lmstack train pretrain`: defaults, held-out perplexity, --sizes scaling fit
    landscape.py           loss along two random filter-normalised directions, plotted
    cli.py                 `lmstack tokenizer train`

The objective itself (next-token loss on windows) is `lmstack/train/pretrain.py`, on the shared
trainer core. Nothing is imported here, so the command line starts without torch.
"""
