"""Model cards for pushed adapters and hybrids, built with huggingface_hub's ModelCard and ModelCardData.

The metadata block carries base_model, library_name, tags, license (inherited from the base model when we
know it), pipeline_tag and, when the caller passes them, evaluation results in model-index form. The body
states sizes and settings as measured, plus a usage snippet that the tests run against a local Hub.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, SpaceCard, SpaceCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from mad_models.hybrid.cost import flatten_report

EvalLike = EvalResult | Mapping[str, Any]


def _eval_results(items: Iterable[EvalLike] | None) -> list[EvalResult] | None:
    """Accept EvalResult objects or plain dicts with EvalResult's field names."""
    if not items:
        return None
    out = []
    for item in items:
        if isinstance(item, EvalResult):
            out.append(item)
        elif isinstance(item, Mapping):
            try:
                out.append(EvalResult(**item))
            except TypeError as err:
                raise ValueError(
                    f"Bad eval result {dict(item)!r}: {err}. Give task_type, dataset_type, dataset_name, "
                    "metric_type and metric_value (see huggingface_hub.EvalResult)."
                ) from None
        else:
            raise TypeError(f"eval_results items must be EvalResult or dict, got {type(item).__name__}")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isfinite(value) and value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _kv_table(rows: Mapping[str, Any], head: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def is_hub_id(name: str | None) -> bool:
    """True for 'namespace/name' strings that are not local paths (component names can be class names)."""
    if not name or "/" not in name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def cost_tables(cost: Mapping[str, Any]) -> str:
    """Markdown for ManticoreForCausalLM.cost_report(): totals, per component (against running it alone)
    and per block. Falls back to one flat quantity/value table (keys "a / b / c", as the app shows them)
    for any other report layout, e.g. one already flattened by flatten_report."""
    try:
        params, flops, alone = cost["params"], cost["flops_per_token"], cost["standalone"]
        names = list(params["components"])
        totals = _table(
            ["", "parameters", "FLOPs per token"],
            [
                ["whole hybrid", params["total"], flops["total"]],
                ["projectors", params["projectors"], flops["projectors"]],
                ["mixture weights", params["mixture"], "-"],
                ["LM heads", "-", flops["heads"]],
            ],
        )
        per_comp = _table(
            [
                "component",
                "params (in hybrid)",
                "FLOPs/token (in hybrid)",
                "params (alone)",
                "FLOPs/token (alone)",
                "hybrid FLOPs / its FLOPs",
            ],
            [
                [
                    n,
                    params["components"][n],
                    flops["components"][n],
                    alone[n]["params"],
                    alone[n]["flops_per_token"],
                    cost["relative_flops"][n],
                ]
                for n in names
            ],
        )
        per_block = _table(
            ["block", *[f"{n} FLOPs/token" for n in names], "projector FLOPs/token", "total"],
            [
                [i, *[b["components"].get(n, 0) for n in names], b["projectors"], b["total"]]
                for i, b in enumerate(flops["per_block"])
            ],
        )
    except (KeyError, TypeError, AttributeError):
        return _kv_table(flatten_report(cost), ("quantity", "value"))
    context = f"FLOPs counted for a context of {cost['context']} tokens." if "context" in cost else ""
    return "\n\n".join(x for x in (context, totals, per_comp, per_block) if x)


def files_section(files: Mapping[str, int], *, note: str = "") -> list[str]:
    """Card lines saying what the repo holds after this push (older model files were removed by it)."""
    lines = [
        "## Files",
        "",
        "What this repo holds after the push that wrote this card (it replaced the weights, configs and "
        "tokenizer files of whatever the repo held before, in the same commit):",
        "",
        _table(["file", "bytes"], [[f, size] for f, size in sorted(files.items())]),
        "",
    ]
    return lines + ([note, ""] if note else [])


def evaluation_section(evaluation: Mapping[str, Any]) -> list[str]:
    """Card lines stating what a model was trained on and its measured bits per character (a
    ``bits_per_char.json`` record: ``trained_on``, ``val``, ``val_bits_per_char``, ``dev_bits_per_char``,
    ``unigram_val_bits_per_char``, ``command``; each optional)."""
    ev = evaluation
    lines = ["## Data and bits per character", ""]
    if ev.get("trained_on"):
        lines += [f"Trained on: {ev['trained_on']}", ""]
    rows = []
    if ev.get("val_bits_per_char") is not None:
        rows.append([ev.get("val", "val"), ev["val_bits_per_char"]])
    if ev.get("dev_bits_per_char") is not None:
        rows.append(["dev (every choice was made on it)", ev["dev_bits_per_char"]])
    if ev.get("unigram_val_bits_per_char") is not None:
        rows.append(["unigram character frequencies on val (no learning)", ev["unigram_val_bits_per_char"]])
    if rows:
        lines += [_table(["scored on", "bits per character"], rows), ""]
    if ev.get("command"):
        lines += [f"Made by: `{ev['command']}`", ""]
    return lines


def evaluation_results(evaluation: Mapping[str, Any]) -> list[EvalResult]:
    """The model-index entry of a ``bits_per_char.json`` record (empty without ``val_bits_per_char``)."""
    if evaluation.get("val_bits_per_char") is None:
        return []
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type="text",
            dataset_name=str(evaluation.get("val", "val")),
            metric_type="bits_per_char",
            metric_value=float(evaluation["val_bits_per_char"]),
        )
    ]


