"""A character-level tokenizer as a standard transformers tokenizer (saved and loaded offline).

One token per character seen in the training texts, plus ``<|endoftext|>`` (BOS, EOS and padding) and
``<unk>`` for characters the training texts never had (one token each, so tokens = characters). It is a
``tokenizers`` WordLevel model behind a per-character pre-tokenizer, wrapped in
``PreTrainedTokenizerFast``: ``save_pretrained`` writes ``tokenizer.json`` and ``AutoTokenizer`` loads it
back with no custom code.

Example:
    >>> tok = train_char_tokenizer(["to be, or not to be\\n"])
    >>> ids = tok("not be")["input_ids"]
    >>> len(ids), tok.decode(ids)
    (6, 'not be')
    >>> tok.decode(tok("zoo")["input_ids"])  # 'z' was never seen
    '<unk>oo'
"""

from __future__ import annotations

from collections.abc import Iterable

EOS = "<|endoftext|>"
UNK = "<unk>"


def train_char_tokenizer(texts: Iterable[str], max_length: int = 1024):
    """A character tokenizer over the characters of ``texts`` (sorted by code point; ids 0, 1 = EOS, UNK).

    ``max_length`` is saved as ``model_max_length``: the context the models are trained with, which
    :func:`mad_models.training.bits_per_char.bits_per_char` uses as its window when given none.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set().union(*map(set, texts)))
    if not chars:
        raise ValueError("no characters to build a tokenizer from (empty texts)")
    vocab = {EOS: 0, UNK: 1}
    for c in chars:
        vocab[c] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    backend.decoder = decoders.Fuse()  # characters joined back without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )
