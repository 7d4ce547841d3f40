"""Load test: N concurrent gradio_client users against the real app for a while; prints one table.

    python bench/app_load.py                       # starts app.py on the bundled assets, 8 users, 120 s
    python bench/app_load.py --seconds 30 --users 4
    python bench/app_load.py --url http://127.0.0.1:7860/   # an app that is already running

Each user loops over a fixed mix of requests (Compare on the language base and on MAD models, MAD
skills, Hybrid mixtures), as a person clicking around would. Reports errors (goal: 0), p50/p95 latency
per request kind and overall, requests/s, and the server's peak resident memory (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]


def check(out, api: str) -> None:
    """Compare reports a failed model in its column and a bad request in its status line, not as an
    exception: count those as errors too."""
    if api != "/compare":
        return
    result, status = out[0], out[1]["value"] if isinstance(out[1], dict) else out[1]
    if not result:
        raise RuntimeError(f"compare refused the request: {status}")
    failed = [f"{r['name']}: {r['error']}" for r in result["results"] if r["error"]]
    if failed:
        raise RuntimeError(f"compare column failed: {failed[0][:200]}")


def requests_for(names: list[str]) -> list[tuple[str, tuple, str]]:
    """(kind, args, api_name) in the order a user cycles through them, for the models that exist."""
    out = []
    language = [n for n in names if not n.startswith("mad/")]
    if language:
        out.append(
            (
                "compare: base, 16 tokens",
                ("What is 12 + 7?", language[:1], 16, "greedy", 0, 0.8, 50, True),
                "/compare",
            )
        )
        if len(language) > 1:
            out.append(
                (
                    "compare: base+adapter, 16 tokens",
                    ("What is 31 + 45?", language[1:2], 16, "sample", 3, 0.8, 50, True),
                    "/compare",
                )
            )
    mad = [n for n in names if n.startswith("mad/")]
    if mad:
        out.append(
            (
                "compare: 2 MAD models, 8 tokens",
                ("1 17 2 18 3 19 1", mad[:2], 8, "greedy", 0, 0.8, 0, False),
                "/compare",
            )
        )
        out.append(("mad skills: 32 seqs", ("in_context_recall", mad[:2], 32, 1), "/mad_skills"))
    if "mad/hybrid" in names:
        out.append(("hybrid mixtures", ("mad/hybrid", 0.3), "/mixture"))
    if not out:
        raise SystemExit("no models registered: build the assets first (python -m build_assets build)")
    return out


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"app not ready after {timeout} s")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--url", help="an app already running (else app.py is started here)")
    ap.add_argument("--assets", help="asset dir for the app started here (default: ./assets)")
    ap.add_argument("--port", type=int, default=7861)
    args = ap.parse_args()
    if args.users < 1 or args.seconds <= 0:
        raise SystemExit("--users must be >= 1 and --seconds > 0")

    proc = None
    url = args.url
    if url is None:
        cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(args.port)]
        if args.assets:
            cmd += ["--assets", args.assets]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{args.port}/"
    startup = wait_ready(url, proc)
    server = psutil.Process(proc.pid) if proc else None
    peak = [0]
    stop = threading.Event()

    def sample_memory() -> None:
        while not stop.is_set() and server is not None:
            try:
                rss = server.memory_info().rss + sum(
                    c.memory_info().rss for c in server.children(recursive=True)
                )
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    threading.Thread(target=sample_memory, daemon=True).start()
    try:
        client = Client(url, verbose=False)
        # names from the Compare tab's checkbox choices
        info = client.view_api(return_format="dict", print_info=False)
        params = info["named_endpoints"]["/compare"]["parameters"]
        names = next(p for p in params if p["parameter_name"] == "models")["type"]["items"]["enum"]
        mix = requests_for(names)
        t0 = time.perf_counter()
        kind0, a0, api0 = mix[0]  # the first request a visitor makes, right after the page is up
        check(client.predict(*a0, api_name=api0), api0)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _kind, a, api in mix:  # warm-up: load every model once, outside the timed window
            check(client.predict(*a, api_name=api), api)
        warmup = time.perf_counter() - t0

        lat: dict[str, list[float]] = {k: [] for k, _, _ in mix}
        errors: list[str] = []
        lock = threading.Lock()
        deadline = time.perf_counter() + args.seconds

        def user(i: int) -> None:
            c = Client(url, verbose=False)
            j = i
            while time.perf_counter() < deadline:
                kind, a, api = mix[j % len(mix)]
                j += 1
                t = time.perf_counter()
                try:
                    check(c.predict(*a, api_name=api), api)
                    with lock:
                        lat[kind].append(time.perf_counter() - t)
                except Exception as e:  # counted and printed: the goal is none
                    with lock:
                        errors.append(f"user {i} {kind}: {type(e).__name__}: {str(e)[:200]}")

        threads = [threading.Thread(target=user, args=(i,)) for i in range(args.users)]
        t_run = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_run
    finally:
        stop.set()
        if proc is not None:
            proc.terminate()
            proc.wait(20)

    everything = [x for xs in lat.values() for x in xs]
    print(f"\napp load test: {args.users} users, {args.seconds:.0f} s, {url}")
    print(
        f"start-up to first page: {startup:.1f} s; first request ({kind0}) right after: {first:.1f} s; "
        f"warm-up (first load of every model): {warmup:.1f} s\n"
    )
    print(f"| {'request':<34} | {'n':>5} | {'p50 s':>7} | {'p95 s':>7} | {'mean s':>7} |")
    print(f"|{'-' * 36}|{'-' * 7}:|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|")
    for kind, xs in list(lat.items()) + [("all", everything)]:
        mean = statistics.fmean(xs) if xs else float("nan")
        print(f"| {kind:<34} | {len(xs):>5} | {pct(xs, 0.5):>7.2f} | {pct(xs, 0.95):>7.2f} | {mean:>7.2f} |")
    print(f"\nrequests: {len(everything)} ok, {len(errors)} errors, {len(everything) / wall:.2f} req/s")
    if server is not None:
        print(f"server peak resident memory: {peak[0] / 2**20:.0f} MiB")
    for e in errors[:20]:
        print("ERROR", e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
