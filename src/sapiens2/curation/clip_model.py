"""CLIP through Hugging Face ``transformers`` (no torchvision): image embeddings and prompt embeddings.

Loaded with ``CLIPModel.from_pretrained`` and ``AutoTokenizer.from_pretrained`` from a hub name or a local folder
(a folder written by ``save_pretrained`` holding the model and its tokenizer). Image preprocessing is CLIP's, done
with OpenCV/NumPy: resize the short side to the model's input size (bicubic), centre crop, scale to [0, 1],
normalise with CLIP's mean/std. ``transformers`` is part of the ``curate`` extra and imported only here.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from sapiens2.errors import ModelNotAvailableError

__all__ = ["ClipEncoder", "preprocess_for_clip", "resolve_device", "CLIP_MEAN", "CLIP_STD"]

log = logging.getLogger(__name__)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def resolve_device(name: str) -> str:
    """The device name for ``name`` (the shared rule of :func:`sapiens2.runtime.resolve_device`)."""
    from sapiens2.runtime import resolve_device as resolve

    return str(resolve(name))


def preprocess_for_clip(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, size, size) float32 normalised."""
    h, w = rgb.shape[:2]
    f = size / min(h, w)
    nh, nw = max(size, round(h * f)), max(size, round(w * f))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
    top, left = (nh - size) // 2, (nw - size) // 2
    crop = resized[top:top + size, left:left + size].astype(np.float32) / 255.0
    return ((crop - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)


class ClipEncoder:
    def __init__(self, model: str, device: str = "auto", dtype: str = "auto"):
        try:
            import torch
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as exc:
            raise ModelNotAvailableError("the CLIP stage needs transformers: pip install sapiens2[curate]") from exc
        self.torch = torch
        self.device = resolve_device(device)
        self.dtype = {"auto": torch.float16 if self.device == "cuda" else torch.float32, "float32": torch.float32,
                      "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        try:
            self.model = CLIPModel.from_pretrained(model).eval().to(self.device, self.dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except OSError as exc:
            raise ModelNotAvailableError(f"cannot load CLIP {model!r}: {exc}") from exc
        self.image_size = int(self.model.config.vision_config.image_size)
        log.info("CLIP %s on %s (%s), input %d px", model, self.device, self.dtype, self.image_size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings."""
        torch = self.torch
        pixels = np.stack([preprocess_for_clip(im, self.image_size) for im in images])
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device, self.dtype)
            pooled = self.model.vision_model(pixel_values=x).pooler_output
            emb = self.model.visual_projection(pooled).float()
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return emb.cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                        attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
            emb = self.model.text_projection(out).float()
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return emb.cpu().numpy()
