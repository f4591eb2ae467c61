"""lmstack as a model backend of lm-evaluation-harness:

    lm_eval --model lmstack --model_args model=smollm2-135m-instruct,dtype=fp32 --tasks TASK.yaml

`LmstackLM` answers the harness's three request kinds with lmstack's own code: `loglikelihood`
through the shared-context scoring engine, `loglikelihood_rolling` through strided windows
(every token predicted once), `generate_until` through the generation engine. lmstack's
pyproject registers it under the `lm_eval.models` entry-point group, which lm-eval versions with
plugin discovery read by themselves. lm-eval 0.4.13 does not read it yet; for it,
`python -m lmstack.eval.harness ARGS` is `lm_eval ARGS` with the entry points registered first.

This module imports lm-eval, so only lm-eval (or that launcher) imports it.
"""

from __future__ import annotations

import sys
from typing import Any

from lm_eval.api.model import TemplateLM

from lmstack.eval.likelihood import rolling_loglikelihoods, score_requests
from lmstack.eval.run import encode_text
from lmstack.hub.load import load_model


class LmstackLM(TemplateLM):
    """`--model_args model=REF[,adapter=DIR,dtype=fp32,window=2048,stride=1024,max_gen_toks=256]`."""

    def __init__(self, model: str, adapter: str | None = None, dtype: str | None = None, device: str | None = None,
                 batch_size: int | str = 16, max_batch_size: int | None = None, window: int = 2048,
                 stride: int = 1024, max_gen_toks: int = 256, **unused: Any):
        super().__init__()
        import torch

        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = None  # the harness's command line says cuda by default; like its hf backend, fall back
        self.bundle = load_model(model, device=device, dtype=dtype, adapter=adapter)
        # "auto" asks the harness to search for the largest batch; a fixed default is simpler and sorted batches
        # keep padding small anyway.
        self.batch_size = 16 if str(batch_size).startswith("auto") else int(batch_size)
        self.window, self.stride, self.max_gen_toks = int(window), int(stride), int(max_gen_toks)

    @property
    def tokenizer(self):
        return self.bundle.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return self.bundle.name.replace("/", "__")

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.bundle.config.max_position_embeddings

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        if add_special_tokens is None:
            return encode_text(self.tokenizer, string)
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        return score_requests(self.bundle.model, pairs, batch_size=self.batch_size)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        ids = [[self.prefix_token_id, *self.tok_encode(r.args[0], add_special_tokens=False)] for r in requests]
        totals = rolling_loglikelihoods(self.bundle.model, ids, window=self.window, stride=self.stride,
                                        batch_size=self.batch_size)
        return [total for total, _ in totals]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from lmstack.generate.text import generate_text

        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}  # requests with the same generation settings run together
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.pop("until", None) or []
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            sampling = {k: kwargs[k] for k in ("temperature", "top_p", "top_k") if k in kwargs}
            if not kwargs.get("do_sample", False):
                sampling["temperature"] = 0.0
            indices.sort(key=lambda i: -len(self.tok_encode(requests[i].args[0])))
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                prompts = [self._plain_prompt(requests[i].args[0]) for i in batch]
                results = generate_text(self.bundle, prompts, raw=True, max_new_tokens=max_new,
                                        stop=[until] if isinstance(until, str) else until, **sampling)
                for i, result in zip(batch, results):
                    answers[i] = result.text
        return answers  # type: ignore[return-value]

    def _plain_prompt(self, text: str) -> str:
        """Raw generation encodes with the model's BOS; drop one a chat template already wrote."""
        bos = self.tokenizer.special_tokens.get("bos_token")
        return text[len(bos):] if bos and self.tokenizer.add_bos_token and text.startswith(bos) else text

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)


def register_entry_points() -> list[str]:
    """Register every `lm_eval.models` entry point with lm-eval (what newer lm-eval does itself)."""
    from importlib.metadata import entry_points

    from lm_eval.api.registry import model_registry

    import lm_eval.models  # noqa: F401  (fills the registry with the built-in backends first)

    added = []
    for entry in entry_points(group="lm_eval.models"):
        if entry.name not in model_registry:
            model_registry.register(entry.name, target=entry)
            added.append(entry.name)
    return added


def main() -> None:
    """`lm_eval` with the entry points registered: `python -m lmstack.eval.harness --model lmstack ...`."""
    from lm_eval.__main__ import cli_evaluate

    register_entry_points()
    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
