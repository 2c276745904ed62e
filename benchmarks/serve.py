"""Throughput and latency of ``POST /segment`` on a real ``bentoml serve``, on loopback.

    python benchmarks/serve.py [--model PATH] [--mode hrda|whole] [--requests 64]
                               [--concurrency 1 8 32] [--device cpu] [--image PNG]

Starts the server itself on a free 127.0.0.1 port (and stops it), sends a fixed number of
requests per concurrency level from a thread pool, and prints requests/second, p50/p99 latency
and the mean batch size the adaptive batcher formed. The model defaults to the newest
``work_dirs/toy_*/latest.safetensors``; without one, a randomly initialised model of the
``toy_hrda`` architecture (``cluda_hrda_mit_test``) is written to a temporary folder: speed does
not depend on the weights. The picture defaults to a bundled synthetic target-domain example.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO / "app" / "examples" / "street_car.png"
TOY_ARCHITECTURE = "cluda_hrda_mit_test"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _toy_model(folder: Path) -> Path:
    """The newest toy checkpoint, else a random one of the toy architecture in ``folder``."""
    sys.path.insert(0, str(REPO))
    from serving.settings import newest_toy_checkpoint

    found = newest_toy_checkpoint(REPO)
    if found is not None:
        return found
    import torch

    from models.checkpoint import save_segmentor
    from models.config import get_model_config
    from models.segmentor import build_segmentor

    torch.manual_seed(0)
    config = get_model_config(TOY_ARCHITECTURE)
    path = folder / "toy_random.safetensors"
    save_segmentor(path, build_segmentor(config), config,
                   extra_metadata={"name": f"{TOY_ARCHITECTURE} (random weights)"})  # fmt: skip
    return path


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}); log: {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready after {timeout:.0f} s; log: {log}")


def run_level(url: str, image: bytes, mode: str, requests: int, concurrency: int) -> dict:
    """Sends ``requests`` requests, ``concurrency`` at a time; returns the statistics."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=600, limits=limits) as client:

        def one(_: int) -> tuple[float, int]:
            started = time.perf_counter()
            response = client.post("/segment", files={"image": ("image.png", image)},
                                   data={"mode": mode})  # fmt: skip
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed, int(response.json()["batch_size"])

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
    latencies = [latency for latency, _ in results]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "requests_per_s": requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "mean_batch": statistics.fmean(batch for _, batch in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model to serve (default: the toy model)")
    parser.add_argument("--mode", choices=("hrda", "whole"), default="hrda")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (64)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--device", default="cpu", help="CLUDA_DEVICE for the server (cpu)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="picture to send")
    parser.add_argument("--max-batch", type=int, default=8, help="CLUDA_MAX_BATCH (8)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.requests < 1 or min(args.concurrency) < 1:
        parser.error("--requests and --concurrency must be positive")

    with tempfile.TemporaryDirectory(prefix="cluda-bench-") as temp:
        folder = Path(temp)
        model = args.model or _toy_model(folder)
        image = args.image.read_bytes()
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("CLUDA_")}
        env.update(CLUDA_MODEL=str(model), CLUDA_DEVICE=args.device,
                   CLUDA_MAX_BATCH=str(args.max_batch), BENTOML_HOME=str(folder / "bentoml"),
                   BENTOML_DO_NOT_TRACK="True", GRADIO_ANALYTICS_ENABLED="False",
                   PYTHONPATH=str(REPO))  # fmt: skip
        log = folder / "server.log"
        command = [sys.executable, "-m", "bentoml", "serve", "serving.service:Segmenter",
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        with open(log, "wb") as output:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                       stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        try:
            _wait_ready(url, process, log, timeout=300)
            run_level(url, image, args.mode, requests=min(8, args.requests), concurrency=2)
            levels = [run_level(url, image, args.mode, args.requests, concurrency)
                      for concurrency in args.concurrency]  # fmt: skip
        except Exception:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)

    import torch
    from PIL import Image

    width, height = Image.open(args.image).size
    print(f"model {model} | mode {args.mode} | image {width}x{height} | device {args.device} | "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"{'concurrency':>11} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'mean batch':>10}")  # fmt: skip
    for level in levels:
        print(f"{level['concurrency']:>11} {level['requests']:>8} {level['requests_per_s']:>8.2f} "
              f"{level['p50_ms']:>8.1f} {level['p99_ms']:>8.1f} {level['mean_batch']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "mode": args.mode,
                                         "image": [width, height], "levels": levels}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
