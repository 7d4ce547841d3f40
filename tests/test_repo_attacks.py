"""Repos made to hurt whoever loads them (issue 24, second security pass): each test pushes the crafted repo
to the local Hub (tests/hub_server.py) and loads it through the real huggingface_hub client, as a user of
``pull``, ``load_causal_lm``, ``ManticoreForCausalLM.from_components`` or ``mad-models`` would.

Memory is measured as the growth of the process's peak resident set (see test_loader_security.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

import mad_models  # noqa: F401  (registers MORE and "manticore")
from hub_tools import HubError, RepoContentError, commit_folder, pull
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.more import MoReConfig
from mad_models.validation import CheckpointError
from tests.hub_server import WRITE_TOKEN, hub_fixture  # noqa: F401  (the "hub" fixture)
from tests.test_loader_security import BIG_MB, peak_growth_mb, peak_rss_mb
from tests.tiny import tiny_char_tokenizer, tiny_llama, tiny_mamba, tiny_neox

IDS = torch.tensor([[1, 5, 9, 2, 7, 3]])


@pytest.fixture(autouse=True)
def _write_token(request, monkeypatch):
    """Tests on the local Hub push with the write token (set after the hub fixture clears it)."""
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub")
        monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)


def _edit_json(path: Path, **changes) -> dict:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))
    return cfg


def lora_folder(tmp_path: Path, name: str = "lora", **config) -> Path:
    folder = tmp_path / name
    torch.manual_seed(3)
    cfg = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **config)
    get_peft_model(tiny_llama(), cfg).save_pretrained(folder, save_embedding_layers=False)
    return folder


def more_folder(tmp_path: Path, name: str = "more") -> Path:
    folder = tmp_path / name
    cfg = MoReConfig(nblocks=2, block_rank=1, target_modules=["q_proj", "v_proj"], init_weights=False)
    get_peft_model(tiny_llama(), cfg).save_pretrained(folder, save_embedding_layers=False)
    return folder


def hybrid_folder(tmp_path: Path, name: str = "hybrid") -> Path:
    folder = tmp_path / name
    ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2).save_pretrained(folder)
    return folder


def publish(folder: Path, repo_id: str) -> str:
    commit_folder(folder, repo_id, commit_message="crafted", token=WRITE_TOKEN)
    return repo_id


def snapshot(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each parameter of ``model`` with a copy of its values now (PEFT may move it, never change it)."""
    return [(p, p.detach().clone()) for p in model.parameters()]