def _evals(eval_results: Iterable[EvalLike] | None, evaluation: Mapping[str, Any] | None) -> list | None:
    """The card's model-index: the given results, else the ``bits_per_char.json`` record's, else none."""
    return _eval_results(eval_results) or (evaluation_results(evaluation) if evaluation else None) or None


def _card(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def usage_snippet(repo_id: str, *, needs_base: bool = False) -> str:
    """The python block every card shows; a test executes it against a local Hub."""
    base_line = (
        f'model = pull("{repo_id}", base_model=base)  # base: the model this adapter was trained on'
        if needs_base
        else f'model = pull("{repo_id}")'
    )
    return (
        "```python\n"
        "import torch\n"
        "from hub_tools import pull  # ships with mad-models\n\n"
        f"{base_line}\n"
        "input_ids = torch.tensor([[1, 2, 3, 4]])\n"
        "with torch.no_grad():\n"
        "    out = model.generate(input_ids, max_new_tokens=8, do_sample=False)\n"
        "print(out.shape)\n"
        "```\n"
    )


def adapter_card(
    repo_id: str,
    *,
    peft_type: str,
    base_model: str | None,
    report: Mapping[str, Any] | None,
    license: str | None = None,
    pipeline_tag: str | None = "text-generation",
    eval_results: Iterable[EvalLike] | None = None,
    training: Mapping[str, Any] | None = None,
    adapter_settings: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    files: Mapping[str, int] | None = None,
) -> ModelCard:
    """Card for a PEFT adapter (MoRe or any peft method).

    `report` holds AdapterReport.to_dict() fields: trainable_params, bytes_on_disk, base_params,
    percent_of_base, lora_rank_equivalent.

    Example:
        >>> card = adapter_card("me/a", peft_type="MORE", base_model="org/base", report=rep.to_dict())
        >>> card.data.library_name
        'peft'
    """
    peft_type = str(peft_type).upper()
    kind_tags = ["more", "monarch"] if peft_type == "MORE" else [peft_type.lower()]
    evals = _eval_results(eval_results)
    data = ModelCardData(
        base_model=base_model or None,
        library_name="peft",
        license=license,
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(["mad-models", *kind_tags, *tags])),
        model_name=repo_id.split("/")[-1] if evals else None,
        eval_results=evals,
    )
    name = {"MORE": "MoRe (Monarch Rectangular)", "LORA": "LoRA"}.get(peft_type, peft_type)
    base_txt = (
        f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "an unnamed base model"
    )
    body = [f"# {repo_id.split('/')[-1]}", "", f"A {name} adapter for {base_txt}, made with mad-models.", ""]
    if report:
        rows = {
            "PEFT method": report.get("peft_type", peft_type),
            "trainable parameters": report["trainable_params"],
            "bytes on disk (adapter_model.safetensors)": report["bytes_on_disk"],
            "base model parameters": report.get("base_params"),
            "% of base model": f"{report['percent_of_base']:.4f} %",
            "LoRA rank with the same parameter count": report["lora_rank_equivalent"],
        }
        body += ["## Size", "", _kv_table(rows, ("", "")), ""]
    if adapter_settings:
        body += ["## Adapter settings", "", _kv_table(adapter_settings), ""]
    if training:
        body += ["## Training", "", _kv_table(training), ""]
    if files:
        body += files_section(files, note="An adapter: `pull` loads it onto its base model.")
    body += ["## Usage", "", usage_snippet(repo_id, needs_base=not base_model)]
    if base_model:
        body += [
            f"`pull` downloads the base model `{base_model}` too (safetensors only); pass "
            "`base_model=` to use one you already loaded."
        ]
    return _card(data, "\n".join(body))


