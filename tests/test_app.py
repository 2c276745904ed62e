"""The Gradio demo in a real browser: headless Debian Chromium driven by Playwright.

Both ways of running the demo are checked: alone (``python -m app``) and mounted at ``/ui`` on
the BentoML server. The test uploads a picture, waits for the overlay, the legend and the
summary to appear, then changes the opacity and waits for the re-blended overlay.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import (
    REPO,
    bentoml_command,
    free_port,
    running_server,
    server_environment,
    write_tiny_checkpoint,
)

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# a closed network refuses; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
EXAMPLE = REPO / "app" / "examples" / "street_car.png"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module", params=["standalone", "mounted"])
def demo_url(
    request: pytest.FixtureRequest, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    home = tmp_path_factory.mktemp(f"{request.param}-home")
    port = free_port()
    env = server_environment(home, CLUDA_MODEL=str(checkpoint), CLUDA_DEVICE="cpu")
    if request.param == "standalone":
        command = [sys.executable, "-m", "app", "--port", str(port)]
        url = f"http://127.0.0.1:{port}/"
        ready = url
    else:
        command = bentoml_command(port)
        url = f"http://127.0.0.1:{port}/ui/"
        ready = f"http://127.0.0.1:{port}/healthz"
    with running_server(command, env, ready, home / "server.log"):
        yield url


def test_upload_shows_the_overlay(browser, demo_url: str) -> None:
    page = browser.new_page()
    try:
        page.goto(demo_url)
        page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
        overlay = page.locator("#overlay img")
        overlay.wait_for(state="visible", timeout=90_000)
        page.wait_for_function(
            "() => document.querySelector('#legend')?.innerText.includes('%')", timeout=30_000
        )
        assert "tiny-test" in page.locator("#summary").inner_text()
        # The overlay is a real picture of the uploaded image's size, not a placeholder.
        source = httpx.get(overlay.get_attribute("src"), timeout=30)
        picture = Image.open(io.BytesIO(source.content))
        assert picture.size == Image.open(EXAMPLE).size
        assert np.asarray(picture.convert("RGB")).std() > 0
        assert page.locator("#confidence img").is_visible()
        assert page.get_by_text("Examples (synthetic target domain)").count() == 1
        # A new opacity re-blends the overlay (without running the model again).
        first = overlay.get_attribute("src")
        number = page.locator("#opacity input[type=number]")
        number.fill("1")
        number.press("Enter")
        page.wait_for_function("(s) => document.querySelector('#overlay img').src !== s",
                               arg=first, timeout=30_000)  # fmt: skip
    finally:
        page.close()
