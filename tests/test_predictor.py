"""The predictor: any image in, trainIds / confidence / probabilities out, through the shared path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoint import save_segmentor
from models.inference import slide_inference
from models.predictor import Predictor, as_rgb_array, infer_logits
from models.segmentor import build_segmentor


@pytest.fixture(scope="module")
def hrda_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmentor("cluda_hrda_mit_test").eval()


@pytest.mark.parametrize("shape", [(100, 180, 3), (180, 100, 3), (37, 41), (64, 64, 4)])
def test_any_image_gives_matching_outputs(hrda_model, shape) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    predictor = Predictor(hrda_model, hrda_model.config)
    for mode in ("hrda", "whole"):
        result = predictor.predict(image, mode=mode, return_probabilities=True)
        assert result.label.shape == shape[:2] and result.label.dtype == np.uint8
        assert result.label.max() < 19
        assert result.confidence.shape == shape[:2]
        assert ((result.confidence > 0) & (result.confidence <= 1)).all()
        np.testing.assert_allclose(result.probabilities.sum(0), 1.0, rtol=1e-4)
        np.testing.assert_array_equal(result.probabilities.argmax(0), result.label)
        assert set(result.timings) == {"preprocess_s", "inference_s", "postprocess_s"}


def test_hrda_mode_is_the_shared_slide_over_rescaled_input(hrda_model) -> None:
    config = hrda_model.config
    image = torch.rand(1, 3, 70, 150) * 255
    with torch.no_grad():
        result = infer_logits(hrda_model, image, config, "hrda")
        # The policy by hand: rescale into eval_scale, slide windows, resize logits back.
        scaled = F.interpolate(image, size=(119, 256), mode="bilinear", align_corners=False)
        expected = slide_inference(hrda_model, scaled, config.inference_window,
                                   config.inference_stride, config.num_classes,
                                   pad_value=(123.675, 116.28, 103.53))
        expected = F.interpolate(expected, size=(70, 150), mode="bilinear", align_corners=False)
    torch.testing.assert_close(result, expected)


def test_whole_mode_is_one_pass_and_resize_can_be_disabled(hrda_model) -> None:
    image = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        torch.testing.assert_close(
            infer_logits(hrda_model, image, hrda_model.config, "whole", resize=False),
            hrda_model(image))
    with pytest.raises(ValueError, match="mode"):
        infer_logits(hrda_model, image, hrda_model.config, "tiles")


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="uint8"):
        as_rgb_array(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_rgb_array(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        as_rgb_array(np.zeros((0, 4, 3), dtype=np.uint8))
    gray = as_rgb_array(np.full((2, 2), 7, dtype=np.uint8))
    assert gray.shape == (2, 2, 3) and (gray == 7).all()


def test_from_checkpoint_reports_metadata(tmp_path: Path, hrda_model) -> None:
    path = tmp_path / "toy.safetensors"
    save_segmentor(path, hrda_model, hrda_model.config, extra_metadata={"iteration": 600})
    predictor = Predictor.from_checkpoint(path)
    assert predictor.metadata["version"] == "600"
    assert len(predictor.metadata["sha256"]) == 16
    image = np.random.default_rng(1).integers(0, 256, size=(50, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(predictor.predict(image).label,
                                  Predictor(hrda_model, hrda_model.config).predict(image).label)