def hybrid_card(
    repo_id: str,
    *,
    components: Sequence[Mapping[str, Any]],
    mixture_weights: Sequence[Sequence[float]] | None,
    component_names: Sequence[str],
    cost_report: Mapping[str, Any] | None,
    license: str | None = None,
    pipeline_tag: str | None = "text-generation",
    eval_results: Iterable[EvalLike] | None = None,
    training: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    files: Mapping[str, int] | None = None,
    has_tokenizer: bool | None = None,
    evaluation: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Card for a Manticore hybrid (``evaluation``: a ``bits_per_char.json`` record, see
    :func:`evaluation_section`).

    `components` rows hold at least ``name_or_path`` and ``revision``; `mixture_weights` is one row per block
    with one weight per entry of `component_names`.

    Example:
        >>> card = hybrid_card("me/h", components=[{"name_or_path": "a", "revision": "main"}],
        ...                    mixture_weights=[[1.0]], component_names=["a"], cost_report=None)
        >>> card.data.library_name
        'transformers'
    """
    evals = _evals(eval_results, evaluation)
    bases = [c["name_or_path"] for c in components if is_hub_id(c.get("name_or_path"))]
    data = ModelCardData(
        base_model=bases or None,
        library_name="transformers",
        license=license,
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(["mad-models", "manticore", *tags])),
        model_name=repo_id.split("/")[-1] if evals else None,
        eval_results=evals,
    )
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        "A Manticore hybrid made with mad-models: the components below run block by block, joined by "
        "projectors and mixed by learned weights.",
        "",
        "## Components",
        "",
        _table(
            [
                "component",
                "model",
                "revision",
                *[k for k in components[0] if k not in ("name_or_path", "revision")],
            ]
            if components
            else ["component", "model", "revision"],
            [
                [
                    name,
                    c.get("name_or_path") or "(built from config)",
                    c.get("revision") or "n/a",
                    *[v for k, v in c.items() if k not in ("name_or_path", "revision")],
                ]
                for name, c in zip(component_names, components, strict=False)
            ],
        ),
        "",
    ]
    if mixture_weights is not None:
        body += [
            "## Mixture weights per block",
            "",
            _table(["block", *component_names], [[i, *row] for i, row in enumerate(mixture_weights)]),
            "",
        ]
    if evaluation:
        body += evaluation_section(evaluation)
    if cost_report:
        body += ["## Cost report", "", cost_tables(cost_report), ""]
    if training:
        body += ["## How it was trained (search settings)", "", _kv_table(training), ""]
    if files:
        note = {
            True: "The tokenizer files are included.",
            False: "No tokenizer is included in this repo: tokenize with the tokenizer of the first "
            "component.",
            None: "",
        }[has_tokenizer]
        body += files_section(files, note=note)
    body += ["## Usage", "", usage_snippet(repo_id)]
    return _card(data, "\n".join(body))


def causal_lm_card(
    repo_id: str,
    *,
    model_type: str,
    params: int,
    license: str | None = None,
    eval_results: Iterable[EvalLike] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    files: Mapping[str, int] | None = None,
    has_tokenizer: bool | None = None,
) -> ModelCard:
    """Card for a plain causal LM (one of a hybrid's components, say), with its data and bits per character
    when ``evaluation`` gives them.

    Example:
        >>> card = causal_lm_card("me/m", model_type="mamba", params=1000,
        ...                       evaluation={"val_bits_per_char": 2.1, "val": "val plays"})
        >>> "| val plays | 2.1 |" in str(card), card.data.eval_results[0].metric_type
        (True, 'bits_per_char')
    """
    evals = _evals(eval_results, evaluation)
    data = ModelCardData(
        library_name="transformers",
        license=license,
        pipeline_tag="text-generation",
        tags=["mad-models", model_type],
        model_name=repo_id.split("/")[-1] if evals else None,
        eval_results=evals,
    )
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {model_type} causal language model ({params:,} parameters) pushed with mad-models' hub_tools.",
        "",
    ]
    if evaluation:
        body += evaluation_section(evaluation)
    if files:
        note = "The tokenizer files are included." if has_tokenizer else ""
        body += files_section(files, note=note)
    body += ["## Usage", "", usage_snippet(repo_id)]
    return _card(data, "\n".join(body))


def space_card(
    title: str, *, sdk: str, sdk_version: str | None, app_file: str, license: str | None
) -> SpaceCard:
    """Space README metadata: without it the Space has no SDK to start the app."""
    data = SpaceCardData(
        title=title, sdk=sdk, sdk_version=sdk_version, app_file=app_file, license=license, tags=["mad-models"]
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n# {title}\n\nA mad-models demo ({sdk} app).\n")
