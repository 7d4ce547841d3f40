"""What each tab of the app does, as plain Python (the Gradio layer in app.py only wires it up).

Every method raises ``AppInputError`` (a ValueError) with a message meant for the user on bad input;
app.py turns those into ``gr.Error`` so the UI shows the message, never a stack trace.

Example:
    >>> svc = AppService(Registry.from_dir("assets"))
    >>> for cols in svc.compare("3 1 4", ["mad/attention"], max_new_tokens=8):
    ...     pass
    >>> cols[0]["text"], cols[0]["stats"]
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app_backend.cache import ModelCache, ProgressFn
from app_backend.generation import (
    GenStats,
    PromptTooLongError,
    check_max_new_tokens,
    decode,
    encode_prompt,
    stream_generate,
)
from app_backend.registry import (
    AppInputError,
    IncompatibleModelError,
    Loaded,
    ModelEntry,
    Registry,
    load_entry,
)
from app_backend.runtime import Runtime, pick_runtime

MAX_COMPARE = 8  # output columns on the Compare tab
MAX_MAD_EXAMPLES = 512


class AppService:
    def __init__(self, registry: Registry, runtime: Runtime | None = None):
        self.registry = registry
        self.runtime = runtime or pick_runtime()
        self.cache = ModelCache(self.runtime.cache_bytes, self._load)
        self.pulled: dict[
            str, dict[str, Any]
        ] = {}  # Load tab: name -> pull() arguments, to reload after eviction
        self._reports: dict[str, Any] = {}  # adapter name -> AdapterReport (exact, computed once)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- loading
    def _load(self, name: str, get_base: Callable[[str], Loaded]) -> tuple[Any, Any]:
        if name in self.pulled:
            return self._pull(**self.pulled[name], get_base=get_base)
        rt = self.runtime
        return load_entry(self.registry[name], get_base, rt.device, rt.dtype, rt.quant)

    def get(self, name: str, progress: ProgressFn | None = None) -> Loaded:
        if name not in self.registry.entries and name not in self.pulled:
            self.registry[name]  # raises the "unknown model" message
        return self.cache.get(name, progress)

    def model_names(self) -> list[str]:
        return list(self.registry.entries) + [n for n in self.pulled if n not in self.registry.entries]

    # ---------------------------------------------------------------- Compare outputs
    def compare(
        self,
        prompt: str,
        names: list[str],
        max_new_tokens: int = 32,
        sample: bool = False,
        seed: int = 0,
        temperature: float = 1.0,
        top_k: int = 0,
        chat: bool = True,
        progress: ProgressFn | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Run one prompt through several models in turn, yielding all columns after every new token.

        A column is ``{"model", "text", "token_ids", "stats", "tokens_per_s", "latency_s", "error"}``.
        A model that cannot take this prompt (e.g. text for a token-id model) gets its error in its
        column; the other columns still run.
        """
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        names = [n for n in (names or []) if n]
        if not names:
            raise AppInputError("Pick at least one model to compare.")
        if len(names) > MAX_COMPARE:
            raise AppInputError(f"At most {MAX_COMPARE} models at once; {len(names)} were picked.")
        if not prompt or not prompt.strip():
            raise AppInputError("The prompt is empty.")
        cols = [
            dict(
                model=n, text="", token_ids=[], stats="waiting…", tokens_per_s=0.0, latency_s=0.0, error=None
            )
            for n in names
        ]
        yield cols
        for col in cols:
            try:
                col["stats"] = "loading…"
                yield cols
                loaded = self.get(col["model"], progress)
                vocab = loaded.model.config.get_text_config().vocab_size
                ids = encode_prompt(prompt, loaded.tokenizer, vocab, chat=chat)
            except PromptTooLongError:
                raise
            except AppInputError as e:
                col["error"], col["stats"] = str(e), "error"
                col["text"] = f"⚠ {e}"
                yield cols
                continue
            stats = GenStats()
            col["stats"] = "generating…"
            for tok in stream_generate(
                loaded.model,
                ids,
                max_new_tokens,
                sample=sample,
                seed=seed,
                temperature=temperature,
                top_k=top_k,
                stats=stats,
                stop_at_eos=loaded.tokenizer is not None,
            ):
                col["token_ids"].append(tok)
                col["text"] = decode(col["token_ids"], loaded.tokenizer)
                col["stats"] = "generating · " + stats.line()
                yield cols
            col["stats"] = "done · " + stats.line()
            col["tokens_per_s"], col["latency_s"] = stats.tokens_per_s, stats.total_s
            yield cols

    # ---------------------------------------------------------------- Adapter sizes
    def adapter_report(self, name: str, progress: ProgressFn | None = None) -> Any:
        """The exact ``mad_models.more.AdapterReport`` of a registered adapter (computed once)."""
        with self._lock:
            if name in self._reports:
                return self._reports[name]
        from peft import PeftModel

        from mad_models.more import adapter_report

        entry = self.registry[name]
        if entry.kind != "adapter":
            raise AppInputError(f"{name!r} is not an adapter.")
        base = self.get(entry.base, progress)
        try:
            peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), entry.path)
        except (RuntimeError, ValueError, KeyError) as e:
            raise IncompatibleModelError(f"{name}: the adapter does not fit base {entry.base!r}: {e}") from e
        report = adapter_report(peft_model)
        with self._lock:
            self._reports[name] = report
        return report

    def adapter_sizes(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Totals per adapter, params per module type and per layer side by side, long-form bar rows.

        ``{"totals", "by_module_type", "per_layer", "bars", "adapters"}``; numbers are exact ints.
        """
        from app_backend.tabs.sizes import per_layer_rows

        names = [e.name for e in self.registry.adapters()] + [
            n for n in self._reports if n not in self.registry.entries
        ]
        if not names:
            raise AppInputError(self.registry.problem or "No adapters are registered in the assets.")
        totals, by_type, bars, modules = [], {}, [], {}
        for n in names:
            rep = self.adapter_report(n, progress)
            modules[n] = rep.modules
            totals.append(
                {
                    "adapter": n,
                    "method": rep.peft_type,
                    "trainable params": rep.trainable_params,
                    "bytes on disk": rep.bytes_on_disk,
                    "% of base": round(rep.percent_of_base, 4),
                    "LoRA rank with same count": round(rep.lora_rank_equivalent, 2),
                    "base params": rep.base_params,
                }
            )
            for m in rep.modules:
                by_type.setdefault(m["type"], {})[n] = (
                    by_type.setdefault(m["type"], {}).get(n, 0) + m["params"]
                )
        side = [{"module type": t, **{n: per.get(n, 0) for n in names}} for t, per in by_type.items()]
        for t, per in by_type.items():
            for n in names:
                bars.append(
                    {"module type": t, "adapter": n, "bar": f"{t} · {n}", "trainable params": per.get(n, 0)}
                )
        return {
            "totals": totals,
            "by_module_type": side,
            "per_layer": per_layer_rows(modules),
            "bars": bars,
            "adapters": names,
        }

    # ---------------------------------------------------------------- Hybrid mixtures
    def hybrid_names(self) -> list[str]:
        return self.registry.names(hybrids_only=True) + [
            n for n, p in self.pulled.items() if p.get("hybrid") and n not in self.registry.entries
        ]

    def mixture(
        self, name: str, threshold: float = 0.25, progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Mixture weights (blocks x components), the cost report, and what pruning at ``threshold`` keeps."""
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise AppInputError(f"The pruning threshold must be a number, got {threshold!r}.") from None
        if not 0.0 <= threshold < 1.0:
            raise AppInputError(f"The pruning threshold must be in [0, 1), got {threshold}.")
        model = self.get(name, progress).model
        if getattr(model.config, "model_type", None) != "manticore":
            raise IncompatibleModelError(
                f"{name!r} is not a Manticore hybrid (model type {model.config.model_type!r})."
            )
        from mad_models.hybrid.prune import choose_blocks

        weights = model.mixture_weights().detach().float().cpu()  # (n_blocks, K)
        # the rule prune() applies, in this model's component indices (a pruned model renumbers them)
        kept = choose_blocks(weights, model.config.kept(), threshold)
        pruned = model.prune(threshold=threshold)
        return {
            "components": component_labels(model),
            "weights": weights.tolist(),
            "cost": model.cost_report(),
            "pruned_cost": pruned.cost_report(),
            "kept": [[k in kept[b] for k in range(weights.shape[1])] for b in range(weights.shape[0])],
            "threshold": threshold,
        }

    # ---------------------------------------------------------------- MAD skills
    def mad_names(self) -> list[str]:
        return self.registry.names(group="mad")

    def mad_skills(
        self,
        task: str,
        names: list[str],
        num_examples: int = 64,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Accuracy of each model on a fresh test batch of one MAD task, chance and the no-learning
        heuristic next to them, and sequence 0 with every model's predictions (``examples``).

        The batch is the test split drawn with seed ``12345 + seed`` (seed 0: the standard test set)."""
        import torch

        from mad_models.mad import TASKS, make_task, scored_counts, task_settings
        from mad_models.mad.tasks import TEST_SEED

        if task not in TASKS:
            raise AppInputError(f"Unknown MAD task {task!r}; choose one of {', '.join(TASKS)}.")
        names = [n for n in (names or []) if n]
        if not names:
            raise AppInputError("Pick at least one model.")
        try:
            num_examples, seed = int(num_examples), int(seed)
        except (TypeError, ValueError):
            raise AppInputError("The number of sequences and the seed must be whole numbers.") from None
        if not 1 <= num_examples <= MAX_MAD_EXAMPLES:
            raise AppInputError(
                f"The number of sequences must be in 1..{MAX_MAD_EXAMPLES}, got {num_examples}."
            )
        if seed < 0:
            raise AppInputError(f"The seed must be >= 0, got {seed}.")
        from app_backend.tabs.mad import mad_baselines

        rows, example, examples = [], None, {}
        data_by_settings: dict[str, tuple] = {}
        for n in names:
            entry = self.registry[n]
            settings = entry.meta.get("mad_tasks", {}).get(task, {})
            key = repr(sorted(settings.items()))
            if key not in data_by_settings:
                # Offset from the MAD test seed: small seeds are the ones training uses (the assets train
                # task i on seed i), and a split drawn from a training seed repeats training data.
                data_by_settings[key] = make_task(
                    task, split="test", seed=TEST_SEED + seed, num_examples=num_examples, **settings
                )
            x, y = data_by_settings[key]
            model = self.get(n, progress).model
            vocab = model.config.get_text_config().vocab_size
            need = task_settings(task, **settings)["vocab_size"]
            if need > vocab:
                raise IncompatibleModelError(
                    f"{n} has a vocabulary of {vocab} tokens; task {task} with these settings needs {need}."
                )
            with torch.inference_mode():
                logits = torch.cat(
                    [model(input_ids=x[i : i + 64]).logits.float() for i in range(0, len(x), 64)]
                )
            correct, total = scored_counts(logits, y)
            rows.append(
                {
                    "model": n,
                    "accuracy": correct / total,
                    "correct": correct,
                    "scored": total,
                    "seq_len": x.shape[1],
                }
            )
            examples[n] = {
                "model": n,
                "input_ids": x[0].tolist(),
                "targets": y[0].tolist(),
                "predictions": logits[0].argmax(-1).tolist(),
                "batch": key,
            }
            if example is None:  # the first model picked is the one rendered by default
                example = examples[n]
        # chance and the no-learning heuristic on the batch the first model saw, scored the same way
        x, y = data_by_settings[example["batch"]]
        base = mad_baselines(task, x, y)
        scored = int((y != -100).sum())
        rows.append(
            {
                "model": "no-learning heuristic (most frequent value so far)",
                "accuracy": base["heuristic"],
                "correct": round(base["heuristic"] * scored),
                "scored": scored,
                "seq_len": x.shape[1],
            }
        )
        rows.append(
            {
                "model": "chance (1 / output vocab)",
                "accuracy": base["chance"],
                "correct": None,
                "scored": scored,
                "seq_len": x.shape[1],
            }
        )
        return {
            "task": task,
            "seed": seed,
            "rows": rows,
            "example": example,
            "examples": examples,
            "baselines": base,
        }

    # ---------------------------------------------------------------- Load
    def _pull(
        self, source: str, revision: str | None, base: str | None, hybrid: bool, get_base
    ) -> tuple[Any, Any]:
        from hub_tools import pull

        base_loaded = get_base(base) if base else None
        model = pull(
            source,
            revision=revision or None,
            base_model=copy.deepcopy(base_loaded.model) if base_loaded else None,
            dtype=self.runtime.dtype,
        )
        if hasattr(model, "merge_and_unload"):  # an adapter: merged, so it costs what the base costs
            model = model.merge_and_unload()
        tok = base_loaded.tokenizer if base_loaded else None
        if tok is None and Path(source).is_dir() and (Path(source) / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(source)
        return model.to(self.runtime.device).eval(), tok

    def load(
        self, source: str, revision: str = "", base: str = "", progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Pull an adapter or a hybrid (Hub repo id or local dir) through hub_tools and register it."""
        source = (source or "").strip()
        if not source:
            raise AppInputError("Give a Hub repo id (owner/name) or a local directory.")
        local = Path(source)
        is_adapter = (local / "adapter_config.json").is_file() if local.is_dir() else None
        if base and base not in self.registry.entries:
            self.registry[base]  # unknown base: raises a clear message
        if is_adapter and not base:
            raise AppInputError(f"{source} is an adapter: pick the base model it was trained on.")
        name = f"loaded: {source}" + (f"@{revision}" if revision else "")
        args = dict(source=source, revision=revision or None, base=base or None, hybrid=False)
        try:
            model, tok = self._pull(**args, get_base=lambda b: self.get(b, progress))
        except AppInputError:
            raise
        except Exception as e:  # hub_tools raises errors that name the repo and what to do
            raise IncompatibleModelError(_hub_message(source, base, e)) from e
        args["hybrid"] = getattr(model.config, "model_type", None) == "manticore"
        self.pulled[name] = args
        self.cache.put(name, model, tok)
        n_params = sum(p.numel() for p in model.parameters())
        return {
            "name": name,
            "kind": "hybrid" if args["hybrid"] else ("adapter (merged)" if base else model.config.model_type),
            "params": n_params,
            "model_type": model.config.model_type,
            "tokenizer": tok is not None,
        }


def _hub_message(source: str, base: str | None, e: Exception) -> str:
    from hub_tools import HubError

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if base and ("size mismatch" in str(e) or "do not fit" in text):
        return f"{source} does not fit base {base!r}: its tensor names or shapes differ ({text[:200]})."
    if isinstance(e, HubError):
        return text
    return f"Cannot load {source}: {type(e).__name__}: {text[:300]}"


def component_labels(model: Any) -> list[str]:
    """Readable names of a hybrid's components, e.g. ['0: mad/attention', '1: mad/mamba']."""
    cfg = model.config
    names = cfg.component_names or [None] * cfg.num_components
    return [f"{i}: {n or cfg.component_config(i).model_type}" for i, n in enumerate(names)]


def entry_summary(entry: ModelEntry) -> str:
    return f"{entry.name} ({entry.kind}{', hybrid' if entry.is_hybrid else ''})"
