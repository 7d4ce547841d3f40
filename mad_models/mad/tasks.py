"""The six MAD synthetic tasks as vectorised, seeded generators.

Every generator returns ``(inputs, targets)``: two LongTensors of shape (N, T). ``targets[n, t]`` is
the token a causal model should predict *at* position t (already shifted, so do not pass it to a
Hugging Face model as ``labels``, which shifts again); -100 marks positions that are not scored.

Conventions shared with the MAD reference (mad-lab), so numbers are comparable:
- recall tasks draw keys from the lower half of the (key/value) vocabulary and values from the upper
  half, with a fresh random mapping in every sequence; noise tokens come from the top of the vocab;
- copying and compression reserve ``vocab_size - 1`` (copy / compress token) and ``vocab_size - 2``
  (blank token); memorization reserves ``vocab_size - 1`` as the insert token.

- fuzzy recall follows MAD-lab's multi-query setting: the last id is a pad token (sequences are
  left-padded), keys are motifs of 1..k distinct tokens (exactly k in the held-out splits), values
  motifs of 1..v distinct tokens; a held-out sequence scores only the values of keys shown earlier
  and the final probe pair, about 4.6 positions per sequence on the defaults as in MAD-lab;
- compression is MAD's auto-encoder: ``seq_len - 1`` random tokens then the compression token; every
  token must be rebuilt from the one hidden state at the compression token
  (``mad_models.mad.compression.CompressionAutoEncoder`` wraps any causal LM). Targets are the
  tokens themselves (unshifted), the compression token's own position is not scored.

Differences from the reference, on purpose:
- sequences are exactly ``seq_len`` long (the reference's recall returned ``seq_len - 1``);
- selective copying honours ``num_tokens_to_copy`` and draws blank positions from the seeded
  generator (the reference used the unseeded global numpy RNG);
- the train split scores every value (recall) so no capacity is spent on random keys; the held-out
  splits (valid, test) score only probed values (multi-query probing);
- every split draws from its own random stream, seeded from (seed, split): no seed makes the
  training data repeat the test set (the reference drew both from one stream per seed).
"""

from __future__ import annotations

import torch

IGNORE = -100

# name -> default settings (spec: shared/specs/mad.md).
DEFAULTS: dict[str, dict] = {
    "in_context_recall": dict(vocab_size=16, seq_len=128, num_train_examples=12_800),
    "fuzzy_recall": dict(
        vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3, num_train_examples=12_800
    ),
    "noisy_recall": dict(
        vocab_size=32, seq_len=128, noise_vocab_size=16, frac_noise=0.2, num_train_examples=12_800
    ),
    "selective_copying": dict(vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train_examples=12_800),
    "compression": dict(vocab_size=16, seq_len=32, num_train_examples=12_800),
    "memorization": dict(vocab_size=256, seq_len=32, kv_map_seed=12345, num_train_examples=256),
}