def unchanged(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return all(torch.equal(p.detach(), copy) for p, copy in saved)


def refusal_cost(fn, error: type[Exception] = RepoContentError) -> tuple[str, int, float]:
    """Run ``fn``, which must raise ``error``: (its message, how many torch modules were constructed before
    it, the growth of the peak RSS in MB). A layer-count bomb refused from the config and the header alone
    constructs none; one refused after a build (even on the meta device) constructs one per layer and more."""
    built = 0
    init = torch.nn.Module.__init__

    def counting(self, *args, **kwargs):
        nonlocal built
        built += 1
        init(self, *args, **kwargs)

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = peak_rss_mb()
    torch.nn.Module.__init__ = counting
    try:
        with pytest.raises(error) as caught:
            fn()
    finally:
        torch.nn.Module.__init__ = init
    return str(caught.value), built, peak_rss_mb() - before


def cli_error(argv: list[str], capsys) -> tuple[int, str]:
    """Run ``mad-models argv`` expecting a one-line error: (exit code, stderr's last line)."""
    from mad_models.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert "Traceback" not in err and err.endswith(last + "\n") and last.startswith("mad-models: error: ")
    return exit_.value.code, last


# ------------------------------------------------- hole 2: an adapter's init rewrites the caller's base model


@pytest.mark.parametrize("init", ["pissa", "olora", "pissa_niter_2"])
def test_an_adapter_init_that_rewrites_the_base_is_refused(hub, tmp_path, init):
    folder = lora_folder(tmp_path)
    _edit_json(folder / "adapter_config.json", init_lora_weights=init)
    publish(folder, "me/pissa")
    base = tiny_llama()
    saved, out_before = snapshot(base), base(IDS).logits
    with pytest.raises(
        RepoContentError, match=rf"'me/pissa': .*init_lora_weights {init!r} is refused.*rewrite the base"
    ):
        pull("me/pissa", base_model=base)
    assert unchanged(saved), "loading the adapter changed the caller's base model"
    assert torch.equal(base(IDS).logits, out_before)


@pytest.mark.timeout(120)  # old code: the SVD loop ran until the timeout stopped it
def test_a_billion_pissa_iterations_are_refused_at_once(hub, tmp_path):
    folder = lora_folder(tmp_path)
    _edit_json(folder / "adapter_config.json", init_lora_weights="pissa_niter_1000000000")
    publish(folder, "me/pissa-forever")
    t0 = time.perf_counter()
    with pytest.raises(RepoContentError, match=r"init_lora_weights 'pissa_niter_1000000000'"):
        pull("me/pissa-forever", base_model=tiny_llama())
    assert time.perf_counter() - t0 < 60  # never reached the SVD loop (which would run for days)


def test_the_library_loader_refuses_the_same_init(tmp_path):
    from mad_models.loading import load_causal_lm

    base_dir = tmp_path / "base"
    tiny_llama().save_pretrained(base_dir)
    folder = lora_folder(tmp_path)
    _edit_json(
        folder / "adapter_config.json", init_lora_weights="olora", base_model_name_or_path=str(base_dir)
    )
    with pytest.raises(CheckpointError, match=r"init_lora_weights 'olora'"):
        load_causal_lm(folder)


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_plain_inits_still_load(hub, tmp_path, init):
    folder = lora_folder(tmp_path, name=f"lora-{init}")
    _edit_json(folder / "adapter_config.json", init_lora_weights=init)
    publish(folder, "me/plain-init")
    base = tiny_llama()
    saved = snapshot(base)
    model = pull("me/plain-init", base_model=base)
    assert model.peft_config["default"].init_lora_weights == init
    assert unchanged(saved)


# ------------------------------------------------ hole 3: regexes from the config that never finish matching

EVIL = "(?:.|.)*!"  # exponential backtracking on every module name, inside re (which holds the GIL)


@pytest.mark.parametrize(
    "make, field, value",
    [
        (lora_folder, "exclude_modules", EVIL),
        (more_folder, "exclude_modules", EVIL),
        (lora_folder, "modules_to_save", [EVIL]),
        (more_folder, "modules_to_save", [EVIL]),
        (lora_folder, "layers_pattern", EVIL),
        (lora_folder, "target_modules", EVIL),
        (lora_folder, "exclude_modules", ["q_proj", EVIL]),
    ],
    ids=[
        "lora-exclude",
        "more-exclude",
        "lora-save",
        "more-save",
        "layers-pattern",
        "target-str",
        "exclude-list",
    ],
)
@pytest.mark.timeout(120)
def test_config_regexes_must_be_plain_names(hub, tmp_path, make, field, value):
    folder = make(tmp_path)
    changes = {field: value}
    if field == "layers_pattern":
        changes["layers_to_transform"] = [0]
    _edit_json(folder / "adapter_config.json", **changes)
    publish(folder, "me/redos")
    t0 = time.perf_counter()
    with pytest.raises(
        RepoContentError, match=rf"'me/redos': adapter_config.json: {field} .*plain module name"
    ):
        pull("me/redos", base_model=tiny_llama())
    assert time.perf_counter() - t0 < 30


def test_plain_exclude_and_save_lists_still_load(hub, tmp_path):
    folder = lora_folder(tmp_path, exclude_modules=["model.layers.1.self_attn.v_proj"])
    publish(folder, "me/plain-lists")
    model = pull("me/plain-lists", base_model=tiny_llama())
    assert model.peft_config["default"].exclude_modules == {"model.layers.1.self_attn.v_proj"}


# ------------------------------------------------ hole 4: a hybrid's vocab_size and hidden_size


@pytest.mark.parametrize("key, value", [("vocab_size", 4_000_000), ("hidden_size", 4_000_000)])
def test_hybrid_sizes_must_be_what_the_components_give(hub, tmp_path, key, value):
    folder = tmp_path / "hybrid-pruned"
    hybrid = ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2)
    hybrid.set_mixture([[1.0, 0.0], [0.0, 1.0]])
    hybrid.discretize().save_pretrained(folder)  # no block mixes: no projector pins hidden_size
    cfg = _edit_json(folder / "config.json", **{key: value})
    publish(folder, "me/wide-hybrid")
    want = max(c.get(key, 0) for c in cfg["components"])
    with pytest.raises(
        RepoContentError, match=rf"'me/wide-hybrid': .*{key} is {value}.*components give {want}"
    ):
        pull("me/wide-hybrid")
    with pytest.raises(CheckpointError, match=rf"{key} is {value}"):
        ManticoreForCausalLM.from_pretrained(folder)


