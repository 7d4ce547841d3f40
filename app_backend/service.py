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
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from app_backend.cache import ModelCache, ProgressFn
from app_backend.generation import (
    GenStats,
    check_max_new_tokens,
    decode,
    encode_prompt,
    stream_generate_steps,
)
from app_backend.registry import (
    AppInputError,
    IncompatibleModelError,
    Loaded,
    ModelEntry,
    Registry,
    model_nbytes,
)
from app_backend.runtime import Runtime, pick_runtime
from app_backend.shared import AdapterHost, sharing_copy
from mad_models.cards import is_hub_id

log = logging.getLogger("mad-models-app")
MAX_COMPARE = 8  # output columns on the Compare tab
MAX_LOADED_PER_SESSION = int(os.environ.get("MAD_MODELS_MAX_LOADED", "3"))  # Load tab, per browser session
MAX_MAD_EXAMPLES = 512


# The browser session a UI handler is serving (see AppService.session_scope); None outside the UI.
_ACTIVE_SESSION: ContextVar[str | None] = ContextVar("app_session", default=None)


class AppService:
    def __init__(
        self,
        registry: Registry,
        runtime: Runtime | None = None,
        public: bool = False,
        max_loaded_per_session: int = MAX_LOADED_PER_SESSION,
    ):
        self.registry = registry
        self.runtime = runtime or pick_runtime()
        self.public = public  # a public Space: Load takes Hub ids only
        self.max_loaded_per_session = max_loaded_per_session
        self.cache = ModelCache(self.runtime.cache_bytes, self._load)
        # Load tab: cache key -> how to build it again after eviction; session -> {display name: key}
        self.pulled: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, str]] = {}
        self._reports: dict[str, Any] = {}  # adapter name -> AdapterReport (exact, computed once)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- loading (one loader for all)
    def _spec(self, key: str) -> dict[str, Any]:
        """How to build cache entry ``key``: a registry entry or something loaded through Load."""
        if key in self.pulled:
            return self.pulled[key]
        entry = self.registry[key]  # raises the "unknown model" message
        if entry.kind == "smollm2":
            return {"kind": "smollm2"}
        return {"source": str(entry.path), "revision": None, "base": entry.base, "name": entry.name}

    def _load(self, key: str, get_base: Callable[[str], Loaded]) -> Loaded:
        """Build one model for the cache: registry entries and Load-tab models alike, through
        ``hub_tools.pull`` (safetensors only, no remote code). An adapter is injected by name into its
        base's shared tree (an ``AdapterHost``), never merged into a copy."""
        spec = self._spec(key)
        rt = self.runtime
        if spec.get("kind") == "smollm2":
            from mad_models.loading import load_smollm2

            if rt.quant != "none":
                model, tok = load_smollm2(device=rt.device, quantization=rt.quant)
            else:
                model, tok = load_smollm2(device=rt.device)  # in pick_device's dtype; GGUF refuses .to(dtype)
            return Loaded(key, model.eval(), tok, model_nbytes(model), 0.0)
        base = get_base(spec["base"]) if spec.get("base") else None
        model = self._pull(spec["source"], spec.get("revision"), base, spec.get("name", key))
        if hasattr(model, "peft_config"):  # an adapter
            if base is None:
                raise AppInputError(f"{spec['source']} is an adapter: pick the base model it was trained on.")
            host = self._host(base)
            try:
                aid = host.add(model)
            except (RuntimeError, ValueError, KeyError) as e:
                raise IncompatibleModelError(
                    f"{spec.get('name', key)}: the adapter does not fit base {spec['base']!r}: {e}"
                ) from e
            del model
            return Loaded(
                key, host.view(aid), base.tokenizer, host.adapters[aid], 0.0, spec["base"], host, aid
            )
        # a whole model (hybrids included): its own tokenizer or none, never the base's
        tok = _local_tokenizer(spec["source"])
        model = model.to(rt.device).eval()
        return Loaded(key, model, tok, model_nbytes(model), 0.0)

    def _host(self, base: Loaded) -> AdapterHost:
        with self._lock:
            if base.host is None:
                base.host = AdapterHost(base.model)
            return base.host

    def _pull(self, source: str, revision: str | None, base: Loaded | None, name: str) -> Any:
        from hub_tools import pull

        try:
            return pull(
                source,
                revision=revision or None,
                base_model=sharing_copy(base.model) if base is not None else None,
                dtype=self.runtime.dtype,
            )
        except AppInputError:
            raise
        except Exception as e:  # hub_tools raises errors that name the repo and what to do
            raise IncompatibleModelError(_hub_message(name, base.name if base else None, e)) from e

    def get(self, name: str, progress: ProgressFn | None = None, session: str | None = None) -> Loaded:
        """The loaded model ``name``: a registry entry, or one this session loaded through Load."""
        return self.cache.get(self._key(name, session), progress)

    @staticmethod
    @contextmanager
    def session_scope(session: str | None) -> Iterator[None]:
        """Within this block, calls that pass no ``session`` act for ``session`` (a browser session's hash):
        a UI handler wraps its work in it, so a name resolves to this session's loads and never another's."""
        token = _ACTIVE_SESSION.set(session)
        try:
            yield
        finally:
            _ACTIVE_SESSION.reset(token)

    def _key(self, name: str, session: str | None) -> str:
        session = session if session is not None else _ACTIVE_SESSION.get()
        loaded = self.sessions.get(session or "", {})
        if name in loaded:
            return loaded[name]
        if name in self.registry.entries:
            return name
        if session is None:  # in-process callers (tests, benches) outside any session_scope
            for own in self.sessions.values():
                if name in own:
                    return own[name]
            if name in self.pulled:
                return name
        self.registry[name]  # raises the "unknown model" message
        return name

    def model_names(self, session: str | None = None) -> list[str]:
        own = self.sessions.get(session or "", {}) if session is not None else dict.fromkeys(self.pulled)
        return list(self.registry.entries) + [n for n in own if n not in self.registry.entries]

    def warm(self) -> None:
        """Load what the Compare tab picks by default (the first language base and its adapters, which
        only add their own weights to the shared base), in the background at start-up."""
        language = self.registry.names(group="language") or self.registry.names()
        for name in language[:4]:
            try:
                item = self.get(name)
                if item.adapter is None and self.registry.entries[name].kind != "adapter":
                    self._host(item)  # the shared tree its adapters go into
            except Exception as e:  # the first Compare will say what is wrong, in its column
                log.warning("warming %s failed: %s", name, e)
        log.info("warm: %s loaded", ", ".join(language[:4]))

    def cache_line(self, session: str | None = None) -> str:
        """What the cache holds, naming only registry models and this session's own loads (no paths)."""
        st = self.cache.stats()
        own = {k: n for n, k in self.sessions.get(session or "", {}).items()}
        shown = [own.get(k, k) for k in st["loaded"] if k in self.registry.entries or k in own]
        others = len(st["loaded"]) - len(shown)
        more = f" and {others} loaded by other sessions" if others else ""
        return (
            f"Model cache: {', '.join(shown) or 'none of yours'}{more} · {st['bytes'] / 2**20:,.0f} of "
            f"{st['max_bytes'] / 2**20:,.0f} MiB (shared bases counted once) · {st['evictions']} evictions"
        )

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
        session: str | None = None,
        stop_at_eos: bool = True,
    ) -> Iterator[list[dict[str, Any]]]:
        """Run one prompt through several models, yielding all columns after every new token.

        Columns on one base (the base itself and its adapters) generate in ONE batched ``generate``
        with a mixed-adapter batch (the base's row is "__base__"); other models run one after another.
        A column is ``{"name", "model", "text", "token_ids", "new_tokens", "seconds", "tokens_per_s",
        "first_token_s", "stats", "error", "settings"}``. A column that fails (cannot load, cannot take
        this prompt, breaks while generating) gets its error in its own column; the others still run.
        Bad settings for the whole request raise ``AppInputError`` before anything runs.
        ``stop_at_eos=False`` makes every column generate ``max_new_tokens`` (equal work per column, for
        throughput measurements); the UI always stops a column at its EOS.
        """
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        names = [n for n in (names or []) if n]
        if not names:
            raise AppInputError("Pick at least one model to compare.")
        if len(names) > MAX_COMPARE:
            raise AppInputError(f"At most {MAX_COMPARE} models at once; {len(names)} were picked.")
        if not prompt or not prompt.strip():
            raise AppInputError("The prompt is empty.")
        settings = dict(
            max_new_tokens=max_new_tokens,
            decoding="sample" if sample else "greedy",
            seed=int(seed),
            temperature=float(temperature),
            top_k=int(top_k),
            chat=bool(chat),
            stop_at_eos=bool(stop_at_eos),
        )
        cols = [
            dict(
                name=n,
                model=n,
                text="",
                token_ids=[],
                new_tokens=0,
                seconds=0.0,
                tokens_per_s=0.0,
                first_token_s=0.0,
                latency_s=0.0,
                stats="waiting…",
                error=None,
                settings=settings,
            )
            for n in names
        ]
        yield cols
        loaded: dict[int, Loaded] = {}
        prompts: dict[int, list[int]] = {}
        for i, col in enumerate(cols):
            col["stats"] = f"loading {col['model']}…"
            yield cols
            try:
                item = self.get(col["model"], None, session)
                vocab = item.model.config.get_text_config().vocab_size
                prompts[i] = encode_prompt(prompt, item.tokenizer, vocab, chat=chat)
                loaded[i] = item
                col["stats"] = "ready"
            except Exception as e:  # noqa: BLE001  (one column's failure stops only that column)
                _fail(col, e)
            yield cols
        # one batch per shared base: the base's own column joins as "__base__"
        groups: dict[int, list[int]] = {}
        for i, item in loaded.items():
            if item.host is not None and item.adapter is not None:
                groups.setdefault(id(item.host), []).append(i)
        for i, item in loaded.items():
            if item.host is not None and item.adapter is None and id(item.host) in groups:
                groups[id(item.host)].append(i)
        batches: list[list[int]] = []
        grouped = {i for g in groups.values() for i in g}
        for i in loaded:
            if i in grouped:
                g = groups[id(loaded[i].host)]
                if g not in batches:
                    batches.append(g)
            else:
                batches.append([i])
        for batch in batches:
            yield from self._generate(batch, cols, loaded, prompts, settings)

    def _generate(
        self,
        batch: list[int],
        cols: list[dict[str, Any]],
        loaded: dict[int, Loaded],
        prompts: dict[int, list[int]],
        settings: dict[str, Any],
    ) -> Iterator[list[dict[str, Any]]]:
        first = loaded[batch[0]]
        shared = len(batch) > 1 or first.adapter is not None
        host = first.host
        stats = [GenStats() for _ in batch]
        for i in batch:
            cols[i]["stats"] = "generating…" + (f" (batched ×{len(batch)})" if len(batch) > 1 else "")
        yield cols
        try:
            for step in stream_generate_steps(
                host.model if shared else first.model,
                [prompts[i] for i in batch],
                settings["max_new_tokens"],
                adapter_names=[loaded[i].adapter or "__base__" for i in batch] if shared else None,
                hold=host.reading() if shared else None,
                sample=settings["decoding"] == "sample",
                seed=settings["seed"],
                temperature=settings["temperature"],
                top_k=settings["top_k"],
                stats=stats,
                stop_at_eos=settings["stop_at_eos"] and first.tokenizer is not None,
            ):
                for row, tok in step:
                    col, item = cols[batch[row]], loaded[batch[row]]
                    col["token_ids"].append(tok)
                    col["text"] = decode(col["token_ids"], item.tokenizer)
                    col["stats"] = f"generating · {stats[row].line()} (of {settings['max_new_tokens']})"
                yield cols  # once per step: every column of the batch moved on
        except Exception as e:  # noqa: BLE001
            for i in batch:
                _fail(cols[i], e)
            yield cols
            return
        for row, i in enumerate(batch):
            st, col = stats[row], cols[i]
            col["stats"] = "done · " + st.line() + (f" · batched ×{len(batch)}" if len(batch) > 1 else "")
            col.update(
                new_tokens=st.n_tokens,
                seconds=round(st.total_s, 4),
                tokens_per_s=round(st.tokens_per_s, 2),
                first_token_s=round(st.first_token_s, 4),
                latency_s=st.total_s,
            )
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
    def hybrid_names(self, session: str | None = None) -> list[str]:
        own = self.sessions.get(session or "", {})
        return self.registry.names(hybrids_only=True) + [
            n for n, key in own.items() if self.pulled.get(key, {}).get("hybrid")
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

    def mad_tasks(self) -> list[str]:
        """The MAD tasks the registered MAD models were trained on (``meta.mad_tasks``), in MAD's order;
        every task when no entry says."""
        from mad_models.mad import TASKS

        listed = [self.registry[n].meta.get("mad_tasks") for n in self.mad_names()]
        if not listed or any(t is None for t in listed):
            return list(TASKS)
        return [t for t in TASKS if any(t in tasks for tasks in listed)]

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
        settings_by_key: dict[str, dict] = {}
        for n in names:
            entry = self.registry[n]
            trained_on = entry.meta.get("mad_tasks")
            if trained_on is not None and task not in trained_on:
                # e.g. compression: MAD scores it through an auto-encoder's decoder, which a model not
                # trained on it lacks; a plain LM's next-token score there would mean nothing
                raise IncompatibleModelError(
                    f"{n} was not trained on {task}; its MAD tasks are {', '.join(trained_on) or 'none'}."
                )
            settings = (trained_on or {}).get(task, {})
            key = repr(sorted(settings.items()))
            settings_by_key[key] = settings
            if key not in data_by_settings:
                # the test split at the MAD test seed + the UI seed: seed 0 is the standard test set, and
                # every split has its own random stream, so no seed repeats training data
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
        base = mad_baselines(task, x, y, settings_by_key[example["batch"]])
        scored = int((y != -100).sum())
        rows.append(
            {
                "model": "no-learning heuristic (most frequent candidate so far)",
                "accuracy": base["heuristic"],
                "correct": round(base["heuristic"] * scored),
                "scored": scored,
                "seq_len": x.shape[1],
            }
        )
        rows.append(
            {
                "model": "chance (1 / possible targets)",
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
    def load(
        self,
        source: str,
        revision: str = "",
        base: str = "",
        progress: ProgressFn | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Pull an adapter or a hybrid (Hub repo id or local dir) through hub_tools, for this session.

        On a public Space (``public``) only Hub ids are taken. A revision is refused for a local dir
        (there is nothing to check out), and each session may hold ``max_loaded_per_session`` models.
        """
        source = (source or "").strip()
        revision = (revision or "").strip()
        if not source:
            raise AppInputError("Give a Hub repo id (owner/name) or a local directory.")
        local = Path(source).expanduser()
        looks_local = local.exists() or source.startswith((".", "/", "~")) or "\\" in source
        if self.public and (looks_local or not is_hub_id(source)):
            raise AppInputError(
                "This app runs as a public Space: Load takes Hub repo ids (owner/name) only, not local paths."
            )
        if looks_local and revision:
            raise AppInputError(
                f"A revision ({revision!r}) only applies to Hub repos; "
                f"{local.name or source} is a local directory."
            )
        if looks_local and not local.is_dir():
            raise AppInputError("That local path is not a directory.")
        if not looks_local and not is_hub_id(source):
            raise AppInputError(f"{source!r} is neither a Hub repo id (owner/name) nor a local directory.")
        if base and (base not in self.registry.entries or self.registry.entries[base].kind == "adapter"):
            raise AppInputError(f"Unknown base model {base!r}: pick one of the registered base models.")
        is_adapter = (local / "adapter_config.json").is_file() if looks_local else None
        if is_adapter and not base:
            raise AppInputError(f"{local.name} is an adapter: pick the base model it was trained on.")
        if looks_local and is_adapter is False and base:
            base = ""  # a whole model: the base (and its tokenizer) has nothing to do with it
        label = local.name if looks_local else source  # never a server path in the UI
        name = f"loaded: {label}" + (f"@{revision}" if revision else "")
        key = f"loaded: {local.resolve() if looks_local else source}@{revision}|{base}"
        own = self.sessions.setdefault(session or "", {})
        if name not in own and len(own) >= self.max_loaded_per_session:
            raise AppInputError(
                f"This session already holds {len(own)} loaded models (the limit is "
                f"{self.max_loaded_per_session}); reload the page to start afresh."
            )
        spec = dict(
            source=str(local) if looks_local else source, revision=revision or None, base=base or None
        )
        spec["name"] = name
        with self._lock:
            known = self.pulled.get(key)
            self.pulled[key] = spec
        try:
            item = self.cache.get(key, progress)
        except Exception:
            if known is None:
                with self._lock:
                    self.pulled.pop(key, None)
            raise
        own[name] = key
        model = item.model
        hybrid = getattr(model.config, "model_type", None) == "manticore"
        spec["hybrid"] = hybrid
        if item.adapter is not None:
            kind = "adapter (shares its base's weights)"
            params = item.nbytes // max(1, next(model.parameters()).element_size())
        else:
            kind = "hybrid" if hybrid else model.config.model_type
            params = sum(p.numel() for p in model.parameters())
        return {
            "name": name,
            "kind": kind,
            "params": params,
            "model_type": model.config.model_type,
            "tokenizer": item.tokenizer is not None,
            "hybrid": hybrid,
        }

    def forget_session(self, session: str | None) -> None:
        """A browser session ended: drop what it loaded (unless another session uses it too)."""
        own = self.sessions.pop(session or "", {})
        still = {k for s in self.sessions.values() for k in s.values()}
        for key in set(own.values()) - still:
            self.cache.discard(key)
            with self._lock:
                self.pulled.pop(key, None)


def _fail(col: dict[str, Any], e: Exception) -> None:
    """Put an error into its column, as a message (unexpected errors are logged with their trace)."""
    if isinstance(e, AppInputError):
        msg = str(e)
    else:
        log.error("compare: %s failed:\n%s", col["model"], traceback.format_exc())
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    col["error"], col["stats"], col["text"] = msg, "error", f"⚠ {msg}"


def _local_tokenizer(source: str) -> Any:
    """The tokenizer saved next to a local model, loaded without remote code; None if there is none."""
    folder = Path(source)
    if not folder.is_dir() or not any(
        (folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    ):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, OSError, KeyError) as e:
        raise IncompatibleModelError(
            f"{folder.name}: its tokenizer cannot be loaded without running its own code ({_first(e)})."
        ) from e


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__


def _hub_message(source: str, base: str | None, e: Exception) -> str:
    from hub_tools import HubError

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if base and ("size mismatch" in str(e) or "do not fit" in text or "does not fit" in text):
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
