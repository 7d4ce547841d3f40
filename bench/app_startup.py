"""Speed to first use, as a visitor sees it in a real browser, and whether the app's tok/s are true.

    python bench/app_startup.py                 # bundled assets, 3 fresh starts, then the tok/s check
    python bench/app_startup.py --runs 5 --assets DIR --out bench/results/app-startup

Each run starts ``python app.py`` afresh and opens the page in headless Chromium (Playwright) as soon as
the server answers. It records, from the moment the process is spawned:

- ``server_s``: the first HTTP 200 on ``/``;
- ``page_ready_s``: the page drawn and its Run button enabled (what a visitor waits for);
- ``first_compare_s``: Run clicked at once with the default pick, until every column says it is done
  (the click itself is timed too, ``compare_after_click_s``).

Targets (issue 23): page ready <= 10 s and first Compare <= 20 s on a quiet machine. The machine's load
average is recorded next to every run: on a shared machine the figures are upper bounds.

``--baseline DIR`` (another checkout of the repo, e.g. ``git archive main | tar -x -C DIR``) starts DIR's
``app.py`` before each run of this checkout's, on the same assets, so a change is measured against the code
before it in the same sitting, under the same load.

Then the tok/s check (app and this process on ``--threads`` torch threads): each MAD model (one column,
no batch) generates 32 tokens through the app's ``compare`` API, and the same model generates 32 tokens
in this process (``model.generate`` timed for 1
and for 32 tokens; decode = 31 tokens over the difference). The app's decode tok/s over the in-process
one should be near 1 (it read 0.06-0.08 when tokens were timed as the page took them).
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: app_backend from the checkout (it is not installed)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-component-update",
]
TARGETS = {"page_ready_s": 10.0, "first_compare_s": 20.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(
    assets: str | None, log: Path, threads: int | None = None, root: Path = ROOT
) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    cmd = [sys.executable, str(root / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if assets:
        cmd += ["--assets", assets]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    if threads is not None:
        env["MAD_MODELS_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/", t0


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"app not up after {timeout} s")


def cpu_s(proc: subprocess.Popen) -> float:
    """CPU seconds the app's process has used so far (user + system): close to what a quiet machine's
    wall clock would show for single-threaded start-up work, whatever the load."""
    import psutil

    t = psutil.Process(proc.pid).cpu_times()
    return round(t.user + t.system, 2)


def one_start(browser, assets: str | None, log: Path, root: Path = ROOT) -> dict:
    load_before = os.getloadavg()[0]
    proc, url, t0 = start_app(assets, log, root=root)
    try:
        wait_http(url, proc)
        server = time.perf_counter() - t0
        server_cpu = cpu_s(proc)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        run = page.locator("#run-compare")
        run.wait_for(state="visible", timeout=300_000)
        page.wait_for_function(
            "() => { const b = document.querySelector('#run-compare'); return b && !b.disabled }",
            timeout=300_000,
        )
        ready = time.perf_counter() - t0
        ready_cpu = cpu_s(proc)
        picked = page.locator("#models input[type=checkbox]:checked").count()
        clicked = time.perf_counter()
        run.click()
        for i in range(picked):
            page.locator(f"#stats-{i}").get_by_text("done").wait_for(timeout=600_000)
        done = time.perf_counter()
        done_cpu = cpu_s(proc)
        page.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "server_s": round(server, 2),
        "page_ready_s": round(ready, 2),
        "first_compare_s": round(done - t0, 2),
        "compare_after_click_s": round(done - clicked, 2),
        "server_cpu_s": server_cpu,
        "page_ready_cpu_s": ready_cpu,
        "first_compare_cpu_s": done_cpu,
        "columns": picked,
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def tok_s_check(assets: str | None, log: Path, tokens: int = 32, threads: int = 1) -> list[dict]:
    """The app's decode tok/s for each MAD model against the same model timed in this process."""
    from gradio_client import Client

    from app_backend.generation import decode_speed
    from app_backend.registry import Registry
    from app_backend.service import AppService

    proc, url, _ = start_app(assets, log, threads)
    rows = []
    try:
        wait_http(url, proc)
        client = Client(url, verbose=False)
        names = [n for n in Registry.from_dir(assets).names() if n.startswith("mad/")]
        prompt = "1 9 2 10 3 11 1"
        for name in names:
            client.predict(prompt, [name], 4, "greedy", 0, 0.8, 0, False, api_name="/compare")  # load it
            result = client.predict(prompt, [name], tokens, "greedy", 0, 0.8, 0, False, api_name="/compare")[
                0
            ]
            r = result["results"][0]
            rows.append(
                {"model": name, "app_decode_tok_s": r["decode_tokens_per_s"], "app_prefill_s": r["prefill_s"]}
            )
    finally:
        proc.terminate()
        proc.wait(30)
    import torch

    torch.set_num_threads(threads)  # as the app ran
    svc = AppService(Registry.from_dir(assets))  # the same loader, now with the cores to itself
    for row in rows:
        model = svc.get(row["model"]).model
        best = decode_speed(model, [int(t) for t in "1 9 2 10 3 11 1".split()], tokens)
        row["in_process_decode_tok_s"] = round(statistics.median(best), 1)
        row["ratio_app_over_in_process"] = round(row["app_decode_tok_s"] / row["in_process_decode_tok_s"], 2)
    return rows


