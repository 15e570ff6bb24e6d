"""A minimal CPU supervised warm-up for tiny models (tests, quickstart fixtures), no verl.

Trains a causal LM on (question, tagged solution) pairs with the chat template, loss on the
assistant tokens only -- the same target verl's SFT trainer uses -- with plain torch AdamW. Real
phase-1 SFT runs through verl's trainer (``+recipe=rftt_sft``); this exists so a test can get a
model that writes tagged answers (and so gets varied rewards) in well under a minute.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence


def chat_pair_ids(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels = -100 on the prompt, the answer + EOS as targets."""
    from rftt_plugin.chat_prompt import chat_prompt_ids

    prompt = chat_prompt_ids(tokenizer, question)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt + answer_ids, [-100] * len(prompt) + answer_ids


def warm_up(model_dir: str | Path, out_dir: str | Path, pairs: Sequence[tuple[str, str]], *, steps: int = 400,
            batch_size: int = 16, lr: float = 3e-3, seed: int = 0, schedule: str = "constant",
            warmup_steps: int = 0, log: Callable[[str], None] | None = print) -> dict:
    """Fine-tune ``model_dir`` on ``pairs`` and save to ``out_dir``; returns first/last loss.

    ``schedule``: ``constant`` or ``cosine`` (linear warm-up over ``warmup_steps``, then cosine
    decay to 0, like verl's ``optim.lr_scheduler_type=cosine``).
    """
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    data = [chat_pair_ids(tok, q, a) for q, a in pairs]
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine' (got {schedule!r})")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        if schedule == "constant":
            return lr
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return lr * 0.5 * (1 + math.cos(math.pi * progress))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    losses = []
    for step in range(steps):
        batch = rng.sample(data, min(batch_size, len(data)))
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (x, y) in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x)
            labels[i, : len(y)] = torch.tensor(y)
            mask[i, : len(x)] = 1
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"warm-up step {step + 1}/{steps}: loss {losses[-1]:.3f}")
    model.eval()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"first_loss": losses[0], "last_loss": losses[-1], "steps": steps}


def warmed_arithmetic_model(base_dir: str | Path, out_dir: str | Path, *, n_train: int = 400, steps: int = 400,
                            seed: int = 0, log: Callable[[str], None] | None = print) -> dict:
    """Prepare nothing, just warm ``base_dir`` (already holding the tag tokens) on synthetic arithmetic."""
    from rftt_plugin.demo.synthetic import make_problems, tagged_solution

    problems = make_problems(n_train, seed=seed)
    rng = random.Random(seed)
    pairs = [(p.question, tagged_solution(p, self_correct=rng.random() < 0.2, rng=rng)) for p in problems]
    return warm_up(base_dir, out_dir, pairs, steps=steps, seed=seed, log=log)
