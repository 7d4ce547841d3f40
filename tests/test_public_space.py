"""The real app in public mode (``SPACE_ID`` set, as on a Hugging Face Space) against repos made to hurt it
(issue 24): the app runs as a subprocess, pulls from the local Hub (tests/hub_server.py) through the real
huggingface_hub client, and visitors drive it with gradio_client. Visitors are told apart by the address
the Space's proxy appends to ``X-Forwarded-For``; each test's visitors have their own addresses.

The regex-bomb test runs last: on code that lets the bomb through, it freezes the app for good.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from app_fixture import launch_app, stop
from peft import LoraConfig, get_peft_model

import mad_models  # noqa: F401
from hub_tools import commit_folder, pull
from tests.hub_server import WRITE_TOKEN, FakeHub
from tests.tiny import tiny_llama

SPACE_TOKEN = "hf_space_owner_0123456789abcdef"  # the Space's own HF_TOKEN: its owner can read private repos
CAP_MB = 2  # MAD_MODELS_MAX_PULL_MB of the app under test
PROMPT = "Calculate 2 + 3."


@dataclass
class Space:
    url: str
    hub: FakeHub
    home: Path  # the app's HF_HOME (its Hub cache is home/hub)
    log: Path


def _lora(folder: Path, seed: int = 3, **config) -> Path:
    torch.manual_seed(seed)
    cfg = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **config)
    get_peft_model(tiny_llama(seed=0, vocab=128), cfg).save_pretrained(folder, save_embedding_layers=False)
    return folder


def _edit(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def _publish(hub: FakeHub, root: Path, assets: Path) -> None:
    def push(folder: Path, repo_id: str, token: str = WRITE_TOKEN, private: bool = False) -> None:
        commit_folder(folder, repo_id, commit_message="test", token=token, endpoint=hub.url, private=private)

    push(_lora(root / "private"), "owner/private-lora", token=SPACE_TOKEN, private=True)
    pissa = _lora(root / "pissa")
    _edit(pissa / "adapter_config.json", init_lora_weights="pissa")
    push(pissa, "me/pissa")
    redos = _lora(root / "redos")
    _edit(redos / "adapter_config.json", exclude_modules="(?:.|.)*!")
    push(redos, "me/redos")
    plain = root / "plain-lm"
    tiny_llama(seed=5, vocab=128).save_pretrained(plain)
    push(plain, "me/plain-lm")
    big = _lora(root / "big")
    (big / "extra.safetensors").write_bytes(b"\0" * (CAP_MB + 1) * 2**20)
    push(big, "me/big-lora")
    junk = root / "junk-hybrid"
    shutil.copytree(assets / "mad/hybrid", junk)
    (junk / "junk.dat").write_bytes(b"\0" * 3 * 2**20)  # nothing a loader needs
    push(junk, "me/junk-hybrid")
    for i in range(4):
        push(_lora(root / f"lora{i}", seed=10 + i), f"me/lora-{i}")
    no_type = root / "no-type"
    tiny_llama(seed=6, vocab=128).save_pretrained(no_type)
    cfg = json.loads((no_type / "config.json").read_text())
    del cfg["model_type"]
    (no_type / "config.json").write_text(json.dumps(cfg))
    push(no_type, "me/no-type")


@pytest.fixture(scope="module")
def space(assets, tmp_path_factory):
    from huggingface_hub import constants

    root = tmp_path_factory.mktemp("space")
    with pytest.MonkeyPatch.context() as mp, FakeHub() as hub:
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        hub.add_token(SPACE_TOKEN, "owner", (), write=True)
        hub.add_token(WRITE_TOKEN, "me", ("org",), write=True)
        _publish(hub, root, assets)
        home = root / "hf-home"
        env = {
            "SPACE_ID": "owner/mad-models",  # public mode
            "HF_TOKEN": SPACE_TOKEN,  # the Space's secret
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(home),
            "MAD_MODELS_MAX_PULL_MB": str(CAP_MB),
            "MAD_MODELS_MAX_LOADED": "3",
        }
        log = root / "app.log"
        url, proc, _ = launch_app(assets, log, timeout=240, env=env)
        try:
            yield Space(url, hub, home, log)
        finally:
            stop(proc)


def visitor(space: Space, address: str):
    """A gradio_client connection from ``address``, as the Space's proxy reports it."""
    from gradio_client import Client

    return Client(space.url, verbose=False, headers={"X-Forwarded-For": address})


def load(client, repo: str, base: str = "tiny-base", revision: str = "") -> str:
    return client.predict(repo, revision, base, api_name="/load")[0]


def generated(client, model: str = "tiny-base", max_new: int = 12) -> list[int]:
    out = client.predict(PROMPT, [model], max_new, "greedy", 0, 0.8, 0, False, api_name="/compare")
    (col,) = out[0]["results"]
    assert not col["error"], col["error"]
    return col["token_ids"]


def fetched(space: Space, repo: str) -> list[str]:
    return [r.split(f"/{repo}/resolve/", 1)[1] for r in space.hub.state.requests if f"/{repo}/resolve/" in r]


# ------------------------------------------------------------- hole 1: the Space's token is not lent out


