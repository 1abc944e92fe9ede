"""Feature matrices for the classifier: geometry from the manifest, optional texture, the embedding.

Columns are always in this order: ``[geometry | texture | embedding]``. Geometry comes first so that
its columns keep their place whatever happens to the embedding (for example PCA in
:class:`EmbeddingPCA`), and a meta-learner can be handed them by position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from defectkit.errors import DefectkitError
from defectkit.geometry import FEATURE_NAMES
from defectkit.images import gray, read_image, read_mask

GEOMETRY = ("log_area", "edges", *FEATURE_NAMES)
LBP_BINS = 10  # uniform LBP with 8 neighbours has 10 codes
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
GLCM_DISTANCES = (1, 3)
TEXTURE = (
    *(f"lbp_{i}" for i in range(LBP_BINS)),
    *(f"lbp_region_{i}" for i in range(LBP_BINS)),
    *(f"glcm_{p}_d{d}" for d in GLCM_DISTANCES for p in GLCM_PROPS),
    *(f"hog_{i}" for i in range(32)),
)
TEXTURE_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Which blocks make up a feature row; saved in a bundle so prediction builds the same rows."""

    geometry: tuple[str, ...] = GEOMETRY
    texture: bool = False
    embedding: bool = True

    def __post_init__(self):
        unknown = [name for name in self.geometry if name not in GEOMETRY]
        if unknown:
            raise DefectkitError(f"unknown geometry feature(s) {unknown}; known: {', '.join(GEOMETRY)}")
        object.__setattr__(self, "geometry", tuple(self.geometry))

    @property
    def n_tabular(self) -> int:
        """Columns before the embedding (geometry and texture)."""
        return len(self.geometry) + (len(TEXTURE) if self.texture else 0)

    def names(self, embedding_dim: int = 0) -> list[str]:
        texture = list(TEXTURE) if self.texture else []
        embedding = [f"emb_{i}" for i in range(embedding_dim)] if self.embedding else []
        return [*self.geometry, *texture, *embedding]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["geometry"] = list(self.geometry)
        data["texture_version"] = TEXTURE_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSpec":
        return cls(geometry=tuple(data["geometry"]), texture=bool(data["texture"]), embedding=bool(data["embedding"]))


def geometry_row(item, names: Sequence[str] = GEOMETRY) -> list[float]:
    """Geometry features of one region, a manifest record (dict) or a ``Defect``: log area, edge
    count, then ``features`` by name."""
    value_of = item.get if isinstance(item, dict) else lambda name: getattr(item, name, None)
    features = value_of("features") or {}
    row = []
    for name in names:
        if name == "log_area":
            value = math.log1p(float(value_of("area") or 0))
        elif name == "edges":
            value = value_of("edges")
        else:
            value = features.get(name)
        if value is None:
            where = value_of("crop_path") or value_of("image") or "?"
            raise DefectkitError(f"{where}: manifest record has no {name!r} (re-run `defectkit extract` to measure it)")
        row.append(float(value))
    return row


def geometry_matrix(items: Sequence, names: Sequence[str] = GEOMETRY) -> np.ndarray:
    """One row of :func:`geometry_row` per manifest record or ``Defect``."""
    return np.asarray([geometry_row(r, names) for r in items], dtype=np.float32).reshape(len(items), len(names))


