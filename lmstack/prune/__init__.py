"""Pruning: a smaller model cut from a bigger one by structure (ShortGPT, LLM-Pruner style).

    importance.py  block influence of layers, importance of attention heads and MLP channels
    surgery.py     the config and weights without the dropped layers, heads or channels
    run.py         `lmstack prune`: measure, cut, heal, the quality table, the registry record
    cli.py         `lmstack prune MODEL OUT`
"""
