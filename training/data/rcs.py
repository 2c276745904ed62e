"""Rare class sampling (release_code.md §2; DAFormer's ``uda_dataset.py``).

Classes are drawn with ``P(c) = softmax_c((1 - f_c) / T)``, f_c being the class's share of all
labelled source pixels, over the classes present in the statistics sorted by ascending pixel count.
A file is then drawn uniformly among those holding more than ``min_pixels`` pixels of c.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .datasets import DatasetSplit
from .errors import DatasetError
from .pipeline import TrainCrop
from .stats import load_sample_class_stats, load_samples_with_class

# Re-crop attempts of the rare class sampler, as in the reference loop.
RECROP_ATTEMPTS = 10


def rcs_class_probabilities(
    sample_class_stats: Sequence[Mapping[str, int | str]], temperature: float
) -> tuple[tuple[int, ...], np.ndarray]:
    """Compute the class sampling distribution.

    Args:
        sample_class_stats: entries of ``sample_class_stats.json`` (``file`` keys are skipped).
        temperature: T; smaller values favour rare classes more strongly.

    Returns:
        ``(classes, probabilities)``: the trainIds present, sorted by ascending total pixel count
        (ties keep their order of first appearance), and float64 probabilities summing to 1.
    """
    totals: dict[int, int] = {}
    for entry in sample_class_stats:
        for key, count in entry.items():
            if key != "file":
                totals[int(key)] = totals.get(int(key), 0) + int(count)
    ordered = sorted(totals.items(), key=lambda item: item[1])
    counts = np.array([count for _, count in ordered], dtype=np.float64)
    logits = (1.0 - counts / counts.sum()) / temperature
    # Subtracting the maximum keeps exp() finite at T = 0.01 (logits up to 100).
    weights = np.exp(logits - logits.max())
    return tuple(class_id for class_id, _ in ordered), weights / weights.sum()


def rcs_eligible_files(
    samples_with_class: Mapping[int, Sequence[tuple[str, int]]],
    classes: Sequence[int],
    min_pixels: int,
) -> dict[int, list[str]]:
    """List, per class, the files with more than ``min_pixels`` pixels of it.

    Args:
        samples_with_class: content of ``samples_with_class.json`` (trainId → [(file, count)]).
        classes: the classes taking part (from :func:`rcs_class_probabilities`).
        min_pixels: strict lower bound on the count, at the original label resolution.

    Returns:
        trainId → base names of the eligible files, in the file's order.

    Raises:
        DatasetError: a class has no eligible file (the reference asserts the same).
    """
    eligible: dict[int, list[str]] = {}
    for class_id in classes:
        names = [
            file.rsplit("/", 1)[-1]
            for file, count in samples_with_class.get(class_id, [])
            if count > min_pixels
        ]
        if not names:
            raise DatasetError(
                f"rare class sampling: no source file has more than {min_pixels} pixels of class "
                f"{class_id}; lower data.rcs.min_pixels or disable data.rcs.enabled"
            )
        eligible[class_id] = names
    return eligible


@dataclass(frozen=True)
class RareClassSampler:
    """Draws (class, source sample index) pairs.

    Attributes:
        classes: trainIds taking part, by ascending frequency.
        probabilities: P(c) for each entry of ``classes``.
        sample_indices: trainId → indices into the source split's samples of its eligible files.
        min_pixels: eligibility threshold (original resolution).
        min_crop_ratio: the crop must hold more than ``min_pixels * min_crop_ratio`` pixels of the
            class, else it is redrawn (up to :data:`RECROP_ATTEMPTS` times); 0 disables it.
    """

    classes: tuple[int, ...]
    probabilities: np.ndarray
    sample_indices: dict[int, tuple[int, ...]]
    min_pixels: int
    min_crop_ratio: float

    @classmethod
    def from_split(
        cls, split: DatasetSplit, temperature: float, min_pixels: int, min_crop_ratio: float
    ) -> RareClassSampler:
        """Build the sampler from the statistics files in the split's folder.

        Args:
            split: the source split (its folder holds the statistics JSON files).
            temperature: T of the class distribution.
            min_pixels: eligibility threshold.
            min_crop_ratio: re-crop threshold factor.

        Returns:
            The sampler.

        Raises:
            DatasetError: statistics missing or out of date, label base names not unique, or a class
                without eligible files.
        """
        classes, probabilities = rcs_class_probabilities(
            load_sample_class_stats(split.root), temperature
        )
        eligible = rcs_eligible_files(load_samples_with_class(split.root), classes, min_pixels)
        # Files are matched by base name, as in the reference, so that statistics written by the
        # DAFormer/HRDA tools (paths relative to their working directory) are accepted.
        index_of: dict[str, int] = {}
        for index, sample in enumerate(split.samples):
            if sample.label is None:
                raise DatasetError(
                    f"rare class sampling needs a labelled source; {split.name} has none"
                )
            if sample.label.name in index_of:
                raise DatasetError(
                    f"rare class sampling identifies files by base name, but {sample.label.name} "
                    f"occurs twice in {split.name}: "
                    f"{split.samples[index_of[sample.label.name]].label} and {sample.label}"
                )
            index_of[sample.label.name] = index
        sample_indices = {}
        for class_id, names in eligible.items():
            unknown = [name for name in names if name not in index_of]
            if unknown:
                raise DatasetError(
                    f"{split.root}/samples_with_class.json lists {len(unknown)} files that are "
                    "not in "
                    f"{split.name} (e.g. {unknown[0]}); the statistics are out of date: rerun "
                    "python -m training.prepare"
                )
            sample_indices[class_id] = tuple(index_of[name] for name in names)
        return cls(classes, probabilities, sample_indices, min_pixels, min_crop_ratio)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw a class, then one of its eligible files uniformly.

        Args:
            rng: the random stream of the current sample.

        Returns:
            ``(trainId, sample index)``.
        """
        class_id = self.classes[rng.choice(len(self.classes), p=self.probabilities)]
        candidates = self.sample_indices[class_id]
        return class_id, candidates[rng.integers(len(candidates))]

    @property
    def crop_threshold(self) -> float:
        """Pixels of the drawn class a crop must exceed to be kept."""
        return self.min_pixels * self.min_crop_ratio


def recrop_for_class(run: Callable[[], TrainCrop], class_id: int, threshold: float) -> TrainCrop:
    """The rare class re-crop loop: crop again until the drawn class is visible enough.

    Mirrors the reference: the first crop is tested, and up to :data:`RECROP_ATTEMPTS` new crops
    are drawn while the test fails; when all fail, the last crop drawn (the 11th) is kept untested.

    Args:
        run: produces a new random crop of the same file (same decoded arrays, new random draws).
        class_id: the trainId drawn by the sampler.
        threshold: the crop is kept once it holds more than this many pixels of ``class_id``.

    Returns:
        The kept crop.
    """
    result = run()
    for _ in range(RECROP_ATTEMPTS):
        if np.count_nonzero(result.label == class_id) > threshold:
            break
        result = run()
    return result
