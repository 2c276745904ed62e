"""``python -m app``: the Gradio demo on its own, without the BentoML server.

The model and limits are chosen as for the service (:mod:`serving.settings`: ``CLUDA_MODEL``,
``CLUDA_DEVICE``, ...); ``--model`` and ``--device`` override the environment.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Parses the command line, loads the model and serves the page until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--model", help="model file (default: CLUDA_MODEL, else the newest "
                                        "work_dirs/toy_*/latest.safetensors)")
    parser.add_argument("--device",
                        help="cpu, cuda, cuda:N or auto (default: CLUDA_DEVICE, else auto)")
    args = parser.parse_args(argv)

    # No usage reporting from a demo: it may run on machines without internet access.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from serving.engine import SegmentationEngine
    from serving.settings import SettingsError, resolve_settings

    try:
        settings = resolve_settings({"model": args.model, "device": args.device})
        engine = SegmentationEngine.from_settings(settings)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from app.ui import build_demo

    demo = build_demo(lambda: engine)
    # Several sessions may run at once, so the engine can batch their images together.
    demo.queue(default_concurrency_limit=engine.max_batch)
    print(f"serving {settings.model} on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True,
                max_file_size=settings.max_upload_bytes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
