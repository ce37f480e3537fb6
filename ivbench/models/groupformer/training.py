"""The paper's training objective and a minimal training loop.

Examples cover the four cross-modal tasks (s2s, s2t, t2s, t2t) and the text-first chain, each
told to the model by its system message. The loss is text cross-entropy over the assistant
tokens (text, `<sosp>`, `<speech>`, `<eosp>`, end of turn) plus group cross-entropy: at each
position whose next token is `<speech>`, the GroupModel predicts that group's G units (the last
group filled with the end-of-speech unit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from .chat import Message, SpecialIds, Speech
from .model import GroupFormer

TASKS = ("s2s", "s2t", "t2s", "t2t")


@dataclass
class Exchange:
    """One user turn and the reply to learn, in both modalities."""

    user_text: str
    user_units: Sequence[int]
    reply_text: str
    reply_units: Sequence[int]


def conversation(exchanges: Sequence[Exchange], task: str, prompts: dict[str, str],
                 text_first: bool = False) -> list[Message]:
    """A dialogue as messages for one task (text_first: speech replies carry their text first)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: one of {TASKS}")
    speech_in, speech_out = task[0] == "s", task[-1] == "s"
    kind = ("text_first" if text_first else "speech") if speech_out else "text"
    messages = [Message("system", [prompts[kind]])]
    for ex in exchanges:
        messages.append(Message("user", [Speech(tuple(ex.user_units))] if speech_in else [ex.user_text]))
        if not speech_out:
            reply: list[Any] = [ex.reply_text]
        elif text_first:
            reply = [ex.reply_text, Speech(tuple(ex.reply_units))]
        else:
            reply = [Speech(tuple(ex.reply_units))]
        messages.append(Message("assistant", reply))
    return messages


def all_conversations(exchanges: Sequence[Exchange], prompts: dict[str, str],
                      tasks: Iterable[str] = TASKS, text_first: bool = True) -> list[list[Message]]:
    """The four tasks, plus the text-first form of the speech-output ones."""
    out = []
    for task in tasks:
        out.append(conversation(exchanges, task, prompts))
        if text_first and task.endswith("s"):
            out.append(conversation(exchanges, task, prompts, text_first=True))
    return out


@dataclass
class Example:
    ids: list[int]
    groups: list[tuple[int, ...]]
    labels: list[int]  # labels[p]: the token to predict at position p (ids[p + 1]), or -100


def encode(model: GroupFormer, messages: Sequence[Message]) -> Example:
    """Token ids, groups and next-token labels; every assistant turn is learnt."""
    special = model.special
    full = model.render(messages)
    learn = [False] * len(full.ids)
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prefix = model.render(messages[:i], add_generation_prompt=True)
        upto = model.render(messages[: i + 1])
        start = len(prefix.ids)
        if upto.ids[:start] != prefix.ids or full.ids[: len(upto.ids)] != upto.ids:
            raise ValueError("the chat template does not render dialogues prefix by prefix")
        end = next((p for p in range(start, len(upto.ids)) if upto.ids[p] in special.stop), len(upto.ids) - 1)
        for p in range(start, end + 1):
            learn[p] = True
    labels = [full.ids[p + 1] if learn[p + 1] else -100 for p in range(len(full.ids) - 1)] + [-100]
    return Example(full.ids, full.groups, labels)


@dataclass
class Batch:
    ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    groups: Optional[torch.Tensor]  # (M, G), placeholders in row-major order
    labels: torch.Tensor  # (B, T)
    group_rows: torch.Tensor  # (N,) batch index of each position predicting a group
    group_cols: torch.Tensor  # (N,) its position
    group_targets: torch.Tensor  # (N, G)


def collate(examples: Sequence[Example], special: SpecialIds, pad_id: int, group_size: int,
            device: Any = "cpu") -> Batch:
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    groups: list[tuple[int, ...]] = []
    rows, cols, targets = [], [], []
    for b, e in enumerate(examples):
        n = len(e.ids)
        ids[b, :n] = torch.tensor(e.ids)
        mask[b, :n] = 1
        labels[b, :n] = torch.tensor(e.labels)
        groups.extend(e.groups)
        seen = 0
        for p in range(n - 1):
            if e.ids[p + 1] == special.speech:
                if e.labels[p] == special.speech:
                    rows.append(b)
                    cols.append(p)
                    targets.append(e.groups[seen])
                seen += 1
    return Batch(
        ids=ids.to(device), attention_mask=mask.to(device),
        groups=torch.tensor(groups, dtype=torch.long, device=device) if groups else None,
        labels=labels.to(device),
        group_rows=torch.tensor(rows, dtype=torch.long, device=device),
        group_cols=torch.tensor(cols, dtype=torch.long, device=device),
        group_targets=torch.tensor(targets, dtype=torch.long, device=device).reshape(-1, group_size),
    )


def groupformer_loss(model: GroupFormer, batch: Batch,
                     group_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Text cross-entropy + group_weight × group cross-entropy."""
    hidden = model(batch.ids, batch.groups, batch.attention_mask)
    logits = model.token_logits(hidden).float()
    text = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100)
    if batch.group_rows.numel():
        unit_logits = model.unit_logits(hidden[batch.group_rows, batch.group_cols]).float()
        group = F.cross_entropy(unit_logits.flatten(0, 1), batch.group_targets.flatten())
    else:
        group = hidden.new_zeros(())
    loss = text + group_weight * group
    return loss, {"loss": loss.item(), "text": text.item(), "group": group.item()}


def trainable_parameters(model: GroupFormer) -> list[torch.nn.Parameter]:
    """The LLM and the two heads; the speech tokenizer and the vocoder stay frozen."""
    params = list(model.llm.parameters()) + list(model.adaptor.parameters()) + list(model.group_model.parameters())
    return [p for p in params if p.requires_grad]


def train(model: GroupFormer, conversations: Sequence[Sequence[Message]], steps: int = 300, lr: float = 3e-3,
          batch_size: Optional[int] = None, group_weight: float = 1.0, seed: int = 0,
          weight_decay: float = 0.0, log_every: int = 0) -> list[dict[str, float]]:
    """A minimal loop: AdamW with linear warm-up and cosine decay over `steps` batches."""
    import math

    examples = [encode(model, c) for c in conversations]
    batch_size = batch_size or len(examples)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    history = []
    model.train()
    try:
        for step in range(steps):
            order = torch.randperm(len(examples), generator=generator)[:batch_size].tolist()
            batch = collate([examples[i] for i in order], model.special, pad_id, model.config.group_size,
                            model.device)
            loss, parts = groupformer_loss(model, batch, group_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable_parameters(model), 1.0)
            optimizer.step()
            schedule.step()
            history.append(parts)
            if log_every and step % log_every == 0:
                print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()))
    finally:
        model.eval()
    return history
