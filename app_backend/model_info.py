"""What a model is, in a few lines of markdown: shown under each Compare column and in each tab.

Everything comes from the registry entry (its ``meta``, filled by the asset build) and the
checkpoint's own config, so the card never says more than the files do.
"""

from __future__ import annotations

from typing import Any

from app_backend.registry import ModelEntry


def method_line(config: dict[str, Any]) -> str | None:
    """An adapter's method and shape, e.g. 'MoRe k=4, r=1: rank up to 16 (LoRA r=4 has the same count)'."""
    kind = config.get("peft_type")
    if kind == "MORE":
        k, r = int(config.get("nblocks", 0)), int(config.get("block_rank", 0))
        return (
            f"MoRe nblocks k={k}, block_rank r={r}: rank up to k²r = {k * k * r} "
            f"with the trainable count of LoRA r = k·r = {k * r}"
        )
    if kind == "LORA":
        return f"LoRA r={config.get('r')}, alpha={config.get('lora_alpha')}"
    if config.get("model_type") == "manticore":
        return f"Manticore hybrid of {config.get('num_components', '?')} components"
    return config.get("model_type")


def _figure(name: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{name} {value:.3f}"
    return f"{name} {value}"


def model_card_md(entry: ModelEntry) -> str:
    """A short card: description, method/config, trainable parameters, eval figures, where it lives."""
    meta = entry.meta or {}
    lines = [f"**{entry.name}**: {entry.description or entry.kind}"]
    method = method_line(entry.config)
    if method:
        lines.append(method)
    if entry.kind == "adapter" and entry.config.get("target_modules"):
        targets = entry.config["target_modules"]
        lines.append("targets: " + (", ".join(targets) if isinstance(targets, list) else str(targets)))
    if meta.get("trainable_params"):
        lines.append(f"trainable parameters: {int(meta['trainable_params']):,}")
    figures = [
        _figure(k.replace("_", " "), v) for k, v in meta.items() if k in ("exact_match", "base_exact_match")
    ]
    if figures:
        lines.append("eval: " + ", ".join(figures))
    if entry.path is not None and (entry.path / "README.md").is_file():
        lines.append(f"model card: `{entry.path.name}/README.md`")
    return "  \n".join(lines)
