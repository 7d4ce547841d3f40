"""Tiny random models built from configs, shared by the tests (nothing is downloaded)."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Mamba2Config,
    Mamba2ForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

VOCAB = 128


def tiny_gpt2(seed: int = 0, vocab: int = VOCAB) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(cfg).eval()


def tiny_neox(seed: int = 0, vocab: int = VOCAB, hidden: int = 64, layers: int = 4) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * hidden,
        max_position_embeddings=256,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def tiny_gpt_neo(seed: int = 0, vocab: int = VOCAB) -> GPTNeoForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=256,
        window_size=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPTNeoForCausalLM(cfg).eval()


def tiny_llama(seed: int = 0, vocab: int = VOCAB, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_mamba(seed: int = 0, vocab: int = VOCAB, hidden: int = 48, layers: int = 6) -> MambaForCausalLM:
    torch.manual_seed(seed)
    cfg = MambaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, state_size=8, expand=2)
    return MambaForCausalLM(cfg).eval()


def tiny_mamba2(seed: int = 0, vocab: int = VOCAB) -> Mamba2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Mamba2Config(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        state_size=16,
        expand=2,
        head_dim=16,
        num_heads=8,
        n_groups=1,
        chunk_size=16,
    )
    return Mamba2ForCausalLM(cfg).eval()


def tiny_bert_classifier(
    seed: int = 0, vocab: int = VOCAB, num_labels: int = 3
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(cfg).eval()


def tiny_char_tokenizer():
    """A character-level fast tokenizer (98 ids: <pad>, <eos>, <unk>, printable ASCII) for tiny LMs."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["<pad>", "<eos>", "<unk>"] + list(string.printable[:95])
    tk = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per char
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_word_tokenizer(vocab: int = VOCAB, shuffle_seed: int | None = None):
    """A word-level tokenizer over tokens "t0".."t{vocab-1}"; `shuffle_seed` permutes the ids (same
    tokens, different vocabulary), for tests that must tell tokenizers apart by content."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = list(range(vocab))
    if shuffle_seed is not None:
        ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(shuffle_seed)).tolist()
    tok = Tokenizer(models.WordLevel({f"t{i}": j for i, j in enumerate(ids)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok)
