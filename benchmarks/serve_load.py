"""Load on ``bertfit serve``: N concurrent clients send single-sentence ``/predict`` requests.

For each server setting (dynamic batching on; off = ``--max-batch-requests 1``) a real server
runs in its own process on 127.0.0.1; for each client count (1, 8, 32, 128) the clients send a
fixed number of requests, SST-2 dev sentences in turn, over keep-alive connections, after an
unmeasured warm-up at the same count. Reported:
requests/s, p50/p95/p99 latency, failed requests. Then a list of malformed requests is sent and
their status codes recorded (none may be 5xx).

The clients are a minimal asyncio HTTP/1.1 client (not httpx), so that on a 2-core machine the
load generator takes little of the CPU the server needs; both settings pay the same.

Usage: ``python benchmarks/serve_load.py --run runs/sst2 [--requests 1000] [--clients 1,8,32,128]``
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np

SETTINGS = {"batching": [], "no-batching": ["--max-batch-requests", "1"]}


def dev_sentences(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[0] for row in rows[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bertfit", "serve", run, "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen([*cmd, *extra], stderr=subprocess.PIPE, text=True)
    end = time.time() + 120
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
    proc.kill()
    raise SystemExit("the server did not become healthy in 120 s")


async def request(reader, writer, path: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a keep-alive connection: (status, body)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def load(port: int, sentences: list[str], clients: int, total: int) -> dict:
    """``clients`` workers send ``total`` requests between them; latency of each."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                body = json.dumps({"inputs": sentences[i % len(sentences)]}).encode()
                started = time.perf_counter()
                try:
                    status, _ = await request(reader, writer, "/predict", body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    failures += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - started)
                failures += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": total,
        "requests_per_s": round(total / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "failed": failures,
    }


MALFORMED = [
    ("empty text", "/predict", b'{"inputs": ""}'),
    ("blank text", "/predict", b'{"inputs": "   "}'),
    ("empty list", "/predict", b'{"inputs": []}'),
    ("number", "/predict", b'{"inputs": 5}'),
    ("null", "/predict", b'{"inputs": null}'),
    ("list of numbers", "/predict", b'{"inputs": [1, 2]}'),
    ("nested lists", "/predict", b'{"inputs": [[["a"]]]}'),
    ("pair to a single-text run", "/predict", b'{"inputs": {"text": "a", "pair": "b"}}'),
    ("missing inputs", "/predict", b"{}"),
    ("unknown field", "/predict", b'{"inputs": "a", "foo": 1}'),
    ("not JSON", "/predict", b"{not json"),
    ("invalid UTF-8", "/predict", b'{"inputs": "\xff\xfe"}'),
    ("JSON array body", "/predict", b"[1, 2]"),
    ("33 inputs", "/predict", json.dumps({"inputs": ["a"] * 33}).encode()),
    ("3 MB body", "/predict", json.dumps({"inputs": "a " * 1_500_000}).encode()),
    ("10,000-word text", "/predict", json.dumps({"inputs": "word " * 10_000}).encode()),
    ("control characters", "/predict", json.dumps({"inputs": "\u0000\u0001\u200b"}).encode()),
    ("explain steps 0", "/explain", b'{"inputs": "a", "steps": 0}'),
    ("explain a list", "/explain", b'{"inputs": ["a", "b", "c"]}'),
    ("embed on a classifier", "/embed", b'{"inputs": "a"}'),
    ("unknown route", "/nowhere", b"{}"),
]


async def malformed(port: int) -> list[dict]:
    found = []
    for name, path, body in MALFORMED:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, answer = await request(reader, writer, path, body)
        except (OSError, asyncio.IncompleteReadError) as err:
            status, answer = 0, str(err).encode()
        writer.close()
        found.append(
            {
                "request": name,
                "route": path,
                "status": status,
                "answer": answer[:160].decode("utf-8", "replace"),
            }
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--dev", default="../shared/datasets/glue/SST-2/dev.tsv")
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--requests", type=int, default=1000, help="requests per client count")
    parser.add_argument(
        "--extra", default="", help="more 'bertfit serve' options for both settings"
    )
    parser.add_argument("--out", default=f"benchmarks/results/serve_load-{date.today()}.json")
    args = parser.parse_args()
    sentences = dev_sentences(Path(args.dev))
    counts = [int(c) for c in args.clients.split(",")]
    results: dict = {"run": args.run, "cpus": os.cpu_count(), "settings": {}}
    for setting, extra in SETTINGS.items():
        port = free_port()
        proc = start_server(args.run, port, extra + args.extra.split())
        try:
            rows = []
            for n in counts:  # steady state: each count first runs unmeasured a while
                asyncio.run(load(port, sentences, n, min(args.requests, 20 * n)))
                rows.append(asyncio.run(load(port, sentences, n, args.requests)))
            results["settings"][setting] = rows
            if setting == "batching":
                results["malformed"] = asyncio.run(malformed(port))
        finally:
            proc.terminate()
            proc.wait(60)
    report(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def report(results: dict) -> None:
    print(
        f"{'setting':<12} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'failed':>6}"
    )
    for setting, rows in results["settings"].items():
        for r in rows:
            print(
                f"{setting:<12} {r['clients']:>7} {r['requests_per_s']:>8} {r['p50_ms']:>8} "
                f"{r['p95_ms']:>8} {r['p99_ms']:>8} {r['failed']:>6}"
            )
    on, off = results["settings"]["batching"], results["settings"]["no-batching"]
    for a, b in zip(on, off):
        print(
            f"{a['clients']} clients: batching gives {a['requests_per_s'] / b['requests_per_s']:.2f}x"
        )
    codes = [m["status"] for m in results.get("malformed", [])]
    print(
        f"malformed requests: {len(codes)}, statuses {sorted(set(codes))}, 5xx: {sum(c >= 500 for c in codes)}"
    )


if __name__ == "__main__":
    main()
