"""The six MAD synthetic tasks as vectorised, seeded generators.

Every generator returns ``(inputs, targets)``: two LongTensors of shape (N, T). ``targets[n, t]`` is
the token a causal model should predict *at* position t (already shifted, so do not pass it to a
Hugging Face model as ``labels``, which shifts again); -100 marks positions that are not scored.

Conventions shared with the MAD reference (mad-lab), so numbers are comparable:
- recall tasks draw keys from the lower half of the (key/value) vocabulary and values from the upper
  half, with a fresh random mapping in every sequence; noise tokens come from the top of the vocab;
- copying and compression reserve ``vocab_size - 1`` (copy / compress token) and ``vocab_size - 2``
  (blank token); memorization reserves ``vocab_size - 1`` as the insert token.

Differences from the reference, on purpose:
- sequences are exactly ``seq_len`` long (the reference's recall returned ``seq_len - 1``);
- selective copying honours ``num_tokens_to_copy`` and draws blank positions from the seeded
  generator (the reference used the unseeded global numpy RNG);
- the train split scores every value (recall) so no capacity is spent on random keys; the test split
  scores only probed values (multi-query probing);
- compression is posed for causal LMs: the sequence, a compress token, then blanks at which the
  sequence must be reproduced in order (the reference used a separate auto-encoder head).
"""

from __future__ import annotations

import torch

IGNORE = -100

# name -> default settings (spec: shared/specs/mad.md).
DEFAULTS: dict[str, dict] = {
    "in_context_recall": dict(vocab_size=16, seq_len=128, num_train_examples=12_800),
    "fuzzy_recall": dict(
        vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3, num_keys=8, num_train_examples=12_800
    ),
    "noisy_recall": dict(
        vocab_size=32, seq_len=128, noise_vocab_size=16, frac_noise=0.2, num_train_examples=12_800
    ),
    "selective_copying": dict(vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train_examples=12_800),
    "compression": dict(vocab_size=16, seq_len=32, num_train_examples=12_800),
    "memorization": dict(vocab_size=256, seq_len=32, kv_map_seed=12345, num_train_examples=256),
}

# name -> {setting: harder values}; vary one at a time from the defaults (MAD score = mean over them).
HARDER: dict[str, dict[str, list]] = {
    "in_context_recall": dict(
        vocab_size=[32, 64, 128], seq_len=[256, 512, 1024], num_train_examples=[6_400, 3_200, 1_600, 800]
    ),
    "fuzzy_recall": dict(
        vocab_size=[32, 64, 128], seq_len=[256, 512, 1024], num_train_examples=[6_400, 3_200, 1_600, 800]
    ),
    "noisy_recall": dict(vocab_size=[48, 80, 144], frac_noise=[0.4, 0.6, 0.8]),
    "selective_copying": dict(vocab_size=[32, 64, 128], seq_len=[512, 1024], num_tokens_to_copy=[32, 64, 96]),
    "compression": dict(vocab_size=[32, 64, 128], seq_len=[64, 128, 256]),
    "memorization": dict(vocab_size=[512, 1024, 2048, 4096, 8192]),
}

