"""Segmentors: DAFormer (single resolution) and HRDA (LR context + HR detail), with CLUDA's extras.

Both take float RGB images in 0..255 (not normalised: ImageNet normalisation is part of the model,
as buffers that state dicts do not carry) and share one interface:

- ``forward(img)`` is the inference *window* network: B×3×H×W in, B×K×H×W logits out, for any
  H×W. Internally the normalised input is padded at the bottom/right with zeros (the ImageNet
  mean, as mmseg pads normalised images) to a multiple of the encoder stride — 32 for DAFormer,
  32 / lr_scale = 64 for HRDA — and the logits are cropped back, so reference sizes (512, 1024,
  1024×2048) are never padded while small, odd or portrait inputs still work.
- ``forward_train(img, ...)`` returns a :class:`SegmentorOutput` with everything the UDA step
  needs (logits at H/4, the fused feature, backbone features, HRDA's branch outputs).
- ``extract_features(img)`` gives the backbone features used by ImageNet feature distance.

Sliding windows over large images belong to :func:`models.inference.slide_inference`, which calls
``forward`` per window; HRDA's detail crops inside a window use the same function.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from .backbones import build_backbone
from .classes import IMAGENET_MEAN, IMAGENET_STD
from .config import ModelConfig, get_model_config
from .heads.daformer import DAFormerHead
from .heads.hrda import FUSION_ORDERS, CropBox, HRDAHead, fuse_scales, paste_crops
from .inference import slide_inference

__all__ = [
    "CropBox",
    "DAFormerSegmentor",
    "HRDASegmentor",
    "Segmentor",
    "SegmentorOutput",
    "build_segmentor",
    "random_crop_box",
]

# Decoder logits are at 1/4 of the backbone input (the stage-1 resolution).
HEAD_OUTPUT_STRIDE = 4

CropBoxSource = Sequence[CropBox] | Callable[[Tensor], Sequence[CropBox]] | None


@dataclass
class SegmentorOutput:
    """Training forward of a segmentor (B images of H×W; K classes; C fused channels).

    Attributes:
        logits: B×K×H/4×W/4. DAFormer: decoder logits. HRDA: fused logits, with the attention
            masked to the detail crop, so they are pure (upsampled) LR logits outside it.
        features: B×C×H/4×W/4 fused feature (CLUDA's contrastive feature). HRDA: the LR fused
            feature upsampled ×2 (bilinear, ``align_corners=True``).
        backbone_features: the four backbone maps (HRDA: of the LR image).
        hr_logits: HRDA: B×K×hc/4×hc/4 logits of the detail crops.
        lr_logits: HRDA: B×K×H/8×W/8 LR logits, not multiplied by (1 − attention).
        attention: HRDA: B×K×H/8×W/8 (B×1×… if not class-wise) scale attention, zero outside
            the crop.
        hr_features: HRDA: B×C×H/4×W/4 zero canvas with the crops' fused features at box/4.
        crop_mask: HRDA: B×1×H/8×W/8 float indicator of the crop (box/8).
        feature_weight: HRDA with ``feature_weight_head``: B×1×H/4×W/4 CLUDA LR/HR weight
            (sigmoid, upsampled ×2 bilinear), not crop-masked.
        crop_boxes: HRDA: one ``(y1, y2, x1, x2)`` box per image, in input pixels.
    """

    logits: Tensor
    features: Tensor
    backbone_features: list[Tensor]
    hr_logits: Tensor | None = None
    lr_logits: Tensor | None = None
    attention: Tensor | None = None
    hr_features: Tensor | None = None
    crop_mask: Tensor | None = None
    feature_weight: Tensor | None = None
    crop_boxes: list[CropBox] | None = None


def random_crop_box(
    height: int,
    width: int,
    crop_size: int,
    divisible: int,
    generator: Generator | None = None,
) -> CropBox:
    """HRDA's random detail crop (``get_crop_bbox``).

    Offsets are ``randint(0, (size − crop + 1) // divisible) · divisible`` per axis, height
    first: uniform over {0, d, 2d, …}. As in the reference, the offset ``size − crop`` itself is
    never drawn when d > 1 (1024² input, 512² crop: 0…504). Where the reference would fail
    (``size − crop + 1 < d``), the offset is 0.

    Args:
        height: image height.
        width: image width.
        crop_size: crop side, at most min(height, width).
        divisible: offsets are multiples of this.
        generator: source of randomness (CPU or the generator's device).

    Returns:
        ``(y1, y2, x1, x2)``.
    """
    if crop_size > min(height, width):
        raise ValueError(f"crop {crop_size} does not fit in a {height}x{width} image")
    device = generator.device if generator is not None else "cpu"
    offsets = []
    for size in (height, width):
        choices = max((size - crop_size + 1) // divisible, 1)
        draw = torch.randint(choices, (1,), generator=generator, device=device)
        offsets.append(int(draw) * divisible)
    y1, x1 = offsets
    return y1, y1 + crop_size, x1, x1 + crop_size


def _check_image(img: Tensor) -> None:
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W RGB batch, got shape {tuple(img.shape)}")


class Segmentor(nn.Module, abc.ABC):
    """Shared parts: configuration, ImageNet normalisation buffers, the backbone and ``forward``.

    Attributes:
        config: the architecture.
        backbone: encoder returning four NCHW maps (``feature_info`` gives their channels).
        pixel_mean: 1×3×1×1 ImageNet mean in 0..255 (non-persistent buffer).
        pixel_std: 1×3×1×1 ImageNet std in 0..255 (non-persistent buffer).
        size_multiple: ``forward`` pads inputs to a multiple of this.
    """

    size_multiple: int

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        # Not persistent: mmseg checkpoints have no such keys, and the values are constants.
        self.register_buffer(
            "pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
        )
        self.backbone = build_backbone(config.backbone, config.drop_path_rate)

    def normalize(self, img: Tensor) -> Tensor:
        """(img − mean) / std for B×3×H×W float RGB in 0..255."""
        return (img - self.pixel_mean) / self.pixel_std

    @abc.abstractmethod
    def extract_features(self, img: Tensor) -> list[Tensor]:
        """Backbone features of B×3×H×W raw RGB (HRDA: of the LR image)."""

    @abc.abstractmethod
    def forward_train(
        self,
        img: Tensor,
        crop_boxes: CropBoxSource = None,
        generator: Generator | None = None,
    ) -> SegmentorOutput:
        """Training forward of B×3×H×W raw RGB (see the subclasses)."""

    @abc.abstractmethod
    def _padded_logits(self, x: Tensor) -> Tensor:
        """Logits at 1/4 of a normalised, padded B×3×H×W window."""

    def forward(self, img: Tensor) -> Tensor:
        """Inference window network.

        Args:
            img: B×3×H×W float RGB in 0..255, any H and W.

        Returns:
            B×K×H×W logits (bilinear from the 1/4-resolution decoder output).
        """
        _check_image(img)
        height, width = img.shape[-2:]
        x = self.normalize(img)
        pad_h = -height % self.size_multiple
        pad_w = -width % self.size_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        logits = self._padded_logits(x)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[:, :, :height, :width]


class DAFormerSegmentor(Segmentor):
    """Backbone + :class:`DAFormerHead` (state-dict keys ``backbone.*``, ``decode_head.*``)."""

    def __init__(self, config: ModelConfig) -> None:
        if config.hrda is not None:
            raise ValueError("config has HRDA settings; build it with HRDASegmentor")
        super().__init__(config)
        self.size_multiple = max(self.backbone.feature_info.reduction())
        self.decode_head = DAFormerHead(
            self.backbone.feature_info.channels(), config.embed_dim, config.channels,
            config.num_classes, config.fusion, config.aspp_dilations, config.dropout,
        )

    def extract_features(self, img: Tensor) -> list[Tensor]:
        """Backbone features of B×3×H×W raw RGB: four maps at strides 4…32."""
        return self.backbone(self.normalize(img))

    def _padded_logits(self, x: Tensor) -> Tensor:
        return self.decode_head(self.backbone(x))[1]

    def forward_train(
        self,
        img: Tensor,
        crop_boxes: CropBoxSource = None,
        generator: Generator | None = None,
    ) -> SegmentorOutput:
        """Decoder logits, fused feature and backbone features of a training batch.

        Args:
            img: B×3×H×W float RGB in 0..255.
            crop_boxes: must be None (DAFormer has no detail crop); accepted so that training
                code calls both segmentors alike.
            generator: unused (nothing is drawn); accepted for the same reason.

        Returns:
            :class:`SegmentorOutput` with ``logits`` B×K×⌈H/4⌉×⌈W/4⌉, ``features``
            B×C×⌈H/4⌉×⌈W/4⌉ and ``backbone_features``.
        """
        _check_image(img)
        if crop_boxes is not None:
            raise ValueError("DAFormerSegmentor has no detail crop; crop_boxes must be None")
        backbone_features = self.backbone(self.normalize(img))
        fused, logits = self.decode_head(backbone_features)
        return SegmentorOutput(logits=logits, features=fused, backbone_features=backbone_features)


class HRDASegmentor(Segmentor):
    """HRDA: one backbone and decoder at two scales, fused by a learned scale attention.

    State-dict keys: ``backbone.*``, ``decode_head.head.*`` (shared LR/HR decoder),
    ``decode_head.scale_attention.*`` (absent with ``fixed_attention``) and, with
    ``feature_weight_head``, ``decode_head.feat_weighter.*``.
    """

    def __init__(self, config: ModelConfig) -> None:
        hrda = config.hrda
        if hrda is None:
            raise ValueError("config has no HRDA settings; build it with DAFormerSegmentor")
        if hrda.fusion_order not in FUSION_ORDERS:
            raise ValueError(
                f"hrda.fusion_order must be one of {FUSION_ORDERS}, got {hrda.fusion_order!r}"
            )
        super().__init__(config)
        self.hrda = hrda
        encoder_stride = max(self.backbone.feature_info.reduction())
        lr_output_stride = HEAD_OUTPUT_STRIDE / hrda.lr_scale
        size_multiple = encoder_stride / hrda.lr_scale
        if not (0 < hrda.lr_scale <= 1 and lr_output_stride.is_integer()
                and size_multiple.is_integer()):
            raise ValueError(
                f"hrda.lr_scale must be 1/n for an integer n, got {hrda.lr_scale}"
            )
        # Crop boxes must land on whole LR-logit pixels (box / 8 for the reference scale).
        self.lr_output_stride = int(lr_output_stride)
        self.size_multiple = int(size_multiple)
        for name, value, divisor in (
            ("hr_crop_size", hrda.hr_crop_size, self.lr_output_stride),
            ("crop_coord_divisible", hrda.crop_coord_divisible, self.lr_output_stride),
            ("hr_slide_stride", hrda.hr_slide_stride, HEAD_OUTPUT_STRIDE),
        ):
            if value <= 0 or value % divisor:
                raise ValueError(
                    f"hrda.{name} must be a positive multiple of {divisor}, got {value}"
                )
        self.decode_head = HRDAHead(
            self.backbone.feature_info.channels(), config.embed_dim, config.channels,
            config.num_classes, config.fusion, config.aspp_dilations, config.dropout,
            attention_embed_dim=hrda.attention_embed_dim,
            attention_classwise=hrda.attention_classwise,
            fixed_attention=hrda.fixed_attention,
            feature_weight_head=hrda.feature_weight_head,
        )

    def _lr_features(self, x: Tensor) -> list[Tensor]:
        lr_image = F.interpolate(
            x, scale_factor=self.hrda.lr_scale, mode="bilinear", align_corners=False
        )
        return self.backbone(lr_image)

    def _hr_logits(self, crops: Tensor) -> Tensor:
        return self.decode_head.head(self.backbone(crops))[1]

    def extract_features(self, img: Tensor) -> list[Tensor]:
        """Backbone features of the LR image (×lr_scale), as HRDA's ``feature_scale``."""
        return self._lr_features(self.normalize(img))

    def lr_logits(self, img: Tensor) -> Tensor:
        """LR-branch logits alone: B×3×H×W raw RGB in, B×K×H/8×W/8 out (lr_scale 0.5)."""
        return self.decode_head.head(self.extract_features(img))[1]

    def _padded_logits(self, x: Tensor) -> Tensor:
        # HRDA's encode_decode: LR pass of the whole window, HR logits slid over it with
        # overlapping detail crops, attention without crop mask.
        lr_features = self._lr_features(x)
        lr_logits = self.decode_head.head(lr_features)[1]
        attention = self.decode_head.attention(lr_features)
        hr_logits = slide_inference(
            self._hr_logits, x, crop=self.hrda.hr_crop_size, stride=self.hrda.hr_slide_stride,
            num_classes=self.num_classes, output_stride=HEAD_OUTPUT_STRIDE,
        )
        return fuse_scales(lr_logits, hr_logits, attention, self.hrda.fusion_order)

    def _checked_crop_boxes(
        self, crop_boxes: Sequence[CropBox], batch: int, height: int, width: int
    ) -> list[CropBox]:
        crop = self.hrda.hr_crop_size
        boxes = [tuple(int(value) for value in box) for box in crop_boxes]
        if len(boxes) != batch:
            raise ValueError(f"got {len(boxes)} crop boxes for a batch of {batch} images")
        divisor = self.lr_output_stride
        for index, box in enumerate(boxes):
            if len(box) != 4:
                raise ValueError(f"crop box {index} must be (y1, y2, x1, x2), got {box}")
            y1, y2, x1, x2 = box
            if y2 - y1 != crop or x2 - x1 != crop:
                raise ValueError(
                    f"crop box {index} {box} must be {crop}x{crop} (hrda.hr_crop_size)"
                )
            if y1 % divisor or x1 % divisor:
                raise ValueError(
                    f"crop box {index} {box}: offsets must be divisible by {divisor} "
                    f"(the LR logits are at 1/{divisor} of the input)"
                )
            if y1 < 0 or x1 < 0 or y2 > height or x2 > width:
                raise ValueError(f"crop box {index} {box} is outside the {height}x{width} image")
        return boxes  # type: ignore[return-value]

    def forward_train(
        self,
        img: Tensor,
        crop_boxes: CropBoxSource = None,
        generator: Generator | None = None,
    ) -> SegmentorOutput:
        """HRDA training forward: LR context, one HR detail crop per image, masked fusion.

        Args:
            img: B×3×H×W float RGB in 0..255; H and W multiples of 8 (4 / lr_scale) and at
                least ``hr_crop_size``.
            crop_boxes: where the detail crops are. None: one random box shared by the batch
                (:func:`random_crop_box` with ``generator``); a sequence: one ``(y1, y2, x1, x2)``
                box per image, possibly different (e.g. entropy-based crops); a callable: receives
                the detached B×K×H/8×W/8 LR logits and returns the boxes, so entropy cropping
                needs no second LR pass.
            generator: randomness of the default box.

        Returns:
            :class:`SegmentorOutput` with every HRDA field set.

        Raises:
            ValueError: image size or crop boxes not usable (wrong size, offsets not divisible
                by 8, outside the image, wrong count).
        """
        _check_image(img)
        batch, _, height, width = img.shape
        crop = self.hrda.hr_crop_size
        if height % self.lr_output_stride or width % self.lr_output_stride:
            raise ValueError(
                f"HRDA training input must have height and width divisible by "
                f"{self.lr_output_stride}, got {height}x{width}"
            )
        if min(height, width) < crop:
            raise ValueError(
                f"HRDA training input {height}x{width} is smaller than the detail crop {crop}"
            )
        # Given or random boxes are checked before any network pass; a callable needs the LR
        # logits first.
        if crop_boxes is None:
            box = random_crop_box(height, width, crop, self.hrda.crop_coord_divisible, generator)
            boxes = [box] * batch
        elif not callable(crop_boxes):
            boxes = self._checked_crop_boxes(crop_boxes, batch, height, width)
        x = self.normalize(img)
        lr_features = self._lr_features(x)
        lr_fused, lr_logits = self.decode_head.head(lr_features)
        if callable(crop_boxes):
            boxes = self._checked_crop_boxes(crop_boxes(lr_logits.detach()), batch, height, width)

        crops = torch.cat(
            [x[index : index + 1, :, y1:y2, x1:x2] for index, (y1, y2, x1, x2) in enumerate(boxes)]
        )
        hr_fused, hr_logits = self.decode_head.head(self.backbone(crops))

        lr_height, lr_width = lr_logits.shape[-2:]
        mask_side = crop // self.lr_output_stride
        crop_mask = paste_crops(
            lr_logits.new_ones((batch, 1, mask_side, mask_side)), boxes, lr_height, lr_width,
            self.lr_output_stride,
        )
        attention = self.decode_head.attention(lr_features) * crop_mask

        out_height, out_width = height // HEAD_OUTPUT_STRIDE, width // HEAD_OUTPUT_STRIDE
        hr_canvas = paste_crops(hr_logits, boxes, out_height, out_width, HEAD_OUTPUT_STRIDE)
        logits = fuse_scales(lr_logits, hr_canvas, attention, self.hrda.fusion_order)
        features = F.interpolate(
            lr_fused, size=(out_height, out_width), mode="bilinear", align_corners=True
        )
        feature_weight = None
        if self.decode_head.feat_weighter is not None:
            feature_weight = F.interpolate(
                self.decode_head.feature_weight(lr_features), size=(out_height, out_width),
                mode="bilinear", align_corners=False,
            )
        return SegmentorOutput(
            logits=logits,
            features=features,
            backbone_features=lr_features,
            hr_logits=hr_logits,
            lr_logits=lr_logits,
            attention=attention,
            hr_features=paste_crops(hr_fused, boxes, out_height, out_width, HEAD_OUTPUT_STRIDE),
            crop_mask=crop_mask,
            feature_weight=feature_weight,
            crop_boxes=boxes,
        )


def build_segmentor(config: ModelConfig | str) -> Segmentor:
    """Builds a randomly initialised segmentor.

    Args:
        config: a :class:`ModelConfig`, or the name of a registered one (``hrda_mit_b5``…).

    Returns:
        :class:`HRDASegmentor` when ``config.hrda`` is set, else :class:`DAFormerSegmentor`.
    """
    if isinstance(config, str):
        config = get_model_config(config)
    if config.hrda is not None:
        return HRDASegmentor(config)
    return DAFormerSegmentor(config)