def test_a_mixing_hybrid_with_a_wider_hidden_size_is_refused_by_its_projectors(hub, tmp_path):
    folder = hybrid_folder(tmp_path)
    _edit_json(folder / "config.json", hidden_size=4_000_000)
    publish(folder, "me/wide-mixing")
    with pytest.raises(RepoContentError, match=r"'me/wide-mixing'.*proj_in"):
        pull("me/wide-mixing")


# ------------------------------------------------ hole 5: layer counts are checked before anything is built


@pytest.mark.parametrize(
    "layers, match",
    [
        (800, r"config.json asks for 800 layers, but model.safetensors holds layers 0..1"),
        (5000, r"config.json: num_hidden_layers must be a number of layers in 0..1024, got 5000"),
    ],
)
def test_a_layer_count_bomb_is_refused_before_building(hub, tmp_path, layers, match):
    folder = tmp_path / "deep-llama"
    tiny_llama().save_pretrained(folder)
    _edit_json(folder / "config.json", num_hidden_layers=layers)
    publish(folder, "me/deep-llama")
    msg, built, grew = refusal_cost(lambda: pull("me/deep-llama"))
    assert built == 0, f"{built} modules were built ({grew:.0f} MB peak growth) before: {msg[:120]}"
    assert re.search(rf"'me/deep-llama': {match}", msg), msg
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


