"""Knowledge distillation: a smaller student learns the teacher's whole next-token distribution,
not just the one token the data shows.

Per trained token the loss is

    kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - kd_weight) * cross-entropy

(forward KL, Hinton et al. 2015). A temperature T > 1 softens both distributions, so the student
also learns which wrong tokens the teacher finds plausible; T^2 keeps the KL's gradients at the
scale of the cross-entropy's. kd_weight 0 is plain training on the same data: the baseline a
distilled student is compared with (its KL to the teacher is still measured and logged). The
teacher runs frozen, without gradients, beside the student.

The data is what SFT takes (chat or text records) or what pre-training takes (a corpus or shard
folder). The student is `model.ref`, or a model sized from scratch by `model.depth` for
`model.tokenizer`; it must share the teacher's vocabulary. The result records the student, the
teacher and the data as its parents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmstack import registry
from lmstack.data import dataset_path
from lmstack.data.io import SUPPORTED_SUFFIXES
from lmstack.errors import LmstackError
from lmstack.hub.load import ModelBundle, load_model
from lmstack.pretrain.shards import is_shard_dir
from lmstack.train import pretrain, sft
from lmstack.train.core import Batch, Plan
from lmstack.train.recipe import Recipe
from lmstack.train.samples import check_dataset_files, scored_positions


class DistillLoss:
    """The mixed KD + cross-entropy loss, summed over trained tokens."""

    def __init__(self, teacher: torch.nn.Module, temperature: float, kd_weight: float):
        self.teacher, self.temperature, self.kd_weight = teacher.eval().requires_grad_(False), temperature, kd_weight

    def count(self, batch: Batch) -> int:
        return sft.NextTokenLoss().count(batch)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        at = scored_positions(batch["labels"])
        inputs = {"attention_mask": batch.get("attention_mask"), "position_ids": batch.get("position_ids"),
                  "segment_ids": batch.get("segment_ids"), "logits_at": at}
        logits = model(batch["input_ids"], **inputs)
        targets = batch["labels"][:, 1:][at[:, :-1]]
        ce = F.cross_entropy(logits, targets, reduction="sum")
        if next(self.teacher.parameters()).device != logits.device:
            self.teacher.to(logits.device)
        with torch.no_grad():
            teacher_logits = self.teacher(batch["input_ids"], **inputs)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      log_target=True, reduction="sum")
        loss = self.kd_weight * t * t * kl + (1 - self.kd_weight) * ce
        return loss, {"ce": ce.detach(), "kl": kl.detach()}  # both logged, so runs with and without KD compare


def uses_corpus(recipe: Recipe) -> bool:
    """Whether the data is a pre-training corpus (windows of tokens) rather than records (samples)."""
    path = dataset_path(recipe.data.train)
    return is_shard_dir(path) or path.is_dir() or path.suffix.lower() not in SUPPORTED_SUFFIXES


def check_inputs(recipe: Recipe) -> None:
    if not recipe.objective.teacher:
        raise LmstackError("distillation needs a teacher; set objective.teacher (a model reference)")
    if not recipe.data.train:
        raise LmstackError("the recipe names no training data; set data.train (a file, a folder or lmstack:NAME)")
    (pretrain.check_inputs if uses_corpus(recipe) else check_dataset_files)(recipe)


def plan(bundle: ModelBundle, recipe: Recipe) -> Plan:
    """The student's data plan (as pre-training or SFT would make it) with the distillation loss."""
    teacher = load_model(recipe.objective.teacher, device="cpu", dtype="fp32")
    if teacher.tokenizer.backend.get_vocab() != bundle.tokenizer.backend.get_vocab():
        raise LmstackError(f"the teacher {teacher.name} and the student {bundle.name} have different vocabularies; "
                           "distillation compares their distributions token by token, so they must share one")
    corpus = uses_corpus(recipe)
    base = pretrain.plan(bundle, recipe) if corpus else sft.plan(bundle, recipe)
    data_parent = [] if corpus else [registry.id_for(dataset_path(recipe.data.train), kind="dataset")]
    student_parents = base.parents or [bundle.lineage_id()]
    base.objective = DistillLoss(teacher.model, recipe.objective.temperature, recipe.objective.kd_weight)
    base.parents = [*student_parents, teacher.lineage_id(), *data_parent]
    return base
