"""The UDA training loader and the validation dataset.

Randomness: every training sample k of rank r draws from its own NumPy generator seeded with
``SeedSequence(seed, spawn_key=(0, r, k))`` (one child stream for the source crop, one for the
target crop). The stream therefore depends only on (seed, rank, k): it does not change with the
number of workers, two workers or ranks never share a stream, and resuming at batch b reproduces
the batches a run without interruption would have seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from models.classes import IMAGENET_MEAN

from .config import DataConfig
from .datasets import DEFAULT_DIRS, DatasetSplit, require_train_ids, scan_domain
from .errors import DatasetError
from .pipeline import TrainCrop, load_sample, source_train_crop, target_train_crop, val_sample
from .rcs import RareClassSampler, recrop_for_class
from .synthetic import ensure_synthetic_dataset

# First words of the seed-sequence spawn keys: per-sample streams and per-epoch permutations.
_SAMPLE_STREAM = 0
_PERMUTATION_STREAM = 1
_SOURCE, _TARGET = 0, 1


def resolve_domain(
    kind: str, directory: str, data_root: Path, synthetic_seed: int, role: str
) -> tuple[str, Path]:
    """Map a configured domain to a reader kind and a folder (generating synthetic data if needed).

    Args:
        kind: a value of ``DataConfig.source`` or ``DataConfig.target``.
        directory: ``DataConfig.source_dir`` / ``target_dir`` ("" = the kind's default folder;
            for ``synthetic``, the root holding both generated domains, default ``synthetic``).
        data_root: the data root.
        synthetic_seed: seed of the synthetic dataset.
        role: ``source`` or ``target``.

    Returns:
        ``(reader kind, dataset folder)``.
    """
    if kind == "synthetic":
        synthetic_folder = data_root / (directory or "synthetic")
        ensure_synthetic_dataset(synthetic_folder, seed=synthetic_seed)
        if role == "source":
            return "gta", synthetic_folder / "gta"
        return "cityscapes", synthetic_folder / "cityscapes"
    return kind, data_root / (directory or DEFAULT_DIRS[kind])


class _CountingSampler(Sampler[int]):
    """Yields start, start + 1, ... forever: the sample index k of the random streams."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class UDATrainSet(Dataset):
    """Map-style dataset whose item k is the k-th (source crop, target crop) pair of one rank.

    Args:
        cfg: data settings.
        source: labelled source split.
        target: target training split (labelled or not).
        rare_class_sampler: RCS of the source, or None for uniform epochs.
        seed: base seed.
        rank: process rank.
        world_size: number of processes; without RCS the epochs are shared out between ranks.
    """

    def __init__(
        self,
        cfg: DataConfig,
        source: DatasetSplit,
        target: DatasetSplit,
        rare_class_sampler: RareClassSampler | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.target = target
        self.rare_class_sampler = rare_class_sampler
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}  # domain -> (epoch, order)

    def _epoch_index(self, domain: int, k: int, size: int) -> int:
        """Sample index of item k when drawing epochs without replacement.

        All ranks share one permutation per epoch and take interleaved positions of it, like
        torch's DistributedSampler.
        """
        position = k * self.world_size + self.rank
        epoch = position // size
        cached = self._permutations.get(domain)
        if cached is None or cached[0] != epoch:
            sequence = np.random.SeedSequence(
                self.seed, spawn_key=(_PERMUTATION_STREAM, domain, epoch)
            )
            cached = (epoch, np.random.default_rng(sequence).permutation(size))
            self._permutations[domain] = cached
        return int(cached[1][position % size])

    def _source_crop(self, k: int, rng: np.random.Generator) -> tuple[TrainCrop, int]:
        cfg = self.cfg
        sampler = self.rare_class_sampler
        class_id = None
        if sampler is None:
            index = self._epoch_index(_SOURCE, k, len(self.source.samples))
        else:
            class_id, index = sampler.draw(rng)
        image, label = load_sample(self.source.samples[index])
        assert label is not None  # the source split is checked to be labelled

        def run() -> TrainCrop:
            return source_train_crop(
                image, label, cfg.source_scale, cfg.crop_size, cfg.cat_max_ratio, cfg.flip_prob, rng
            )

        if sampler is None or class_id is None or sampler.min_crop_ratio <= 0:
            return run(), index
        # The reference reloads the file for every new crop; re-running the transforms on the
        # decoded arrays gives the same crops without decoding again.
        return recrop_for_class(run, class_id, sampler.crop_threshold), index

    def _target_crop(self, k: int, rng: np.random.Generator) -> tuple[TrainCrop, int]:
        cfg = self.cfg
        size = len(self.target.samples)
        if self.rare_class_sampler is not None:
            index = int(rng.integers(size))  # the reference draws the target uniformly under RCS
        else:
            index = self._epoch_index(_TARGET, k, size)
        image, label = load_sample(self.target.samples[index])
        crop = target_train_crop(
            image, label, cfg.target_scale, cfg.crop_size, cfg.pseudo_margins, cfg.flip_prob, rng
        )
        return crop, index

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        """Build training pair k.

        Returns:
            uint8 tensors ``src_img`` 3×H×W, ``src_label`` H×W, ``tgt_img``, ``tgt_label``,
            ``tgt_valid_mask`` H×W, int64 ``src_content_size``/``tgt_content_size`` (2,) (size
            before padding), and int64 ``src_index``/``tgt_index`` (sample indices in the splits).
        """
        sequence = np.random.SeedSequence(self.seed, spawn_key=(_SAMPLE_STREAM, self.rank, k))
        source_rng, target_rng = (np.random.default_rng(s) for s in sequence.spawn(2))
        source, source_index = self._source_crop(k, source_rng)
        target, target_index = self._target_crop(k, target_rng)
        return {
            "src_img": torch.from_numpy(np.ascontiguousarray(source.image.transpose(2, 0, 1))),
            "src_label": torch.from_numpy(source.label),
            "src_content_size": torch.tensor(source.content_size),
            "src_index": torch.tensor(source_index),
            "tgt_img": torch.from_numpy(np.ascontiguousarray(target.image.transpose(2, 0, 1))),
            "tgt_label": torch.from_numpy(target.label),
            "tgt_valid_mask": torch.from_numpy(target.valid_mask),
            "tgt_content_size": torch.tensor(target.content_size),
            "tgt_index": torch.tensor(target_index),
        }