def run_rows(runs: list[dict]) -> list[str]:
    rows = [
        "| run | server up s | page ready s | first Compare done s | Compare after click s | columns "
        "| load before | load after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        rows.append(
            f"| {i} | {r['server_s']} ({r['server_cpu_s']}) | "
            f"{r['page_ready_s']} ({r['page_ready_cpu_s']}) | "
            f"{r['first_compare_s']} ({r['first_compare_cpu_s']}) | "
            f"{r['compare_after_click_s']} | {r['columns']} | {r['load_avg_1min_before']} | "
            f"{r['load_avg_1min_after']} |"
        )
    return rows


CPU_KEYS = ("server_cpu_s", "page_ready_cpu_s", "first_compare_cpu_s")


def cpu_medians(runs: list[dict]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in CPU_KEYS}


def markdown(
    runs: list[dict], speed: list[dict], cpus: int, baseline: list[dict] | None = None, label: str = ""
) -> str:
    lines = [
        "# App start-up and first Compare (bench/app_startup.py)",
        "",
        f"Headless Chromium, fresh `python app.py` per run, {cpus} cores shared with the rest of the team "
        "(load average beside each run: figures measured under load are upper bounds of a quiet machine's). "
        f"Targets: page ready <= {TARGETS['page_ready_s']:.0f} s, first Compare <= "
        f"{TARGETS['first_compare_s']:.0f} s (quiet machine).",
        "",
        "Wall-clock seconds from the app's start, and (in brackets) the CPU seconds its process used by",
        "then: the CPU figure is what a quiet machine's clock would show for this single-threaded start-up,",
        "give or take the cores generation uses.",
        "",
    ]
    lines += run_rows(runs)
    if runs:
        med = {k: statistics.median(r[k] for r in runs) for k in ("page_ready_s", "first_compare_s")}
        cpu = cpu_medians(runs)
        lines += [
            "",
            f"Median: page ready {med['page_ready_s']:.1f} s, first Compare {med['first_compare_s']:.1f} s "
            f"(CPU-s: server up {cpu['server_cpu_s']}, page ready {cpu['page_ready_cpu_s']}, first Compare "
            f"{cpu['first_compare_cpu_s']}).",
        ]
    if baseline:
        before = cpu_medians(baseline)
        lines += [
            "",
            f"## Baseline: {label}, each run started just before this checkout's run of the same number",
            "",
            *run_rows(baseline),
            "",
            f"Median CPU-s, baseline -> this checkout: server up {before['server_cpu_s']} -> "
            f"{cpu['server_cpu_s']}, page ready {before['page_ready_cpu_s']} -> {cpu['page_ready_cpu_s']}, "
            f"first Compare {before['first_compare_cpu_s']} -> {cpu['first_compare_cpu_s']}.",
        ]
    if speed:
        lines += [
            "",
            "## tok/s: the app's figure against the same model timed in process",
            "",
            "| model | app decode tok/s | in-process decode tok/s | app / in-process | app prefill s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in speed:
            lines.append(
                f"| {r['model']} | {r['app_decode_tok_s']} | {r['in_process_decode_tok_s']} | "
                f"{r['ratio_app_over_in_process']} | {r['app_prefill_s']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--assets", default=str(ROOT / "assets"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/app-startup"))
    ap.add_argument("--skip-speed", action="store_true", help="only the start-up runs")
    ap.add_argument(
        "--baseline",
        help="another checkout of the repo: its app.py starts before each run of this one's (same assets)",
    )
    ap.add_argument("--baseline-label", default="", help="what the baseline is, for the report (a commit)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the app and of this process in the tok/s check (default 1: on a busy "
        "machine two threads' spinning dwarfs a tiny model's work)",
    )
    args = ap.parse_args()
    if args.runs < 0:
        raise SystemExit("--runs must be >= 0")
    base_root = Path(args.baseline).resolve() if args.baseline else None
    if base_root is not None and not (base_root / "app.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no app.py there")
    from playwright.sync_api import sync_playwright

    log = Path(args.out + ".app.log")
    runs, baseline = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for i in range(args.runs):
            if base_root is not None:
                baseline.append(one_start(browser, args.assets, log, root=base_root))
                print(f"baseline run {i + 1}: {baseline[-1]}", flush=True)
            runs.append(one_start(browser, args.assets, log))
            print(f"run {i + 1}: {runs[-1]}", flush=True)
        browser.close()
    speed = [] if args.skip_speed else tok_s_check(args.assets, log, threads=args.threads)
    for row in speed:
        print(row, flush=True)
    record = {
        "runs": runs,
        "tok_s": speed,
        "cpus": os.cpu_count(),
        "targets": TARGETS,
        "assets": os.path.relpath(args.assets, ROOT),
    }
    if base_root is not None:
        record["baseline"] = {"label": args.baseline_label or str(base_root), "runs": baseline}
    text = markdown(runs, speed, os.cpu_count() or 0, baseline, args.baseline_label or str(base_root))
    Path(args.out + ".json").write_text(json.dumps(record, indent=1) + "\n")
    Path(args.out + ".md").write_text(text)
    log.unlink(missing_ok=True)
    print(text)


if __name__ == "__main__":
    main()
