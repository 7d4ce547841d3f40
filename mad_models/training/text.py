"""Text data for the causal-LM jobs: token blocks, prompt/answer examples, padding, exact match."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from mad_models.mad.tasks import IGNORE


class ListDataset(Dataset):
    """A list of dicts of tensors as a Dataset."""

    def __init__(self, items: list[dict[str, torch.Tensor]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def token_blocks(ids: torch.Tensor | Sequence[int], block_size: int) -> ListDataset:
    """Cut one long token stream into ``block_size`` blocks for causal-LM loss (labels = inputs).

    Example:
        >>> ds = token_blocks(list(range(100)), 32)
        >>> len(ds), ds[0]["input_ids"].shape
        (3, torch.Size([32]))
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    n = ids.numel() // block_size
    if n == 0:
        raise ValueError(f"{ids.numel()} tokens do not fill one block of {block_size}")
    blocks = ids[: n * block_size].view(n, block_size)
    return ListDataset([{"input_ids": b, "labels": b.clone()} for b in blocks])


def text_blocks(texts: Sequence[str], tokenizer, block_size: int) -> ListDataset:
    """Tokenise texts (each as a whole string; EOS between them) and cut the stream into blocks."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for t in texts:
        # verbose=False: a whole text is longer than model_max_length on purpose (it is cut into blocks)
        stream += tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] + eos
    return token_blocks(stream, block_size)


def prompt_answer_examples(
    prompts: Sequence[str], answers: Sequence[str], tokenizer, max_len: int = 128, *, chat: bool = False
) -> ListDataset:
    """Causal-LM examples scored only on the answer (and EOS): labels -100 on the prompt.

    ``chat=True`` wraps each prompt in the tokenizer's chat template as the user turn (what
    ``mad_models.training.exact_match`` shows the model at evaluation), so train and eval formats agree.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if chat:
        from mad_models.training.exact_match import chat_prompt

        prompts = [chat_prompt(tokenizer, p) for p in prompts]
    items = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for p, a in zip(prompts, answers, strict=True):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"] + eos
        ids = (p_ids + a_ids)[:max_len]
        labels = ([IGNORE] * len(p_ids) + a_ids)[:max_len]
        items.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)})
    return ListDataset(items)


def pad_collate(pad_id: int = 0):
    """Collate dicts of 1-D tensors by right-padding (labels with -100) and adding an attention mask."""

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key in items[0]:
            vals = [it[key] for it in items]
            if vals[0].dim() == 0:
                out[key] = torch.stack(vals)
                continue
            fill = IGNORE if key == "labels" else (0 if key == "attention_mask" else pad_id)
            out[key] = torch.nn.utils.rnn.pad_sequence(vals, batch_first=True, padding_value=fill)
        if "attention_mask" not in out and items[0]["input_ids"].dim() == 1:
            lengths = torch.tensor([len(it["input_ids"]) for it in items])
            out["attention_mask"] = (torch.arange(out["input_ids"].shape[1]) < lengths[:, None]).long()
        return out

    return collate


def load_jsonl(path, tokenizer=None, *, block_size: int = 256, max_len: int = 256) -> ListDataset:
    """A JSONL file as a training dataset. Each row is one of:

    - ``{"input_ids": [...], "labels": [...]}``: already tokenised (labels optional: = input_ids);
    - ``{"prompt": ..., "answer": ...}``: causal LM scored on the answer only; the prompt is wrapped in
      the tokenizer's chat template when it has one (the format ``more eval`` shows the model);
    - ``{"text": ..., "label": int}``: classification;
    - ``{"text": ...}``: general text, concatenated and cut into ``block_size`` blocks.
    All rows of a file must have the same kind. Text rows need ``tokenizer``.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    if not rows:
        raise ValueError(f"data file {path} has no rows")
    kinds = {("input_ids" in r, "prompt" in r, "label" in r, "text" in r) for r in rows}
    if len(kinds) != 1:
        raise ValueError(f"{path}: rows mix different kinds (keys {sorted({k for r in rows for k in r})})")
    if "input_ids" in rows[0]:
        items = []
        for r in rows:
            ids = torch.tensor(r["input_ids"], dtype=torch.long)
            labels = torch.tensor(r.get("labels", r["input_ids"]), dtype=torch.long)
            items.append({"input_ids": ids, "labels": labels})
        return ListDataset(items)
    if tokenizer is None:
        raise ValueError(f"{path} holds text; give a tokenizer (--tokenizer) to tokenise it")
    if "prompt" in rows[0]:
        if any("answer" not in r for r in rows):
            raise ValueError(f"{path}: every prompt row needs an 'answer'")
        return prompt_answer_examples(
            [r["prompt"] for r in rows],
            [r["answer"] for r in rows],
            tokenizer,
            max_len,
            chat=bool(getattr(tokenizer, "chat_template", None)),
        )
    if "text" not in rows[0]:
        raise ValueError(
            f"{path}: rows need 'input_ids', 'prompt'/'answer', or 'text' (+ 'label'); got {sorted(rows[0])}"
        )
    if "label" in rows[0]:
        items = []
        for r in rows:
            ids = tokenizer(r["text"], truncation=True, max_length=max_len)["input_ids"]
            items.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(int(r["label"]))})
        return ListDataset(items)
    return text_blocks([r["text"] for r in rows], tokenizer, block_size)
