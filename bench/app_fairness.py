"""Fairness under a flood: one visitor keeps the queue full, another makes small requests; do those finish?

    python bench/app_fairness.py                     # bundled assets, 90 s per phase, writes bench/results/
    python bench/app_fairness.py --seconds 30 --flood 20 --assets DIR

The app runs as a public Space would (``SPACE_ID`` set, visitors told apart by the address the Space's
proxy appends to ``X-Forwarded-For``, which the two gradio_client visitors send). Two phases, each on a
fresh app:

- ``per-visitor limit`` (the public app as shipped: one running job per visitor, the rest refused when
  the queue reaches them);
- ``no limit`` (``MAD_MODELS_MAX_JOBS_PER_VISITOR`` set high: what the public app did before issue 24).

Visitor A keeps ``--flood`` Compare requests (the language base and its adapters, 64 tokens each) queued at
all times, submitting a new one whenever one ends. Visitor B, once A's flood is in the queue, sends a small
Compare (the base, 4 tokens) and, when it returns, waits 1 s and sends the next; a small request still
waiting after ``--wait`` seconds ends the phase. Reported per phase: B's requests finished and their
latency (p50, p95, max), how long an unfinished one had waited, A's requests that ran and that were
refused. Writes ``bench/results/app-fairness.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(assets: str | None, env_extra: dict[str, str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port)]
    if assets:
        cmd += ["--assets", assets]
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "SPACE_ID": "bench/fairness",  # public mode; visitors from X-Forwarded-For
        **env_extra,
    }
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 300:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return url, proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("app not ready after 300 s")


def model_names(client: Client) -> list[str]:
    info = client.view_api(return_format="dict", print_info=False)
    params = info["named_endpoints"]["/compare"]["parameters"]
    return next(p for p in params if p["parameter_name"] == "models")["type"]["items"]["enum"]


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 2) if xs else None


def phase(
    name: str, assets: str | None, env_extra: dict[str, str], seconds: float, flood: int, wait: float
) -> dict:
    url, proc = start_app(assets, env_extra)
    try:
        a = Client(url, verbose=False, headers={"X-Forwarded-For": "203.0.113.1"})  # the flooding visitor
        b = Client(url, verbose=False, headers={"X-Forwarded-For": "203.0.113.2"})
        names = model_names(b)
        language = [n for n in names if not n.startswith("mad/")] or names
        big = ("What is 12 + 7?", language[:3], 64, "greedy", 0, 0.8, 0, True)
        small = ("What is 2 + 3?", language[:1], 4, "greedy", 0, 0.8, 0, True)
        b.predict(*small, api_name="/compare")  # the base is loaded before the clock starts
        load_before = os.getloadavg()[0]
        ran, refused, errors = [0], [0], []
        lock = threading.Lock()
        deadline = time.perf_counter() + seconds
        done = threading.Event()

        def outcome(job) -> None:
            try:
                job.result()
                with lock:
                    ran[0] += 1
            except Exception as e:  # noqa: BLE001  (the refusal arrives as the event's error)
                with lock:
                    if "per visitor" in str(e):
                        refused[0] += 1
                    else:
                        errors.append(f"A: {type(e).__name__}: {str(e)[:200]}")

        def flooder() -> None:
            pending = []
            while not done.is_set():
                pending = [j for j in pending if not j.done()]
                for _ in range(flood - len(pending)):
                    job = a.submit(*big, api_name="/compare")
                    job.add_done_callback(outcome)
                    pending.append(job)
                time.sleep(0.2)

        threading.Thread(target=flooder, daemon=True).start()
        time.sleep(3.0)  # the flood is in the queue before B's first request
        latencies, unfinished = [], None
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            job = b.submit(*small, api_name="/compare")
            try:
                out = job.result(timeout=wait)
                cols = out[0]["results"] if out[0] else []
                if not cols or cols[0]["error"]:
                    errors.append(f"B: {out[1]}")
                else:
                    latencies.append(time.perf_counter() - t)
            except TimeoutError:
                unfinished = round(time.perf_counter() - t, 1)  # still waiting: the phase ends here
                break
            except Exception as e:  # noqa: BLE001
                errors.append(f"B: {type(e).__name__}: {str(e)[:200]}")
            time.sleep(1.0)
        done.set()
        return {
            "phase": name,
            "seconds": seconds,
            "flood": flood,
            "b_finished": len(latencies),
            "b_p50_s": pct(latencies, 0.5),
            "b_p95_s": pct(latencies, 0.95),
            "b_max_s": round(max(latencies), 2) if latencies else None,
            "b_mean_s": round(statistics.fmean(latencies), 2) if latencies else None,
            "b_unfinished_after_s": unfinished,
            "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # start, end
            "a_ran": ran[0],
            "a_refused": refused[0],
            "errors": errors[:20],
            "models": {"big": big[1], "small": small[1]},
        }
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def report(rows: list[dict], args) -> str:
    lines = [
        "# The public app under a flood (`python bench/app_fairness.py`)",
        "",
        f"One visitor keeps {args.flood} Compare requests queued ({', '.join(rows[0]['models']['big'])}, 64 "
        f"new tokens each); another sends a small Compare ({rows[0]['models']['small'][0]}, 4 new tokens) "
        f"every second after the last one returns; {args.seconds:.0f} s per phase, each phase on a fresh app "
        "in public mode (`SPACE_ID` set). CPU, 2 cores shared with other jobs: latencies are noisy; compare "
        "the two rows, measured in one run.",
        "",
        "| phase | small requests finished | p50 s | p95 s | max s | a small request still waiting after | "
        "flood requests run | flood requests refused |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(value, unit: str = "") -> str:
        return "-" if value is None else f"{value}{unit}"

    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['b_finished']} | {cell(r['b_p50_s'])} | {cell(r['b_p95_s'])} | "
            f"{cell(r['b_max_s'])} | {cell(r['b_unfinished_after_s'], ' s')} | {r['a_ran']} | "
            f"{r['a_refused']} |"
        )
    loads = [r.get("load_average_1min") for r in rows]
    if all(loads):
        lines += [
            "",
            "Machine load (1-min load average on 2 cores, start / end of each phase): "
            + "; ".join(f"{r['phase']}: {a} / {b}" for r, (a, b) in zip(rows, loads, strict=True))
            + ".",
        ]
    limited, free = rows[0], rows[1]
    stuck = (
        f"; one was still waiting after {free['b_unfinished_after_s']} s, behind the flood's queued requests"
        if free["b_unfinished_after_s"] is not None
        else ""
    )
    lines += [
        "",
        f"With the per-visitor limit, {limited['b_finished']} small requests finished in "
        f"{args.seconds:.0f} s (p50 {limited['b_p50_s']} s, max {limited['b_max_s']} s) while the "
        f"flood's requests ran one at a time ({limited['a_ran']} finished) and {limited['a_refused']} of "
        "its queued requests were refused when the queue reached them. Without the limit, "
        f"{free['b_finished']} small requests finished{stuck}; the flood ran {free['a_ran']} requests "
        "meanwhile.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0, help="length of each phase")
    ap.add_argument("--flood", type=int, default=40, help="requests visitor A keeps queued")
    ap.add_argument("--wait", type=float, default=300.0, help="longest wait for one small request (s)")
    ap.add_argument("--assets", help="asset dir (default: ./assets)")
    ap.add_argument("--out", default=str(OUT / "app-fairness"), help="writes OUT.json and OUT.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json, run nothing")
    args = ap.parse_args()
    if args.report_only:
        rows = json.loads(Path(f"{args.out}.json").read_text())
        args.seconds, args.flood = rows[0]["seconds"], rows[0]["flood"]
        Path(f"{args.out}.md").write_text(report(rows, args))
        print(report(rows, args))
        return
    rows = [
        phase("per-visitor limit (public app)", args.assets, {}, args.seconds, args.flood, args.wait),
        phase(
            "no limit (before issue 24)",
            args.assets,
            {"MAD_MODELS_MAX_JOBS_PER_VISITOR": "1000000"},
            args.seconds,
            args.flood,
            args.wait,
        ),
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = report(rows, args)
    Path(f"{args.out}.md").write_text(md)
    print(md)
    for r in rows:
        for e in r["errors"]:
            print("ERROR", r["phase"], e)


if __name__ == "__main__":
    main()
