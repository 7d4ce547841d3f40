"""Every Hub failure gives an error naming the repo and what to do, and never shows the token."""

from __future__ import annotations

import logging
import time
import traceback

import pytest
from peft import get_peft_model

import mad_models  # noqa: F401
from hub_tools import (
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubPermissionError,
    HubRevisionNotFoundError,
    HubUnreachableError,
    InvalidRepoIdError,
    pull,
    push_adapter,
)
from mad_models.more import MoReConfig
from tests.hub_server import READ_TOKEN, WRITE_TOKEN, closed_port_url, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.tiny import tiny_llama


@pytest.fixture(scope="module")
def adapter():
    cfg = MoReConfig(nblocks=2, block_rank=1, target_modules=["q_proj"], init_weights=False)
    return get_peft_model(tiny_llama(), cfg).eval()


def no_secret(err: BaseException, caplog) -> None:
    text = "".join(traceback.format_exception(err)) + caplog.text
    assert WRITE_TOKEN not in text and READ_TOKEN not in text


def test_invalid_repo_id(hub, adapter, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    with pytest.raises(
        InvalidRepoIdError, match=r"'me/bad name!' is not a valid repo id.*'namespace/name'"
    ) as e:
        push_adapter(adapter, "me/bad name!")
    no_secret(e.value, caplog)
    with pytest.raises(InvalidRepoIdError, match=r"'a/b/c' is not a valid repo id"):
        pull("a/b/c", base_model=tiny_llama())
    assert hub.state.requests == []  # refused before any traffic
    assert isinstance(e.value, ValueError)


def test_401_without_or_with_a_bad_token(hub, adapter, caplog, monkeypatch):
    with pytest.raises(HubAuthError, match=r"push to model 'me/x'.*hf auth login"):
        push_adapter(adapter, "me/x")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token_123456")
    with pytest.raises(HubAuthError, match=r"'me/x'.*rejected the token \(401\)") as e:
        push_adapter(adapter, "me/x")
    assert "hf_not_a_valid_token_123456" in hub.state.seen_tokens  # the server did see it...
    assert "hf_not_a_valid_token_123456" not in "".join(
        traceback.format_exception(e.value)
    )  # ...we never show it


def test_403_no_write_access(hub, adapter, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    with pytest.raises(HubPermissionError, match=r"push to model 'someone-else/x'.*403.*write access") as e:
        push_adapter(adapter, "someone-else/x")
    no_secret(e.value, caplog)
    push_adapter(adapter, "me/readable")
    with pytest.raises(HubPermissionError, match=r"'reader/x'.*403") as e:  # read-only token
        push_adapter(adapter, "reader/x", token=READ_TOKEN)
    no_secret(e.value, caplog)
    assert WRITE_TOKEN in hub.state.seen_tokens and READ_TOKEN in hub.state.seen_tokens


def test_404_and_missing_revision(hub, adapter, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubNotFoundError, match=r"pull model 'me/nothing-here'.*Check the repo id") as e:
        pull("me/nothing-here", base_model=tiny_llama())
    no_secret(e.value, caplog)
    push_adapter(adapter, "me/exists")
    with pytest.raises(HubRevisionNotFoundError, match=r"'me/exists' at revision 'v9'.*list_repo_refs") as e:
        pull("me/exists", revision="v9", base_model=tiny_llama())
    no_secret(e.value, caplog)
    with pytest.raises(HubRevisionNotFoundError, match=r"revision 'deadbeef' does not exist in 'me/exists'"):
        pull("me/exists", revision="deadbeef", base_model=tiny_llama())


def test_hub_down(hub, adapter, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    down = closed_port_url()
    t0 = time.perf_counter()
    with pytest.raises(HubUnreachableError, match=rf"push to model 'me/x'.*cannot connect to {down}") as e:
        push_adapter(adapter, "me/x", endpoint=down)
    no_secret(e.value, caplog)
    monkeypatch.setenv("HF_ENDPOINT", down)  # the environment variable is honoured at call time
    with pytest.raises(HubUnreachableError, match=r"pull model 'me/x'.*HF_ENDPOINT") as e:
        pull("me/x", base_model=tiny_llama())
    no_secret(e.value, caplog)
    assert time.perf_counter() - t0 < 10


def test_hub_times_out(hub, adapter, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    push_adapter(adapter, "me/slow")
    hub.state.delay = 1.5
    t0 = time.perf_counter()
    with pytest.raises(HubUnreachableError, match=r"pull model 'me/slow'.*did not answer within 0.3 s") as e:
        pull("me/slow", base_model=tiny_llama(), timeout=0.3)
    no_secret(e.value, caplog)
    with pytest.raises(HubUnreachableError, match=r"push to model 'me/slow'.*did not answer within 0.3 s"):
        push_adapter(adapter, "me/slow", timeout=0.3)
    assert time.perf_counter() - t0 < 6
    assert isinstance(e.value, HubError) and isinstance(e.value, ConnectionError)


def test_failed_commit_error_is_clear(hub, adapter, caplog, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    hub.state.fail_next_commit = True
    with pytest.raises(HubError, match=r"'me/fails'.*failed with 500.*retry later") as e:
        push_adapter(adapter, "me/fails")
    no_secret(e.value, caplog)
    assert "adapter_model.safetensors" not in hub.files("me/fails")  # the repo was created, nothing committed