def test_a_visitor_cannot_open_the_owners_private_repo_with_the_spaces_token(space, tmp_path):
    # the set-up is live: the Space's token reads the private repo
    model = pull("owner/private-lora", base_model=tiny_llama(), token=SPACE_TOKEN, endpoint=space.hub.url)
    assert model.peft_config["default"].r == 2
    seen = len(space.hub.state.seen_tokens)
    msg = load(visitor(space, "10.0.1.1"), "owner/private-lora")
    assert "tab-error" in msg and "owner/private-lora" in msg, msg
    assert SPACE_TOKEN not in space.hub.state.seen_tokens[seen:]  # no request of the app carried it


# ------------------------------------------------------------- hole 2: a Load never changes the shared base


def test_one_visitors_load_leaves_the_base_everyone_uses_as_it_was(space):
    a, b = visitor(space, "10.0.2.1"), visitor(space, "10.0.2.2")
    before = generated(a)
    msg = load(b, "me/pissa")
    assert generated(a) == before, "another visitor's Load changed the base model's outputs"
    assert "tab-error" in msg and "init_lora_weights 'pissa' is refused" in msg, msg


# ------------------------------------------------------------- hole 6: what a public Load takes and keeps


def test_public_load_takes_only_adapters_and_hybrids_within_the_size_cap(space):
    v = visitor(space, "10.0.6.1")
    msg = load(v, "me/plain-lm", base="")
    assert "tab-error" in msg and "a plain causal LM, and only adapters and Manticore hybrids" in msg, msg
    msg = load(v, "me/big-lora")
    assert "tab-error" in msg and f"at most 64 files and {CAP_MB} MiB" in msg, msg
    assert fetched(space, "me/big-lora") == []  # refused from the file listing: nothing downloaded


def test_public_load_downloads_only_what_it_needs_and_keeps_nothing(space):
    msg = load(visitor(space, "10.0.6.2"), "me/junk-hybrid", base="")
    assert "Loaded <b>loaded: me/junk-hybrid</b>: hybrid" in msg and "tab-ok" in msg, msg
    files = fetched(space, "me/junk-hybrid")
    assert files and all(f.endswith((".json", ".safetensors")) for f in files), files
    cache = space.home / "hub"
    assert not list(cache.glob("models--me--*")), "pulled repos are kept in the Space's cache"


def test_the_load_limit_holds_per_visitor_not_per_client(space):
    tabs = [visitor(space, "10.0.6.3") for _ in range(3)]
    ok = "<div class='tab-ok'>Loaded"  # the Load tab's success line
    assert load(tabs[0], "me/lora-0").startswith(ok)
    assert load(tabs[0], "me/lora-1").startswith(ok)
    assert load(tabs[1], "me/lora-2").startswith(ok)
    msg = load(tabs[2], "me/lora-3")
    assert "tab-error" in msg and "You already hold 3 loaded models" in msg, msg
    assert load(visitor(space, "10.0.6.4"), "me/lora-3").startswith(ok)  # another visitor may


# ------------------------------------------------------------- holes 12, 13 through the app


def test_errors_name_the_repo_and_revisions_are_checked(space):
    v = visitor(space, "10.0.12.1")
    msg = load(v, "me/no-type", base="")
    assert "tab-error" in msg and "me/no-type" in msg and "snapshots" not in msg and "/tmp" not in msg, msg
    msg = load(v, "me/lora-0", revision="../../../../escape/REFWRITE")
    assert "tab-error" in msg and "is not a valid git ref name" in msg, msg


# ------------------------------------------------------------- hole 11: fairness between visitors


def test_a_flooding_visitor_does_not_hold_up_another(space):
    a, b = visitor(space, "10.0.11.1"), visitor(space, "10.0.11.2")
    args = (PROMPT, ["tiny-base", "tiny-base + LoRA", "tiny-base + MoRe"], 48, "greedy", 0, 0.8, 0, False)
    flood = [a.submit(*args, api_name="/compare") for _ in range(16)]
    time.sleep(2.0)  # the flood is in the queue first
    t0 = time.perf_counter()
    small = b.submit(PROMPT, ["tiny-base"], 4, "greedy", 0, 0.8, 0, False, api_name="/compare")
    (col,) = small.result(timeout=300)[0]["results"]
    waited = time.perf_counter() - t0
    ran_before = sum(1 for j in flood if j.done() and j.exception() is None)
    assert col["new_tokens"] == 4 and not col["error"]
    outcomes = []
    for job in flood:
        try:
            job.result(timeout=300)
            outcomes.append("ran")
        except Exception as e:  # noqa: BLE001
            outcomes.append(str(e))
    refused = [o for o in outcomes if "runs at most 1 per visitor" in o]
    assert ran_before <= 2, f"{ran_before} of the flood's jobs ran before the small request ({waited:.1f} s)"
    assert len(refused) >= 10, outcomes


# ------------------------------------------------------------- hole 3: a regex bomb (last: freezes old code)


def test_a_regex_bomb_does_not_freeze_the_space(space):
    a, b = visitor(space, "10.0.3.1"), visitor(space, "10.0.3.2")
    bomb = b.submit("me/redos", "", "tiny-base", api_name="/load")
    time.sleep(2.0)
    small = a.submit(PROMPT, ["tiny-base"], 4, "greedy", 0, 0.8, 0, False, api_name="/compare")
    (col,) = small.result(timeout=120)[0]["results"]
    assert col["new_tokens"] == 4
    msg = bomb.result(timeout=60)[0]
    assert "tab-error" in msg and "exclude_modules" in msg and "plain module name" in msg, msg