def texture_vector(crop: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """LBP histograms (whole crop and region), GLCM statistics and a coarse HOG of one crop."""
    from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern

    image = cv2.resize(gray(crop), (64, 64), interpolation=cv2.INTER_AREA)
    lbp = local_binary_pattern(image, 8, 1, method="uniform")
    whole = np.bincount(lbp.astype(int).ravel(), minlength=LBP_BINS)[:LBP_BINS] / lbp.size
    if mask is not None and mask.any():
        region = cv2.resize(mask.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
        region = cv2.dilate(region, np.ones((3, 3), np.uint8)).astype(bool)
    else:
        region = np.ones_like(image, dtype=bool)
    inside = np.bincount(lbp[region].astype(int), minlength=LBP_BINS)[:LBP_BINS] / max(1, region.sum())
    levels = (image // 8).astype(np.uint8)  # 32 gray levels keep the matrix dense enough on 64 px
    glcm = graycomatrix(levels, GLCM_DISTANCES, [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, symmetric=True, normed=True)
    stats = [np.nan_to_num(graycoprops(glcm, p)[i].mean()) for i in range(len(GLCM_DISTANCES)) for p in GLCM_PROPS]
    shape = hog(image, orientations=8, pixels_per_cell=(32, 32), cells_per_block=(1, 1))
    return np.concatenate([whole, inside, stats, shape]).astype(np.float32)


def texture_matrix(records: Sequence[dict], cache=None, progress: bool = False) -> np.ndarray:
    """Texture rows for manifest records (crop and mask files), cached by crop content when a cache is given."""
    from defectkit.embed.cache import content_key

    identity = {"texture": TEXTURE_VERSION}
    keys = [content_key(r["crop_path"], r.get("mask_path")) for r in records]
    known = cache.load(identity) if cache is not None else {}
    new_keys, new_rows = [], []
    for record, key in tqdm(list(zip(records, keys)), desc="texture", unit="crop", disable=not progress):
        if key in known:
            continue
        mask = read_mask(record["mask_path"]) if record.get("mask_path") else None
        known[key] = texture_vector(read_image(record["crop_path"]), mask)
        new_keys.append(key)
        new_rows.append(known[key])
    if cache is not None and new_keys:
        cache.save(identity, new_keys, np.stack(new_rows))
    return np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, len(TEXTURE)), np.float32)


def build_features(records: Sequence[dict], spec: FeatureSpec, embedder=None, cache=None, progress: bool = False,
                   embed_on=None) -> np.ndarray:
    """The feature matrix ``[geometry | texture | embedding]`` for manifest records. ``embed_on``
    wraps the embedder to embed the crops elsewhere (``distributed.RayEmbedder``)."""
    blocks = [geometry_matrix(records, spec.geometry)]
    if spec.texture:
        blocks.append(texture_matrix(records, cache, progress))
    if spec.embedding:
        if embedder is None:
            raise DefectkitError("the feature spec asks for embeddings but no embedder was given")
        blocks.append((embed_on(embedder) if embed_on else embedder).embed_records(records, cache, progress))
    return np.hstack(blocks).astype(np.float32)


class EmbeddingPCA(TransformerMixin, BaseEstimator):
    """PCA on the columns from ``start`` on (the embedding); the ``start`` leading columns pass through.

    Fitted on training data only, like any transformer in a Pipeline.
    """

    def __init__(self, start: int = 0, n_components: int = 64, random_state: int | None = 0):
        self.start = start
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        tail = X[:, self.start :]
        self.pca_ = PCA(n_components=min(self.n_components, *tail.shape), random_state=self.random_state).fit(tail) if tail.shape[1] else None
        return self

    def transform(self, X):
        check_is_fitted(self, "pca_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        if self.pca_ is None:
            return X
        return np.hstack([X[:, : self.start], self.pca_.transform(X[:, self.start :])])


def feature_columns(X: np.ndarray, built: FeatureSpec, wanted: FeatureSpec, embedding_dim: int = 0) -> np.ndarray:
    """The columns of ``wanted`` out of rows built with ``built`` (which holds every block of it)."""
    names = {n: i for i, n in enumerate(built.names(embedding_dim))}
    return X[:, [names[n] for n in wanted.names(embedding_dim if wanted.embedding else 0)]]


def crop_features(defects: Sequence, crops: Sequence[np.ndarray], masks: Sequence[np.ndarray], spec: FeatureSpec, embedder=None) -> np.ndarray:
    """The rows :func:`build_features` makes, for regions (``Defect``s or records) whose crops are
    held in memory (``classify``): no files, no cache."""
    blocks = [geometry_matrix(defects, spec.geometry)]
    if spec.texture:
        blocks.append(np.stack([texture_vector(c, m) for c, m in zip(crops, masks)]).reshape(len(crops), len(TEXTURE)))
    if spec.embedding:
        if embedder is None:
            raise DefectkitError("the feature spec asks for embeddings but no embedder was given")
        blocks.append(embedder.embed(list(crops), list(masks)))
    return np.hstack(blocks).astype(np.float32)
