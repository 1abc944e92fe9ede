"""Embedding: crops -> vectors with a timm backbone, cached by crop content and backbone identity."""

from defectkit.embed.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, RandomWeightsWarning, build_backbone, load_weights
from defectkit.embed.cache import EmbeddingCache, default_cache_dir
from defectkit.embed.embedder import DEFAULT_IMAGE_SIZE, DEFAULT_MASK_MODE, MASK_MODES, Embedder

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MASK_MODE",
    "DEFAULT_WEIGHTS",
    "MASK_MODES",
    "Embedder",
    "EmbeddingCache",
    "RandomWeightsWarning",
    "build_backbone",
    "default_cache_dir",
    "load_weights",
]
