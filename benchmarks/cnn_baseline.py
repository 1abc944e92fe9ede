"""Baseline: the same timm backbone with a linear head, fine-tuned end to end with cross-entropy on
the train crops (what most published defect classifiers do). Used by benchmarks/backbone_quality.py."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from defectkit.embed import Embedder
from defectkit.images import read_image, read_mask
from defectkit.jobs.pretrain import Augment


def _load(records):
    crops = [read_image(r["crop_path"]) for r in records]
    masks = [read_mask(r["mask_path"]) if r.get("mask_path") else np.ones(c.shape[:2], bool) for r, c in zip(records, crops)]
    return crops, masks


def train_cnn(records, backbone: str, image_size: int, mask_mode: str = "none", epochs: int = 15,
              batch_size: int = 64, lr: float = 1e-3, seed: int = 0, progress: bool = True):
    """Fine-tune backbone + linear head on ``records``' subtypes; returns (embedder, head, classes)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    classes = sorted({r["subtype"] for r in records})
    labels = torch.tensor([classes.index(r["subtype"]) for r in records])
    crops, masks = _load(records)
    embedder = Embedder(backbone, weights="random", image_size=image_size, mask_mode=mask_mode, seed=seed)
    head = nn.Linear(embedder.dim, len(classes))
    counts = torch.bincount(labels, minlength=len(classes)).float()
    criterion = nn.CrossEntropyLoss(weight=counts.sum() / (len(classes) * counts))  # balanced class weights
    parameters = list(embedder.model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(records) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    augment = Augment(image_size)
    embedder.model.train()
    for epoch in tqdm(range(epochs), desc="fine-tune CNN", disable=not progress):
        order = torch.randperm(len(records))
        for start in range(0, len(records), batch_size):
            index = order[start : start + batch_size]
            batch = torch.from_numpy(np.stack([embedder.prepare(*augment(crops[i], masks[i])) for i in index.tolist()]))
            loss = criterion(head(embedder.model(batch)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    embedder.model.eval()
    return embedder, head, classes


@torch.inference_mode()
def predict_cnn(model, records) -> tuple[list[str], np.ndarray]:
    embedder, head, classes = model
    crops, masks = _load(records)
    features = embedder.embed(crops, masks)
    proba = torch.softmax(head(torch.from_numpy(features)), dim=1).numpy()
    return [classes[i] for i in proba.argmax(axis=1)], proba
