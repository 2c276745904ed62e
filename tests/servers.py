"""Helpers for tests that start real servers: free ports, a tiny checkpoint, start/wait/stop.

Servers run in their own process group on 127.0.0.1 and are always stopped (the whole group:
``bentoml serve`` starts an arbiter and worker processes).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# Cold starts import torch, BentoML and Gradio; on two busy cores that took up to ~30 s.
START_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_tiny_checkpoint(path: Path, name: str = "tiny-test") -> Path:
    """A random tiny DAFormer checkpoint that runs in milliseconds on a CPU.

    The evaluation box is 64×32 (images are rescaled into it), and a 32² sliding window at
    stride 16 makes ``mode=hrda`` slide windows while ``mode=whole`` runs one pass.
    """
    import torch

    from models.checkpoint import save_segmentor
    from models.config import get_model_config
    from models.segmentor import build_segmentor

    config = dataclasses.replace(
        get_model_config("daformer_mit_test"), eval_scale=(64, 32), inference_window=32,
        inference_stride=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_segmentor(config)
    save_segmentor(path, model, config, extra_metadata={"name": name})
    return path


def server_environment(home: Path, **settings: str) -> dict[str, str]:
    """The test process's environment without CLUDA settings, plus ``settings``.

    BentoML's home (its working files) goes to ``home`` instead of the user's.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLUDA_")}
    env.update(BENTOML_HOME=str(home), GRADIO_ANALYTICS_ENABLED="False",
               BENTOML_DO_NOT_TRACK="True", PYTHONPATH=str(REPO))  # fmt: skip
    env.update(settings)
    return env


def bentoml_command(port: int) -> list[str]:
    """``bentoml serve serving.service:Segmenter`` on 127.0.0.1:``port``."""
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:Segmenter",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    """Terminates the process group of ``process`` (killed if it lingers)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@contextmanager
def running_server(
    command: Sequence[str], env: Mapping[str, str], ready_url: str, log: Path,
    cwd: Path = REPO, timeout: float = START_TIMEOUT_S,
) -> Iterator[subprocess.Popen]:
    """Starts ``command``, waits until ``ready_url`` answers 200, yields, then stops it.

    Raises:
        RuntimeError: the process exited or was not ready in ``timeout`` (with its log).
    """
    with open(log, "wb") as output:
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{log_tail(log)}")
            time.sleep(0.25)
        yield process
    finally:
        stop(process)