# Named presets: "easy" = MAD's defaults above; "manticore" = the settings Manticore's reference ran
# MAD with (vocab 128, 800 training sequences, 80% noise, memorization vocab 8192).
PRESETS: dict[str, dict[str, dict]] = {
    "easy": {name: {} for name in DEFAULTS},
    "manticore": {
        "in_context_recall": dict(vocab_size=128, num_train_examples=800),
        "fuzzy_recall": dict(vocab_size=128, num_train_examples=800),
        "noisy_recall": dict(vocab_size=144, frac_noise=0.8, num_train_examples=800),
        "selective_copying": dict(vocab_size=128, num_tokens_to_copy=96, num_train_examples=800),
        "compression": {},
        "memorization": dict(vocab_size=8192),
    },
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
SPLITS = ("train", "valid", "test")
HELD_OUT = ("valid", "test")  # scored like the test set (multi-query probing)


def split_generator(seed: int, split: str) -> torch.Generator:
    """The random stream of one split: seeded from (seed, split), so splits never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    import numpy as np

    state = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


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
    test: bool = False,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD-lab's fuzzy in-context recall (multi-query): motif keys and values, left-padded.

    Token layout: keys from ``[0, (V-1)//2)``, values from ``[(V-1)//2, V-1)``, pad ``V-1``. A key is
    a motif of 1..k distinct key tokens (exactly k in held-out splits), a value a motif of 1..v
    distinct value tokens; a key seen again in a sequence maps to its first value. Pairs are drawn
    until the sequence is nearly full, then a final probe repeats a random earlier pair, and the
    sequence is left-padded to ``seq_len``. Held-out splits score the values of repeated keys and of
    the probe (about 4.6 positions per sequence on the defaults); the train split scores every value.
    """
    _check_int("num_examples", num_examples, 1)
    _check_int("vocab_size", vocab_size, 5)
    _check_int("k_motif_size", k_motif_size, 1)
    _check_int("v_motif_size", v_motif_size, 1)
    _check_int("seq_len", seq_len, 1)
    n, g, K, Vm = num_examples, generator, k_motif_size, v_motif_size
    pad = vocab_size - 1
    nk = pad // 2
    nv = pad - nk
    if K > nk or Vm > nv:
        raise ValueError(
            f"motifs have distinct tokens: k_motif_size ({K}) must be <= {nk} key tokens and v_motif_size "
            f"({Vm}) <= {nv} value tokens for vocab_size {vocab_size}"
        )
    S = K + Vm
    limit = seq_len + 2 - 2 * S  # draw pairs while the body is shorter (body + probe <= seq_len + 1)
    if limit < 1:
        raise ValueError(
            f"seq_len ({seq_len}) must hold a pair and its probe of the largest motifs: "
            f">= 2 * (k_motif_size + v_motif_size) - 1 = {2 * S - 1}"
        )
    E = limit // 2 + 1  # pairs have >= 2 tokens
    k_len = torch.full((n, E), K) if test else torch.randint(1, K + 1, (n, E), generator=g)
    v_len = torch.randint(1, Vm + 1, (n, E), generator=g)
    k_tok = torch.rand(n, E, nk, generator=g).argsort(-1)[..., :K]  # distinct tokens within a motif
    v_tok = torch.rand(n, E, nv, generator=g).argsort(-1)[..., :Vm] + nk
    k_valid = torch.arange(K) < k_len.unsqueeze(-1)  # (N, E, K)
    # a key seen again maps to its first value (the map stays a function within the sequence)
    same_tok = (k_tok.unsqueeze(2) == k_tok.unsqueeze(1)) | ~k_valid.unsqueeze(2)  # (N, E, E, K)
    same = same_tok.all(-1) & (k_len.unsqueeze(2) == k_len.unsqueeze(1))  # (N, E, E)
    first = same.int().argmax(-1)  # (N, E) the first pair with this key
    repeated = first < torch.arange(E)
    v_tok = v_tok.gather(1, first.unsqueeze(-1).expand(-1, -1, Vm))
    v_len = v_len.gather(1, first)
    v_valid = torch.arange(Vm) < v_len.unsqueeze(-1)

    start = (k_len + v_len).cumsum(1) - (k_len + v_len)  # (N, E) body offset of each pair
    kept = start < limit  # (N, E); pair 0 always kept
    n_kept = kept.sum(1)  # (N,)
    probe = (torch.rand(n, generator=g) * n_kept).long().clamp(max=E - 1)  # a random kept pair
    pidx = probe.view(n, 1)

    def with_probe(x: torch.Tensor) -> torch.Tensor:  # (N, E, ...) -> (N, E + 1, ...): probe last
        idx = pidx.view(n, 1, *([1] * (x.dim() - 2))).expand(-1, 1, *x.shape[2:])
        return torch.cat([x, x.gather(1, idx)], 1)

    tokens = torch.cat([with_probe(k_tok), with_probe(v_tok)], -1)  # (N, E+1, S)
    valid = torch.cat([with_probe(k_valid), with_probe(v_valid)], -1)
    valid &= torch.cat([kept, torch.ones(n, 1, dtype=torch.bool)], 1).unsqueeze(-1)
    unit_scored = torch.cat([repeated if test else torch.ones_like(repeated), torch.ones(n, 1).bool()], 1)
    scored = torch.cat([torch.zeros_like(with_probe(k_valid)), with_probe(v_valid)], -1)
    scored &= valid & unit_scored.unsqueeze(-1)

    tokens, valid, scored = tokens.flatten(1), valid.flatten(1), scored.flatten(1)
    # right-align the valid slots, in order (stable sort puts the unused slots first), then left-pad
    order = valid.int().argsort(dim=1, stable=True)[:, -(seq_len + 1) :]
    tokens = torch.where(valid.gather(1, order), tokens.gather(1, order), pad)
    return _shift(tokens, scored.gather(1, order), seq_len)


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
    """MAD's compression: ``seq_len - 1`` random tokens, then the compression token (``V - 1``).

    Targets are the input tokens themselves at every position but the last (an auto-encoder target,
    not a next-token one): a model must rebuild the whole sequence from its hidden state at the
    compression token, through ``mad_models.mad.compression.CompressionAutoEncoder``.
    """
    del test
    _check_int("num_examples", num_examples, 1)
    _check_int("vocab_size", vocab_size, 3)
    _check_int("seq_len", seq_len, 2)
    n, g = num_examples, generator
    inputs = torch.randint(0, vocab_size - 1, (n, seq_len), generator=g)
    inputs[:, -1] = vocab_size - 1  # compression token
    targets = inputs.clone()
    targets[:, -1] = IGNORE
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


def task_settings(name: str, preset: str = "easy", **settings) -> dict:
    """The full settings of a task: its defaults, then the ``preset``'s, then ``settings`` (unknown
    names refused)."""
    if name not in DEFAULTS:
        raise ValueError(f"unknown MAD task {name!r}; choose one of {', '.join(TASKS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(settings) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(
            f"unknown setting(s) {sorted(unknown)} for task {name!r}; valid: {sorted(DEFAULTS[name])}"
        )
    return {**DEFAULTS[name], **PRESETS[preset][name], **settings}


def make_task(
    name: str,
    split: str = "train",
    seed: int | None = None,
    num_examples: int | None = None,
    preset: str = "easy",
    **settings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate a MAD task split: ``(inputs, targets)``, LongTensors (N, T), targets -100 where unscored.

    ``split``: "train", "valid" (held out for choices: lr, architecture steps) or "test". Each split
    draws from its own stream seeded from (seed, split). ``seed`` defaults to 0 for train and valid
    and 12345 for test; ``num_examples`` to the task's train size, or 1,280 for valid and test. Other
    keyword arguments override the ``preset``'s settings (see ``DEFAULTS`` and ``PRESETS``).

    Example:
        >>> x, y = make_task("in_context_recall", split="test", num_examples=4, seq_len=32)
        >>> x.shape, y.shape
        (torch.Size([4, 32]), torch.Size([4, 32]))
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cfg = task_settings(name, preset, **settings)
    n_train = cfg.pop("num_train_examples")
    if num_examples is None:
        num_examples = n_train if split == "train" else NUM_TEST_EXAMPLES
    if seed is None:
        seed = TEST_SEED if split == "test" else 0
    _check_int("seed", seed, 0)
    g = split_generator(seed, split)
    return GENERATORS[name](num_examples, test=split in HELD_OUT, generator=g, **cfg)


def vocab_size(name: str, preset: str = "easy", **settings) -> int:
    """The vocabulary size a model needs for a task with these settings."""
    return task_settings(name, preset, **settings)["vocab_size"]
