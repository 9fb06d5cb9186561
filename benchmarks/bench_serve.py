"""The HTTP service under load: time to ready, then N requests at a fixed concurrency on loopback.

    python benchmarks/bench_serve.py [--requests 300] [--concurrency 16] [--backend ocr] [--schema pallet_label]

Starts ``invoice-vlm serve`` as a separate process (the OCR backend by default: no model download), measures the
seconds until ``/readyz`` answers, then sends ``--requests`` uploads of one generated pallet label from
``--concurrency`` concurrent clients and prints errors, throughput and latency percentiles (p50, p95, max) as seen by
the clients, queueing included.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests in all (default: 300)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once (default: 16)")
    parser.add_argument("--backend", default="ocr", help="backend to serve (default: ocr)")
    parser.add_argument("--schema", default="pallet_label", help="schema (default: pallet_label)")
    args = parser.parse_args()

    import httpx

    from invoice_vlm.data.synth import generate

    buffer = io.BytesIO()
    generate(args.schema, 3).image.convert("RGB").save(buffer, format="PNG")
    document = buffer.getvalue()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "invoice_vlm.cli",
        "serve",
        "--backend",
        args.backend,
        "--schema",
        args.schema,
    ]
    command += ["--port", str(port), "--queue-size", str(max(64, args.concurrency * 2)), "--no-progress"]
    start = time.perf_counter()
    server = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit("the server exited before it was ready")
            time.sleep(0.05)
        ready = time.perf_counter() - start

        async def run() -> tuple[list[float], list[int], float]:
            limit = asyncio.Semaphore(args.concurrency)
            latencies: list[float] = []
            statuses: list[int] = []
            async with httpx.AsyncClient(timeout=300) as http:

                async def one() -> None:
                    async with limit:
                        began = time.perf_counter()
                        files = {"file": ("label.png", document, "image/png")}
                        response = await http.post(url + "/v1/extract", files=files)
                        latencies.append(time.perf_counter() - began)
                        statuses.append(response.status_code)

                began = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(args.requests)))
                return latencies, statuses, time.perf_counter() - began

        latencies, statuses, elapsed = asyncio.run(run())
    finally:
        server.terminate()
        server.wait(30)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    errors = sum(1 for s in statuses if s != 200)
    print(f"backend {args.backend}, schema {args.schema}: ready in {ready:.2f} s")
    print(
        f"{args.requests} requests, concurrency {args.concurrency}: {errors} errors, {args.requests / elapsed:.2f} req/s"
    )
    print(
        f"latency p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s "
        "(queueing included)"
    )


if __name__ == "__main__":
    main()
