"""Preference alignment: DPO and its relatives, learning from "this answer is better than that one".

Every loss compares how much more likely the policy makes an answer than the reference model
does, r = log pi(y|x) - log pi_ref(y|x) (a sum over the answer's tokens), with temperature beta:

    DPO (sigmoid)  -log sigmoid(beta * (r_chosen - r_rejected))
    IPO            (r_chosen - r_rejected - 1 / (2 beta))^2        (a margin, not an ever-growing gap)
    cDPO           DPO assuming each label is wrong with probability eps (label smoothing)
    KTO            unpaired: a desirable answer is pushed above, an undesirable one below, a KL
                   baseline z; here z = max(0, batch mean of r), held constant in backward
    ORPO           no reference: the SFT loss on the chosen answer plus beta times
                   -log sigmoid(log odds(chosen) - log odds(rejected)), with per-token mean
                   log-probs p and odds p / (1 - p)

The reference log-probs are computed once, before training, with the starting model, and stored
with each sample; no second model is kept in memory. With LoRA the starting model is exactly the
base with its adapters switched off, since new adapters start as a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmstack.data import (TokenizedSample, load_dataset, pad_batch, tokenize_conversation,
                          tokenize_preference)
from lmstack.device import resolve_device
from lmstack.errors import LmstackError
from lmstack.hub.load import ModelBundle
from lmstack.train.core import Batch, Plan, autocast
from lmstack.train.recipe import ObjectiveSection, Recipe
from lmstack.train.samples import pad_token_id, scored_positions, split_validation

PAIRED_LOSSES = ("sigmoid", "ipo", "cdpo", "orpo")
LOSSES = (*PAIRED_LOSSES, "kto")


# --- the losses, on log-probs (pure functions, checked against formulas and trl) --------------------


def paired_loss(kind: str, chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair DPO / IPO / cDPO loss from summed sequence log-probs."""
    gap = (chosen - ref_chosen) - (rejected - ref_rejected)
    if kind == "sigmoid":
        return -F.logsigmoid(beta * gap)
    if kind == "cdpo":
        return -(1 - label_smoothing) * F.logsigmoid(beta * gap) - label_smoothing * F.logsigmoid(-beta * gap)
    if kind == "ipo":
        return (gap - 1 / (2 * beta)) ** 2
    raise LmstackError(f"unknown preference loss '{kind}'; use sigmoid, ipo, cdpo, kto or orpo")


def kto_loss(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """Per-sample KTO loss; `desirable` is a bool tensor, `kl` the (detached) reference point z."""
    reward = policy - reference
    return torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (reward - kl))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (kl - reward))))


def orpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair ORPO loss, log odds ratio) from per-token mean log-probs of chosen and rejected."""
    log_odds = (chosen_mean - rejected_mean) - (torch.log1p(-torch.exp(chosen_mean)) - torch.log1p(-torch.exp(rejected_mean)))
    return -chosen_mean - beta * F.logsigmoid(log_odds), log_odds


# --- log-probs of answers -----------------------------------------------------------------------


def sequence_logps(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the labelled tokens' log-probs, number of labelled tokens), one per row."""
    at = scored_positions(batch["labels"])
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], logits_at=at)
    token_logps = -F.cross_entropy(logits, batch["labels"][:, 1:][at[:, :-1]], reduction="none")
    rows = at.nonzero()[:, 0]
    sums = torch.zeros(at.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return sums, at.sum(-1)


# --- samples and batches --------------------------------------------------------------------------


@dataclass
class Completion:
    """One answer with its prompt: tokens, whether it is the preferred one, reference log-prob."""

    tokens: TokenizedSample
    desirable: bool
    reference_logp: float = 0.0


def preference_samples(tokenizer: Any, ref: str, recipe: Recipe) -> list[list[Completion]]:
    """Pairs [chosen, rejected] for the paired losses; single completions [c] for KTO."""
    dataset = load_dataset(ref)
    options = {"template": recipe.data.template, "max_len": recipe.data.max_len}
    if dataset.kind == "preference":
        pairs = [tokenize_preference(tokenizer, r, **options) for r in dataset.records]
        if recipe.objective.loss == "kto":  # a pair is two unpaired examples
            return [[Completion(c, True)] for c, _ in pairs] + [[Completion(r, False)] for _, r in pairs]
        return [[Completion(c, True), Completion(r, False)] for c, r in pairs]
    if dataset.kind == "kto" and recipe.objective.loss == "kto":
        return [[Completion(tokenize_conversation(tokenizer, r["prompt"] + [{"role": "assistant",
                                                                              "content": r["completion"]}],
                                                  last_turn_only=True, **options), bool(r["label"]))]
                for r in dataset.records]
    raise LmstackError(f"{ref} holds {dataset.kind} records; --loss {recipe.objective.loss} needs "
                       + ("preference or kto records" if recipe.objective.loss == "kto" else "{prompt, chosen, rejected}"))


def collate_completions(groups: list[list[Completion]], pad: int) -> Batch:
    """Rows in order: every group's first completion, then every group's second (chosen then rejected)."""
    completions = [group[i] for i in range(len(groups[0])) for group in groups]
    batch = pad_batch([c.tokens for c in completions], pad_token_id=pad)
    batch["reference_logp"] = torch.tensor([c.reference_logp for c in completions], dtype=torch.float32)
    batch["desirable"] = torch.tensor([c.desirable for c in completions])
    return batch


@torch.no_grad()
def add_reference_logps(model: torch.nn.Module, groups: list[list[Completion]], pad: int, device: str,
                        batch_size: int, precision: str = "auto") -> None:
    """Store the starting model's log-prob of every completion (once, before any training step)."""
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    for at in range(0, len(groups), batch_size):
        chunk = groups[at : at + batch_size]
        batch = {k: v.to(torch_device) for k, v in collate_completions(chunk, pad).items()}
        with autocast(torch_device, precision):
            logps, _ = sequence_logps(model, batch)
        completions = [group[i] for i in range(len(chunk[0])) for group in chunk]
        for completion, logp in zip(completions, logps.tolist()):
            completion.reference_logp = logp


# --- the objective --------------------------------------------------------------------------------


class PreferenceLoss:
    """The loop's objective: per-pair (or per-completion for KTO) losses, summed, with rewards."""

    def __init__(self, settings: ObjectiveSection):
        self.settings = settings

    def count(self, batch: Batch) -> int:
        rows = batch["input_ids"].shape[0]
        return rows if self.settings.loss == "kto" else rows // 2

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.settings
        logps, lengths = sequence_logps(model, batch)
        if s.loss == "kto":
            rewards = logps - batch["reference_logp"]
            kl = rewards.mean().clamp(min=0).detach()
            losses = kto_loss(logps, batch["reference_logp"], batch["desirable"], kl, s.beta, s.desirable_weight,
                              s.undesirable_weight)
            return losses.sum(), {"reward": (s.beta * rewards).sum().detach(), "kl": kl * len(rewards)}
        chosen, rejected = logps.chunk(2)
        if s.loss == "orpo":
            mean_chosen, mean_rejected = (logps / lengths.clamp(min=1)).chunk(2)
            losses, log_odds = orpo_loss(mean_chosen, mean_rejected, s.beta)
            reward_chosen, reward_rejected = s.beta * mean_chosen.detach(), s.beta * mean_rejected.detach()
            extra = {"log_odds": log_odds.sum().detach(), "nll": -mean_chosen.sum().detach()}
        else:
            ref_chosen, ref_rejected = batch["reference_logp"].chunk(2)
            losses = paired_loss(s.loss, chosen, rejected, ref_chosen, ref_rejected, s.beta, s.label_smoothing)
            reward_chosen = s.beta * (chosen - ref_chosen).detach()
            reward_rejected = s.beta * (rejected - ref_rejected).detach()
            extra = {}
        return losses.sum(), {"reward_chosen": reward_chosen.sum(), "reward_rejected": reward_rejected.sum(),
                              "reward_margin": (reward_chosen - reward_rejected).sum(),
                              "accuracy": (reward_chosen > reward_rejected).float().sum(), **extra}


def plan(bundle: ModelBundle, recipe: Recipe) -> Plan:
    """The preference plan: pairs (or KTO singles) with the starting model's reference log-probs."""
    pad = pad_token_id(bundle.tokenizer)
    train_groups = preference_samples(bundle.tokenizer, recipe.data.train, recipe)
    if recipe.data.val:
        val_groups = preference_samples(bundle.tokenizer, recipe.data.val, recipe)
    else:
        train_groups, val_groups = split_validation(train_groups, recipe.data.val_fraction, recipe.run.seed)
    if recipe.objective.loss != "orpo":  # ORPO needs no reference
        add_reference_logps(bundle.model, train_groups + val_groups, pad, recipe.model.device, recipe.run.batch_size,
                            recipe.model.precision)
    return Plan(PreferenceLoss(recipe.objective), train_groups, val_groups,
                lambda groups: collate_completions(groups, pad))
