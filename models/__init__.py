"""Networks, the one inference path, checkpoints and the predictor.

Importing ``models`` registers the MiT encoders with timm (``timm.create_model("mit_b5")``) when
torch and timm are installed; a serve-only install without them can still import the
torch-free modules (``models.classes``, ``models.config``).
"""

from importlib.util import find_spec

if find_spec("torch") is not None and find_spec("timm") is not None:
    from . import backbones as _backbones  # noqa: F401  (registers mit_* with timm)