def _images_to_float(images: torch.Tensor, content_sizes: torch.Tensor) -> torch.Tensor:
    """uint8 B×3×H×W → float32 0..255, padded pixels set to the ImageNet mean.

    mmseg pads after normalising, with 0, so a padded pixel is the mean colour once the model
    normalises; the workers pad uint8 images with 0 and the mean is written here.
    """
    images = images.float()
    height, width = images.shape[-2:]
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype).view(3, 1, 1)
    for b, (content_height, content_width) in enumerate(content_sizes.tolist()):
        if content_height < height:
            images[b, :, content_height:, :] = mean
        if content_width < width:
            images[b, :, :, content_width:] = mean
    return images


def _finalise_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "src_img": _images_to_float(batch["src_img"], batch["src_content_size"]),
        "src_label": batch["src_label"].long(),
        "tgt_img": _images_to_float(batch["tgt_img"], batch["tgt_content_size"]),
        "tgt_label": batch["tgt_label"].long(),
        "tgt_valid_mask": batch["tgt_valid_mask"].float(),
        "src_index": batch["src_index"],
        "tgt_index": batch["tgt_index"],
    }


def build_uda_train_set(
    cfg: DataConfig, data_root: Path, seed: int, rank: int = 0, world_size: int = 1
) -> UDATrainSet:
    """Scan both domains, check their labels and statistics, and build the training set.

    Args:
        cfg: data settings.
        data_root: the data root (``gta/``, ``cityscapes/``, ... or ``synthetic/`` below it).
        seed: base seed of the sample streams.
        rank: process rank.
        world_size: number of processes.

    Returns:
        The map-style training set (item k = k-th training pair of this rank).

    Raises:
        DatasetError: missing folders, unconverted labels, missing or stale statistics.
    """
    data_root = Path(data_root)
    source_kind, source_folder = resolve_domain(
        cfg.source, cfg.source_dir, data_root, cfg.synthetic_seed, "source"
    )
    target_kind, target_folder = resolve_domain(
        cfg.target, cfg.target_dir, data_root, cfg.synthetic_seed, "target"
    )
    source = scan_domain(source_kind, source_folder, "train")
    if not source.labelled:
        raise DatasetError(f"the source domain {source.name} has no labels ({source_folder})")
    require_train_ids(source, data_root)
    target = scan_domain(target_kind, target_folder, "train")
    if target.labelled:
        require_train_ids(target, data_root)
    sampler = None
    if cfg.rcs.enabled:
        sampler = RareClassSampler.from_split(
            source, cfg.rcs.temperature, cfg.rcs.min_pixels, cfg.rcs.min_crop_ratio
        )
    return UDATrainSet(cfg, source, target, sampler, seed, rank, world_size)


