"""Datasets, label conversion, rare class sampling, training pipelines and the synthetic dataset.

Public entry points:

- :class:`DataConfig` and :data:`DATA_PRESETS`: every pipeline setting.
- :func:`build_uda_loader`: the infinite source + target training batch iterator.
- :func:`build_val_dataset`: the target validation set.
- :func:`ensure_synthetic_dataset`: generate (once) and prepare the embedded synthetic dataset.
- :func:`prepare_data_root`: label conversion and class statistics (``python -m training.prepare``).
"""

from .config import (
    DAFORMER_GTA,
    DAFORMER_SYNTHIA,
    DATA_PRESETS,
    HRDA_GTA,
    HRDA_SYNTHIA,
    NO_RESIZE,
    TOY,
    DataConfig,
    RareClassSamplingConfig,
)
from .errors import DatasetError, UnknownLabelWarning
from .loader import UDATrainSet, ValSet, build_uda_loader, build_uda_train_set, build_val_dataset
from .prepare import prepare_data_root
from .synthetic import ensure_synthetic_dataset, generate_synthetic_dataset

__all__ = [
    "DAFORMER_GTA",
    "DAFORMER_SYNTHIA",
    "DATA_PRESETS",
    "HRDA_GTA",
    "HRDA_SYNTHIA",
    "NO_RESIZE",
    "TOY",
    "DataConfig",
    "DatasetError",
    "RareClassSamplingConfig",
    "UDATrainSet",
    "UnknownLabelWarning",
    "ValSet",
    "build_uda_loader",
    "build_uda_train_set",
    "build_val_dataset",
    "ensure_synthetic_dataset",
    "generate_synthetic_dataset",
    "prepare_data_root",
]
