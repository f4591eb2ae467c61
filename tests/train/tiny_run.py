"""A tiny training run driven from the command line, for tests that need a separate process
(SIGKILL and resume) or several (torchrun data parallel).

    python tests/train/tiny_run.py OUT_DIR --steps 8 --batch-size 4 [--grad-accum 1] [--lora-dropout 0.1]
        [--checkpoint-every 2] [--sleep 0.2] [--resume] [--distributed ddp|fsdp]

Writes OUT_DIR/final.pt: the trainable weights at the end (main process only). Tests that need
no separate process call `tiny_train` directly.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lmstack.data import TokenizedSample, pad_batch
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer
from lmstack.train.core import Plan, train
from lmstack.train.distributed import full_state_dict, joined_world
from lmstack.train.recipe import OptimizerSection, RunSection
from lmstack.train.sft import NextTokenLoss


def samples(n: int = 32) -> list[TokenizedSample]:
    g = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(n):
        length = int(torch.randint(6, 20, (1,), generator=g))
        ids = torch.randint(0, 64, (length,), generator=g).tolist()
        out.append(TokenizedSample(ids, [-100] * 3 + ids[3:]))
    return out


class SlowLoss(NextTokenLoss):
    """Sleeps per forward so a test has time to kill the process mid-run."""

    def __init__(self, sleep: float):
        self.sleep = sleep

    def __call__(self, model, batch):
        time.sleep(self.sleep)
        return super().__call__(model, batch)


def tiny_train(out_dir, *, steps: int = 8, batch_size: int = 4, grad_accum: int = 1, lora_dropout: float | None = None,
               checkpoint_every: int = 0, sleep: float = 0.0, resume: bool = False,
               distributed: str = "ddp") -> dict[str, torch.Tensor]:
    """Train the tiny model; return its trainable weights at the end (whole, even when sharded)."""
    torch.manual_seed(0)
    config = ModelConfig(family="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8)
    model = Transformer(config)
    if lora_dropout is not None:
        from lmstack.peft import LoraConfig, apply_lora

        apply_lora(model, LoraConfig(r=4, alpha=8, dropout=lora_dropout))
    run = RunSection(steps=steps, batch_size=batch_size, grad_accum=grad_accum, checkpoint_every=checkpoint_every,
                     out_dir=str(out_dir), seed=7, distributed=distributed)
    optimizer = OptimizerSection(lr=1e-2, warmup_steps=2, weight_decay=0.1)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    with joined_world("cpu") as world:
        train(model, Plan(SlowLoss(sleep), samples(), [], lambda batch: pad_batch(batch, pad_token_id=0)),
              optimizer=optimizer, run=run, world=world, device="cpu", precision="fp32", resume=resume)
        weights = full_state_dict(model, world)  # every process takes part; the main one gets the tensors
    return {name: weights[name].detach().clone() for name in trainable if name in weights}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lora-dropout", type=float, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--distributed", default="ddp", choices=("ddp", "fsdp"))
    args = vars(parser.parse_args())
    weights = tiny_train(args.pop("out_dir"), **args)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(weights, f"{parser.parse_args().out_dir}/final.pt")


if __name__ == "__main__":
    main()