def build_uda_loader(
    cfg: DataConfig,
    data_root: Path,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Infinite iterator over UDA training batches (source and target drawn independently).

    Decoding and augmentation run in ``cfg.num_workers`` DataLoader workers (in-process when 0).

    Args:
        cfg: data settings.
        data_root: the data root.
        seed: base seed; with (rank, sample index) it fixes every crop.
        rank: process rank (distinct streams per rank).
        world_size: number of processes.
        start_batch: first batch to produce, to resume a run where it stopped.

    Yields:
        Dicts of tensors, B = ``cfg.batch_size``, H×W = ``cfg.crop_size``:

        - ``src_img``: float32 B×3×H×W, RGB 0..255, not normalised.
        - ``src_label``: int64 B×H×W trainIds, 255 = ignore (and padding).
        - ``tgt_img``: float32 B×3×H×W.
        - ``tgt_label``: int64 B×H×W, 255 where unknown (oracle training only; UDA ignores it).
        - ``tgt_valid_mask``: float32 B×H×W of 0/1, the pseudo-label margins after all geometric
          transforms (all ones without margins; padding is 0).
        - ``src_index``, ``tgt_index``: int64 B, sample indices within the source/target splits.

    Raises:
        DatasetError: see :func:`build_uda_train_set`; decoding errors surface on iteration.
    """
    train_set = build_uda_train_set(cfg, data_root, seed, rank, world_size)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=_CountingSampler(start_batch * cfg.batch_size),
        # Workers keep OpenCV's default threading: cv2.setNumThreads in a forked worker deadlocks
        # when the parent process has already used OpenCV's thread pool. (torch already runs one
        # thread per worker.)
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        # Its own generator: creating the iterator must not consume the global torch stream,
        # or a resumed run would see different dropout draws than an uninterrupted one.
        generator=torch.Generator().manual_seed(seed + rank),
    )
    return (_finalise_batch(batch) for batch in loader)


class ValSet(Dataset):
    """Validation images of the target domain.

    Args:
        split: a labelled split (``cityscapes/val``, a custom ``val`` split, ...).
        scale: keep-ratio Resize box of the images ((0, 0) = stored size).
    """

    def __init__(self, split: DatasetSplit, scale: tuple[int, int]) -> None:
        self.split = split
        self.scale = scale

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        """Load one validation sample.

        Returns:
            ``img`` float32 3×H'×W' RGB 0..255 after the val Resize, ``label`` int64 H×W trainIds
            at the stored resolution (255 = ignore), ``name`` the image file name and ``path``
            the image path.
        """
        sample = self.split.samples[index]
        image, label = load_sample(sample)
        image = val_sample(image, self.scale)
        return {
            "img": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
            "label": torch.from_numpy(label).long(),
            "name": sample.image.name,
            "path": str(sample.image),
        }


def build_val_dataset(cfg: DataConfig, data_root: Path, split: str = "val") -> ValSet:
    """The target domain's validation set with the preset's val Resize policy.

    Args:
        cfg: data settings (``target``, ``target_dir``, ``val_scale``).
        data_root: the data root.
        split: split of the target dataset to evaluate on.

    Returns:
        A map-style dataset (use ``batch_size=1``: image sizes may differ).

    Raises:
        DatasetError: missing folders or unconverted labels.
    """
    data_root = Path(data_root)
    kind, folder = resolve_domain(
        cfg.target, cfg.target_dir, data_root, cfg.synthetic_seed, "target"
    )
    val_split = scan_domain(kind, folder, split)
    if not val_split.labelled:
        raise DatasetError(f"{val_split.name} has no labels to evaluate against ({folder})")
    require_train_ids(val_split, data_root)
    return ValSet(val_split, cfg.val_scale)
