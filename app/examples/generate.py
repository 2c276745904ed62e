"""Writes the demo's example pictures: a few scenes of the synthetic target domain.

Run once from the repository root (``python app/examples/generate.py``); the PNGs are committed,
so the demo itself never imports the training code. Each scene is rendered at the dataset's
512×256 and stored at half size, which keeps the three files small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.data.synthetic import FEATURED, TARGET_STYLE, render_scene

OUT = Path(__file__).resolve().parent
# (file name, featured Cityscapes label id, seed): a car, a person and a bus in front.
SCENES = (("street_car.png", FEATURED[13], 11), ("street_person.png", FEATURED[11], 12),
          ("street_bus.png", FEATURED[15], 13))  # fmt: skip


def main() -> None:
    for name, featured, seed in SCENES:
        image, _ = render_scene(np.random.default_rng(seed), 512, 256, TARGET_STYLE, featured)
        small = Image.fromarray(image).resize((256, 128), Image.Resampling.LANCZOS)
        small.save(OUT / name, optimize=True)
        print(OUT / name, (OUT / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