@pytest.mark.parametrize(
    "layers, match",
    [
        (
            800,
            r"config.json: component 1 \(mamba\) has 800 layers .*model.safetensors holds layers 0..5 of it",
        ),
        (
            5000,
            r"config.json: component 1: num_hidden_layers must be a number of layers in 0..1024, got 5000",
        ),
    ],
)
def test_a_hybrid_component_layer_bomb_is_refused_before_building(hub, tmp_path, layers, match):
    folder = hybrid_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["components"][1]["num_hidden_layers"] = layers
    cfg["layer_map"][1] = [layers // 2, layers // 2]
    (folder / "config.json").write_text(json.dumps(cfg))
    publish(folder, "me/deep-hybrid")
    msg, built, grew = refusal_cost(lambda: pull("me/deep-hybrid"))
    assert built == 0, f"{built} modules were built ({grew:.0f} MB peak growth) before: {msg[:120]}"
    assert re.search(rf"'me/deep-hybrid': {match}", msg), msg
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"
    with pytest.raises(CheckpointError, match=match):
        ManticoreForCausalLM.from_pretrained(folder)


def test_fake_layers_in_the_header_do_not_buy_a_bigger_build(hub, tmp_path):
    """A component claiming 1000 layers whose header names them all, each with one number: every layer of a
    component must hold what its first layer holds, so the file has to carry the weights it claims."""
    from safetensors.torch import load_file, save_file

    folder = hybrid_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["components"][1]["num_hidden_layers"] = 1000
    cfg["layer_map"][1] = [500, 500]
    (folder / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(folder / "model.safetensors")
    for i in range(6, 1000):
        tensors[f"components.1.backbone.layers.{i}.norm.weight"] = torch.ones(1)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    publish(folder, "me/padded-hybrid")
    msg, built, grew = refusal_cost(lambda: pull("me/padded-hybrid"))
    assert built == 0, f"{built} modules were built ({grew:.0f} MB peak growth) before: {msg[:120]}"
    assert (
        "'me/padded-hybrid': model.safetensors: layer 6 of component 1 holds other tensors than its layer 0"
        in msg
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


@pytest.mark.timeout(120)  # old code: still building layers when the timeout stopped it
def test_a_config_asking_for_more_layers_than_any_model_is_refused(hub, tmp_path):
    folder = tmp_path / "qwen-bomb"
    tiny_llama().save_pretrained(folder)
    _edit_json(folder / "config.json", num_hidden_layers=10**12)  # configs build per-layer lists from it
    publish(folder, "me/layers-1e12")
    t0 = time.perf_counter()
    with pytest.raises(RepoContentError, match=r"'me/layers-1e12': config.json: num_hidden_layers must be"):
        pull("me/layers-1e12")
    assert time.perf_counter() - t0 < 30


# ------------------------------------------------ hole 7: the direct loaders check a Hub id as pull does


def _point_plain_client_at(hub, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # read at import by parts of the client
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )


def _missing_layers_repo(tmp_path) -> Path:
    """A neox whose config asks for 4 layers more than its file holds (transformers would make them up)."""
    folder = tmp_path / "short-neox"
    tiny_neox().save_pretrained(folder)
    tiny_char_tokenizer().save_pretrained(folder)
    _edit_json(folder / "config.json", num_hidden_layers=8)
    (folder / "junk.dat").write_bytes(b"\0" * 300_000)  # nothing a loader needs
    return folder


@pytest.mark.parametrize("loader", ["from_components", "load_causal_lm"])
def test_direct_loaders_check_hub_ids_and_fetch_only_json_and_safetensors(hub, tmp_path, monkeypatch, loader):
    from mad_models.loading import load_causal_lm

    _point_plain_client_at(hub, monkeypatch)
    publish(_missing_layers_repo(tmp_path), "me/short-neox")
    call = {
        "from_components": lambda: ManticoreForCausalLM.from_components(["me/short-neox", tiny_mamba()]),
        "load_causal_lm": lambda: load_causal_lm("me/short-neox"),
    }[loader]
    with pytest.raises(CheckpointError, match=r"me/short-neox: config.json asks for 8 layers"):
        call()
    fetched = [r for r in hub.state.requests if "/resolve/" in r and r.startswith("GET")]
    assert fetched and not [r for r in fetched if "junk.dat" in r]

    vocab_bomb = tmp_path / "vocab-bomb"
    tiny_neox().save_pretrained(vocab_bomb)
    _edit_json(vocab_bomb / "config.json", vocab_size=2_000_000)
    publish(vocab_bomb, "me/vocab-bomb")
    target = "me/vocab-bomb"
    call = {
        "from_components": lambda: ManticoreForCausalLM.from_components([target, tiny_mamba()]),
        "load_causal_lm": lambda: load_causal_lm(target),
    }[loader]
    grew = peak_growth_mb(
        call, CheckpointError, r"me/vocab-bomb: model.safetensors does not match config.json"
    )
    assert grew < BIG_MB, f"peak RSS grew {grew:.0f} MB before the config was refused"


def test_direct_loaders_still_load_a_good_hub_checkpoint(hub, tmp_path, monkeypatch):
    from mad_models.loading import load_causal_lm

    _point_plain_client_at(hub, monkeypatch)
    folder = tmp_path / "neox"
    neox = tiny_neox()
    neox.save_pretrained(folder)
    tiny_char_tokenizer().save_pretrained(folder)
    publish(folder, "me/good-neox")
    loaded = load_causal_lm("me/good-neox")
    assert torch.equal(loaded(IDS).logits, neox(IDS).logits)
    assert loaded.config._name_or_path == "me/good-neox"  # never the cache path
    hybrid = ManticoreForCausalLM.from_components(["me/good-neox", tiny_mamba()], tokenizers=[None, None])
    assert hybrid.config.component_names[0] == "me/good-neox"


def test_cli_hybrid_build_refuses_a_bad_hub_component_in_one_line(hub, tmp_path, monkeypatch, capsys):
    _point_plain_client_at(hub, monkeypatch)
    publish(_missing_layers_repo(tmp_path), "me/short-neox")
    mamba = tmp_path / "mamba"
    tiny_mamba().save_pretrained(mamba)
    argv = [
        "hybrid",
        "build",
        "--components",
        "me/short-neox",
        str(mamba),
        "--n-blocks",
        "2",
        "--out",
        str(tmp_path / "out"),
    ]
    code, line = cli_error(argv, capsys)
    assert code == 1 and "me/short-neox: config.json asks for 8 layers" in line
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ------------------------------------------------ hole 12: errors name the repo, never a path on the server


def test_errors_name_the_repo_never_the_cache_path(hub, tmp_path):
    from huggingface_hub import constants

    folder = tmp_path / "no-type"
    tiny_llama().save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["model_type"]
    (folder / "config.json").write_text(json.dumps(cfg))
    publish(folder, "me/no-type")
    with pytest.raises(RepoContentError) as err:
        pull("me/no-type")
    text = str(err.value)
    assert "'me/no-type'" in text
    assert constants.HF_HUB_CACHE not in text and "snapshots" not in text and "/tmp" not in text


# ------------------------------------------------ hole 13: revisions follow git's ref rules


@pytest.mark.parametrize(
    "revision",
    [
        "../../../../escape/REFWRITE",
        "main/../../x",
        "a..b",
        ".hidden",
        "x.lock",
        "a b",
        "x\\y",
        "@{1}",
        "a//b",
    ],
)
def test_revisions_must_be_git_ref_names(hub, tmp_path, revision):
    from huggingface_hub import constants

    folder = lora_folder(tmp_path)
    publish(folder, "me/refs")
    repo = hub.repo("me/refs")
    repo.branches[revision] = repo.branches["main"]  # a server that answers for any ref name
    seen = len(hub.state.requests)
    with pytest.raises(HubError, match=rf"revision {re.escape(repr(revision))} is not a valid git ref name"):
        pull("me/refs", revision=revision, base_model=tiny_llama())
    assert len(hub.state.requests) == seen  # refused before any request
    cache = Path(constants.HF_HUB_CACHE)
    assert not list(cache.parent.rglob("REFWRITE")) and not list(cache.rglob("REFWRITE"))


def test_a_traversing_revision_never_writes_outside_the_cache(hub, tmp_path):
    """The attack itself: huggingface_hub writes refs/<revision> into the cache when the server answers."""
    from huggingface_hub import constants

    publish(lora_folder(tmp_path), "me/refwrite")
    repo = hub.repo("me/refwrite")
    revision = "../../../../escape/REFWRITE"
    repo.branches[revision] = repo.branches["main"]
    root = Path(constants.HF_HUB_CACHE).parent.parent
    try:
        pull("me/refwrite", revision=revision, base_model=tiny_llama())
    except HubError as err:
        assert "is not a valid git ref name" in str(err)
    assert not list(root.rglob("REFWRITE")), "a ref file was written outside the cache"


def test_the_library_loaders_check_revisions_too(hub, tmp_path, monkeypatch):
    from mad_models.loading import load_causal_lm

    _point_plain_client_at(hub, monkeypatch)
    folder = tmp_path / "neox"
    tiny_neox().save_pretrained(folder)
    publish(folder, "me/neox-refs")
    repo = hub.repo("me/neox-refs")
    revision = "../../../../escape/REFWRITE"
    repo.branches[revision] = repo.branches["main"]
    sources, refused = ["me/neox-refs", tiny_mamba()], []
    for call in (
        lambda: ManticoreForCausalLM.from_pretrained("me/neox-refs", revision=revision),
        lambda: ManticoreForCausalLM.from_components(sources, revisions=[revision, None]),
        lambda: load_causal_lm("me/neox-refs", revision=revision),
    ):
        try:
            call()
            refused.append("")
        except Exception as err:  # noqa: BLE001  (the old code failed later, for other reasons)
            refused.append(str(err))
        assert not list(tmp_path.parent.rglob("REFWRITE")), "a ref file was written outside the cache"
    assert all(isinstance(e, str) and "is not a valid git ref name" in e for e in refused), refused


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "feature/x-y_z"])
def test_ordinary_revisions_pass_the_check(revision):
    from mad_models.validation import check_revision

    assert check_revision(revision) == revision


# ------------------------------------------------ hole 14: generation_config.json through the safe reader


def test_a_deep_generation_config_is_one_line_from_the_cli(hub, tmp_path, capsys):
    folder = tmp_path / "deep-gen"
    tiny_llama().save_pretrained(folder)
    (folder / "generation_config.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    publish(folder, "me/deep-gen")
    code, line = cli_error(["pull", "me/deep-gen", "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and "'me/deep-gen': generation_config.json is nested too deeply" in line
    with pytest.raises(CheckpointError, match=r"generation_config.json is nested too deeply"):
        ManticoreForCausalLM.from_pretrained(folder)


# ------------------------------------------------ hole 15: pull --out never overwrites a user's folder


def test_pull_out_refuses_a_non_empty_folder_unless_forced(hub, tmp_path, capsys):
    from mad_models.cli import main

    folder = tmp_path / "src"
    tiny_llama().save_pretrained(folder)
    publish(folder, "me/plain")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "own config"}')
    seen = len(hub.state.requests)
    code, line = cli_error(["pull", "me/plain", "--out", str(out)], capsys)
    assert code == 2 and "is not empty" in line and "--force" in line
    assert len(hub.state.requests) == seen  # refused before any download
    assert (out / "config.json").read_text() == '{"my": "own config"}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert main(["pull", "me/plain", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pull", "me/plain", "--out", str(empty)]) == 0