NUM_TEST_EXAMPLES = 1_280
TEST_SEED = 12345


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_frac(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _seen_before(ids: torch.Tensor, num_ids: int, valid: torch.Tensor) -> torch.Tensor:
    """(N, P) ids -> (N, P) bool: id already occurred at an earlier valid position of the same row."""
    onehot = torch.nn.functional.one_hot(ids, num_ids) * valid.unsqueeze(-1)  # (N, P, K)
    before = onehot.cumsum(1) - onehot  # exclusive prefix count
    return before.gather(2, ids.unsqueeze(-1)).squeeze(-1) > 0


def _shift(tokens: torch.Tensor, scored: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, >=T+1) stream + mask of scored tokens -> inputs (N, T), next-token targets (N, T)."""
    inputs = tokens[:, :seq_len].clone()
    nxt = tokens[:, 1 : seq_len + 1]
    targets = torch.where(scored[:, 1 : seq_len + 1], nxt, torch.full_like(nxt, IGNORE))
    return inputs, targets


def recall(
    num_examples: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 128,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
    test: bool = False,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """In-context recall (``frac_noise=0``) and noisy recall: k v k v ... with noise pairs mixed in."""
    _check_int("num_examples", num_examples, 1)
    _check_int("vocab_size", vocab_size, 2)
    _check_int("seq_len", seq_len, 4)
    _check_int("noise_vocab_size", noise_vocab_size, 0)
    _check_frac("frac_noise", frac_noise)
    kv_vocab = vocab_size - noise_vocab_size
    if kv_vocab < 2:
        raise ValueError(
            f"vocab_size ({vocab_size}) - noise_vocab_size ({noise_vocab_size}) must leave >= 2 tokens "
            "for keys and values"
        )
    if frac_noise > 0 and noise_vocab_size == 0:
        raise ValueError("frac_noise > 0 needs noise_vocab_size > 0")
    n, g = num_examples, generator
    nk = kv_vocab // 2
    units = seq_len // 2 + 1  # 2 tokens per unit, enough for T + 1 tokens

    keys = torch.randint(0, nk, (n, units), generator=g)
    mapping = torch.randint(nk, kv_vocab, (n, nk), generator=g)  # a fresh map per sequence
    values = mapping.gather(1, keys)
    is_noise = torch.rand(n, units, generator=g) < frac_noise
    noise = torch.randint(kv_vocab, max(vocab_size, kv_vocab + 1), (n, units, 2), generator=g)
    real = ~is_noise
    probed = real & _seen_before(keys, nk, real)

    pairs = torch.stack([keys, values], -1)  # (N, P, 2)
    pairs = torch.where(is_noise.unsqueeze(-1), noise, pairs)
    zeros = torch.zeros_like(real)
    scored_unit = probed if test else real
    scored = torch.stack([zeros, scored_unit], -1)
    return _shift(pairs.flatten(1), scored.flatten(1), seq_len)


def fuzzy_recall(
    num_examples: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 128,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    num_keys: int = 8,
    test: bool = False,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recall where keys and values are motifs of 1..k (1..v) tokens; the test split uses k-token keys.

    Each sequence has a dictionary of ``num_keys`` key motifs (duplicates resolved to the first one, so
    the map stays a function); pairs are drawn from it and concatenated. Key tokens come from the lower
    half of the vocabulary and value tokens from the upper half, so a key is exactly a maximal run of
    key tokens.
    """
    _check_int("num_examples", num_examples, 1)
    _check_int("vocab_size", vocab_size, 4)
    _check_int("k_motif_size", k_motif_size, 1)
    _check_int("v_motif_size", v_motif_size, 1)
    _check_int("num_keys", num_keys, 1)
    _check_int("seq_len", seq_len, 1)
    if seq_len < 2 * (k_motif_size + v_motif_size):
        raise ValueError(
            f"seq_len ({seq_len}) must hold two pairs of the largest motifs: "
            f">= 2 * (k_motif_size + v_motif_size) = {2 * (k_motif_size + v_motif_size)}"
        )
    n, g, m = num_examples, generator, num_keys
    nk = vocab_size // 2
    k_len = (
        torch.full((n, m), k_motif_size) if test else torch.randint(1, k_motif_size + 1, (n, m), generator=g)
    )
    v_len = torch.randint(1, v_motif_size + 1, (n, m), generator=g)
    k_tok = torch.randint(0, nk, (n, m, k_motif_size), generator=g)
    v_tok = torch.randint(nk, vocab_size, (n, m, v_motif_size), generator=g)
    k_valid = torch.arange(k_motif_size) < k_len.unsqueeze(-1)  # (N, M, k)
    v_valid = torch.arange(v_motif_size) < v_len.unsqueeze(-1)

    # Identical key motifs in one dictionary share the first entry's value (keeps the map a function).
    k_code = torch.where(k_valid, k_tok, -1)
    same = (k_code.unsqueeze(2) == k_code.unsqueeze(1)).all(-1)  # (N, M, M)
    canon = same.int().argmax(-1)  # first equal entry

    entries = (seq_len + 1) // 2 + 1  # every pair has >= 2 tokens
    pick = canon.gather(1, torch.randint(0, m, (n, entries), generator=g))  # (N, E) canonical ids
    ik = pick.unsqueeze(-1).expand(-1, -1, k_motif_size)
    iv = pick.unsqueeze(-1).expand(-1, -1, v_motif_size)
    ek, ekv = k_tok.gather(1, ik), k_valid.gather(1, ik)  # (N, E, k)
    ev, evv = v_tok.gather(1, iv), v_valid.gather(1, iv)  # (N, E, v)
    probed = _seen_before(pick, m, torch.ones_like(pick, dtype=torch.bool))

    tokens = torch.cat([ek, ev], -1).flatten(1)  # (N, E * S)
    valid = torch.cat([ekv, evv], -1).flatten(1)
    unit_scored = probed if test else torch.ones_like(probed)
    is_val = torch.cat([torch.zeros_like(ekv), evv & unit_scored.unsqueeze(-1)], -1).flatten(1)
    # Compact the valid slots to the front of each row (stable, so order is kept), then cut.
    order = (~valid).int().argsort(dim=1, stable=True)[:, : seq_len + 1]
    return _shift(tokens.gather(1, order), is_val.gather(1, order), seq_len)


def selective_copying(
    num_examples: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 256,
    num_tokens_to_copy: int = 16,
    test: bool = False,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens scattered among blanks, a copy token, then one blank per token to output, in order."""
    del test  # both splits score the copied tokens
    _check_int("num_examples", num_examples, 1)
    _check_int("vocab_size", vocab_size, 3)
    _check_int("num_tokens_to_copy", num_tokens_to_copy, 1)
    _check_int("seq_len", seq_len, 1)
    k = num_tokens_to_copy
    if seq_len < 2 * k + 1:
        raise ValueError(
            f"seq_len ({seq_len}) must be >= 2 * num_tokens_to_copy + 1 = {2 * k + 1} "
            "(the tokens, a copy token and one output slot per token)"
        )
    n, g = num_examples, generator
    copy_tok, blank = vocab_size - 1, vocab_size - 2
    region = seq_len - k - 1
    pos = torch.rand(n, region, generator=g).argsort(1)[:, :k].sort(1).values  # sorted positions
    content = torch.randint(0, vocab_size - 2, (n, k), generator=g)
    inputs = torch.full((n, seq_len), blank, dtype=torch.long)
    inputs.scatter_(1, pos, content)
    inputs[:, region] = copy_tok
    targets = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    targets[:, region + 1 :] = content
    return inputs, targets


def compression(
    num_examples: int,
    *,
    vocab_size: int = 16,
    seq_len: int = 32,
    test: bool = False,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L = seq_len / 2 random tokens, a compress token, then L - 1 blanks; reproduce the L tokens.

    The output at the compress token is the first token; the blanks give no information, so a
    recurrent model must carry the whole sequence in its state past the compress token.
    """
    del test
    _check_int("num_examples", num_examples, 1)
    _check_int("vocab_size", vocab_size, 3)
    _check_int("seq_len", seq_len, 2)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even (sequence + compress token + blanks), got {seq_len}")
    n, g, half = num_examples, generator, seq_len // 2
    content = torch.randint(0, vocab_size - 2, (n, half), generator=g)
    inputs = torch.full((n, seq_len), vocab_size - 2, dtype=torch.long)  # blanks
    inputs[:, :half] = content
    inputs[:, half] = vocab_size - 1  # compress token
    targets = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    targets[:, half:] = content
    return inputs, targets


def memorization_map(vocab_size: int = 256, kv_map_seed: int = 12345) -> torch.Tensor:
    """The fixed global key -> value map: ``map[key]`` for keys 0 .. (vocab_size - 1) // 2 - 1."""
    _check_int("vocab_size", vocab_size, 3)
    _check_int("kv_map_seed", kv_map_seed, 0)
    kv_vocab = vocab_size - 1  # the last id is the insert token
    nk = kv_vocab // 2
    g = torch.Generator().manual_seed(kv_map_seed)
    return torch.randperm(kv_vocab - nk, generator=g)[:nk] + nk


def memorization(
    num_examples: int,
    *,
    vocab_size: int = 256,
    seq_len: int = 32,
    kv_map_seed: int = 12345,
    test: bool = False,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """key, insert, key, insert, ...: at each insert token predict the key's value from one fixed map."""
    del test
    _check_int("num_examples", num_examples, 1)
    _check_int("seq_len", seq_len, 2)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even (key, insert pairs), got {seq_len}")
    kv = memorization_map(vocab_size, kv_map_seed)
    n, g = num_examples, generator
    keys = torch.randint(0, kv.numel(), (n, seq_len // 2), generator=g)
    inputs = torch.stack([keys, torch.full_like(keys, vocab_size - 1)], -1).flatten(1)
    targets = torch.stack([torch.full_like(keys, IGNORE), kv[keys]], -1).flatten(1)
    return inputs, targets


GENERATORS = {
    "in_context_recall": recall,
    "fuzzy_recall": fuzzy_recall,
    "noisy_recall": recall,
    "selective_copying": selective_copying,
    "compression": compression,
    "memorization": memorization,
}
TASKS = tuple(GENERATORS)


def task_settings(name: str, **settings) -> dict:
    """The full settings of a task: its defaults overridden by ``settings`` (unknown names refused)."""
    if name not in DEFAULTS:
        raise ValueError(f"unknown MAD task {name!r}; choose one of {', '.join(TASKS)}")
    unknown = set(settings) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)} for task {name!r}; valid: {sorted(DEFAULTS[name])}"
        )
    return {**DEFAULTS[name], **settings}


def make_task(
    name: str,
    split: str = "train",
    seed: int | None = None,
    num_examples: int | None = None,
    **settings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate a MAD task split: ``(inputs, targets)``, LongTensors (N, T), targets -100 where unscored.

    ``seed`` defaults to 0 for train and 12345 for test; ``num_examples`` to the task's train size or
    1,280 for test. Other keyword arguments override the task's defaults (see ``DEFAULTS``).

    Example:
        >>> x, y = make_task("in_context_recall", split="test", num_examples=4, seq_len=32)
        >>> x.shape, y.shape
        (torch.Size([4, 32]), torch.Size([4, 32]))
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cfg = task_settings(name, **settings)
    n_train = cfg.pop("num_train_examples")
    if num_examples is None:
        num_examples = n_train if split == "train" else NUM_TEST_EXAMPLES
    if seed is None:
        seed = 0 if split == "train" else TEST_SEED
    _check_int("seed", seed, 0)
    g = torch.Generator().manual_seed(seed)
    return GENERATORS[name](num_examples, test=split == "test", generator=g, **cfg)


def vocab_size(name: str, **settings) -> int:
    """The vocabulary size a model needs for a task with these settings."""
    return task_settings(name, **settings)["vocab_size"]
