"""The server under load: 200 requests from 16 concurrent clients, batched against one request at a time, and RoDE
against plain LoRA of about the same parameters, each served the same way.

    python benchmarks/serve_load.py [--rode logs/demo/version_0/adapter]
        [--lora logs/demo_lora_r32/version_0/adapter] [--requests 200] [--clients 16]

The two adapters are the demo's (README: ``fit --config configs/demo.yaml``, and the same with
``--config configs/variants/lora_r32.yaml --trainer.logger.init_args.name demo_lora_r32``): RoDE ``[2, 4, 8, 16]``
(30 ranks and a router) and LoRA r32. Each serving setup is a fresh ``python -m rode_lightning serve`` on 127.0.0.1
(fp32, CPU), asked the same requests (the demo's test photos as data URLs, each of the four tasks in turn, answers
up to the demo's 50 tokens) by ``--clients`` threads that each send their next request when the last is answered.
Per setup: requests answered and failed (a status other than 200 or an empty answer counts as failed; one never
answered as lost), throughput, p50 / p95 latency and the mean model batch (the ``batch_size`` extension). Ratios of
throughput in the same run: batched (``max_batch_size`` 8) over one at a time, and RoDE over LoRA, both batched.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TASKS = ["ingredients", "category", "nutrition", "recipe"]
TARGETS_AT_LEAST = {"batched_vs_one_at_a_time": 2.0, "rode_vs_lora": 0.9}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(adapter: Path, overlays: list[str], max_batch_size: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    configs = [argument for config in ["configs/demo.yaml", *overlays] for argument in ("--config", config)]
    command = [sys.executable, "-m", "rode_lightning", "serve", "--port", str(port), "--max_batch_size",
               str(max_batch_size), "--batch_timeout", "0.02", "--request_timeout_s", "600",
               *configs, "--model.adapter_path", str(adapter)]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).text == "ok":
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the server did not start ({' '.join(command)}):\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def request_bodies(model: str, photos: list[Path], count: int) -> list[dict]:
    urls = ["data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() for path in photos]
    return [{"model": model, "task": TASKS[number % len(TASKS)],
             "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url":
                                                         urls[number % len(urls)]}}]}]}
            for number in range(count)]


def load(url: str, bodies: list[dict], clients: int) -> dict:
    """Send ``bodies`` from ``clients`` threads; latencies and outcomes."""
    pending = list(enumerate(bodies))
    lock = threading.Lock()
    outcomes: dict[int, dict] = {}

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    number, body = pending.pop(0)
                start = time.monotonic()
                try:
                    response = http.post(f"{url}/v1/chat/completions", json=body)
                    data = response.json() if response.status_code == 200 else {}
                    ok = bool(data.get("choices") and data["choices"][0]["message"]["content"])
                except httpx.HTTPError:
                    data, ok = {}, False
                outcomes[number] = {"seconds": time.monotonic() - start, "ok": ok,
                                    "batch_size": data.get("batch_size"),
                                    "tokens": data.get("usage", {}).get("completion_tokens", 0)}

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    answered = [outcome for outcome in outcomes.values() if outcome["ok"]]
    latencies = sorted(outcome["seconds"] for outcome in answered)
    return {"requests": len(bodies), "answered": len(answered), "failed": len(outcomes) - len(answered),
            "lost": len(bodies) - len(outcomes), "seconds": wall, "requests_per_second": len(answered) / wall,
            "tokens_per_second": sum(outcome["tokens"] for outcome in answered) / wall,
            "p50_seconds": statistics.median(latencies) if latencies else None,
            "p95_seconds": latencies[max(0, int(round(0.95 * len(latencies))) - 1)] if latencies else None,
            "mean_batch_size": statistics.mean(outcome["batch_size"] for outcome in answered) if answered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rode", default="logs/demo/version_0/adapter")
    parser.add_argument("--lora", default="logs/demo_lora_r32/version_0/adapter")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--photos", default=None, help="default: the demo's test photos")
    arguments = parser.parse_args()
    for adapter in (arguments.rode, arguments.lora):
        if not (REPO / adapter / "adapter_config.json").is_file():
            sys.exit(f"{adapter}: no trained adapter (train the demo's RoDE and LoRA r32 first: see the docstring)")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    photos_dir = Path(arguments.photos) if arguments.photos else cache / "rode_lightning" / "demo" / "unifood" / "images"
    photos = sorted(photos_dir.glob("test_*.png"))[:16] or sorted(photos_dir.glob("*.png"))[:16]
    if not photos:
        sys.exit(f"no photos in {photos_dir}")
    lora_overlay = ["configs/variants/lora_r32.yaml"]
    setups = {"rode_batched": (arguments.rode, [], 8), "rode_one_at_a_time": (arguments.rode, [], 1),
              "lora_batched": (arguments.lora, lora_overlay, 8)}
    results = {}
    logs = REPO / "logs" / "serve_load"
    logs.mkdir(parents=True, exist_ok=True)
    for name, (adapter, overlays, max_batch_size) in setups.items():
        process, url = start_server(REPO / adapter, overlays, max_batch_size, logs / f"{name}.log")
        try:
            bodies = request_bodies(str(REPO / adapter), photos, arguments.requests)
            load(url, bodies[: arguments.clients], arguments.clients)  # warm-up, not counted
            results[name] = load(url, bodies, arguments.clients)
        finally:
            stop(process)
        result = results[name]
        print(f"{name:<20} max_batch_size {max_batch_size}: {result['answered']}/{result['requests']} answered, "
              f"{result['failed']} failed, {result['lost']} lost; {result['requests_per_second']:.2f} requests/s, "
              f"{result['tokens_per_second']:.1f} tokens/s, p50 {result['p50_seconds']:.2f} s, "
              f"p95 {result['p95_seconds']:.2f} s, mean batch {result['mean_batch_size']:.2f}", flush=True)
    ratios = {"batched_vs_one_at_a_time": results["rode_batched"]["requests_per_second"]
              / results["rode_one_at_a_time"]["requests_per_second"],
              "rode_vs_lora": results["rode_batched"]["requests_per_second"]
              / results["lora_batched"]["requests_per_second"]}
    for name, value in ratios.items():
        target = TARGETS_AT_LEAST[name]
        print(f"{name}: {value:.2f} (>= {target} {'met' if value >= target else 'missed'})")
    import torch

    print(json.dumps({"requests": arguments.requests, "clients": arguments.clients, "photos": len(photos),
                      "results": results, "ratios": ratios, "targets_at_least": TARGETS_AT_LEAST,
                      "device": "cpu", "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
