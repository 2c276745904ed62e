"""Decode heads: DAFormer's context-aware fusion decoder and HRDA's multi-resolution head."""

from .daformer import DAFormerHead
from .hrda import HRDAHead, fuse_scales, paste_crops

__all__ = ["DAFormerHead", "HRDAHead", "fuse_scales", "paste_crops"]
