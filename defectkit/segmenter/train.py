"""Train the segmentation network on labelled images: crops, Dice plus BCE (or focal, or Tversky),
AdamW with a warm-up and a cosine over the steps or the time budget, whichever ends first, the best
validated state kept (the last one always validated), and the post-processing chosen on the
validation part. Seeded and resumable (a state file beside the output)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from defectkit.devices import pick_device
from defectkit.errors import DefectkitError
from defectkit.schedule import BudgetSchedule
from defectkit.segmenter.config import RANDOM, TrainProposerConfig
from defectkit.segmenter.data import SegImage, rescaled
from defectkit.segmenter.inference import Postprocess, autocast, probability_map
from defectkit.segmenter.network import build_network, init_encoder
from defectkit.segmenter.sampling import CropBatches, batch_loader
from defectkit.segmenter.scoring import MIN_AREAS, choose_postprocess
from defectkit.state_dicts import load_failure, write_state
from defectkit.tensorboard import tensorboard_writer


@dataclass
class TrainedProposer:
    network: torch.nn.Module
    post: Postprocess
    metrics: dict
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0


def loss_fn(name: str):
    import segmentation_models_pytorch as smp
    from torchvision.ops import sigmoid_focal_loss

    if name == "tversky":
        return smp.losses.TverskyLoss("binary", alpha=0.3, beta=0.7)
    dice = smp.losses.DiceLoss("binary")
    if name == "dice+focal":
        return lambda logits, target: dice(logits, target) + 10 * sigmoid_focal_loss(logits, target, reduction="mean")
    return lambda logits, target: dice(logits, target) + F.binary_cross_entropy_with_logits(logits, target)


def validation_images(val: list[SegImage], limit_clean: bool) -> list[SegImage]:
    """Every defect image of the part; during training at most as many clean ones (the final choice
    of post-processing sees them all)."""
    defect = [i for i in val if i.regions]
    clean = [i for i in val if not i.regions]
    return defect + (clean[: max(len(defect), 1)] if limit_clean else clean)


def predict_maps(network: torch.nn.Module, images: list[SegImage], config: TrainProposerConfig, device) -> list[np.ndarray]:
    network.eval()
    return [probability_map(network, i.image, config.tile, config.overlap, device, config.input_scale) for i in images]


def train_network(train: list[SegImage], val: list[SegImage], config: TrainProposerConfig, state_file: Path | None = None,
                  device: str | None = None, progress: bool = True, log_dir: str | Path | None = None,
                  workers: int | None = None) -> TrainedProposer:
    """Train until ``config.epochs`` or ``config.max_minutes`` ends (the learning rate spans
    whichever comes first), validating every ``eval_every`` epochs and the last state; keep the
    best validated state. ``workers``: processes drawing crops (None: none on a CPU, where they
    would take the network's cores; several on a GPU, which one process cannot keep busy)."""
    config.validate()
    device = pick_device(device)
    workers = default_workers(device) if workers is None else int(workers)
    torch.manual_seed(config.seed)
    network = build_network(config.network)
    if config.encoder_weights not in (None, "", RANDOM):
        init_encoder(network, config.network, config.encoder_weights)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = BudgetSchedule(config.lr, config.epochs * config.steps_per_epoch, config.max_minutes * 60)
    criterion = loss_fn(config.loss)
    truths_of = lambda images: [(i.regions, i.boxes) for i in images]  # noqa: E731
    monitored = validation_images(val, limit_clean=True)
    final = validation_images(val, limit_clean=False)
    train = [rescaled(i, config.input_scale) for i in train]  # validation stays at full size, as inference sees it
    batches = CropBatches(train, config.image_size, config.batch_size, config.defect_share, config.seed, network.normalisation)

    best_f1, best_rank, best_state, history, waited = -1.0, None, None, [], 0
    if state_file is not None and state_file.is_file():
        saved = _read_state(state_file, config)
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        best_f1, history, waited = saved["best_f1"], saved["history"], saved["waited"]
        best_rank = tuple(saved["best_rank"]) if saved.get("best_rank") is not None else None
        best_state = saved["best"]
    writer = tensorboard_writer(log_dir, warn=False)
    budget = f" (or {config.max_minutes:g} min, whichever ends first)" if config.max_minutes else ""
    bar = tqdm(total=schedule.steps, initial=schedule.step, desc=f"train-proposer{budget}", unit="step", disable=not progress)
    losses: list[float] = []
    loader = iter(batch_loader(batches, schedule.step, workers))
    try:
        while not schedule.done() and waited < config.patience:
            network.train()
            inputs, targets = next(loader)
            inputs = inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            rate = schedule.apply(optimizer)
            with autocast(device):
                logits = network(inputs)
            loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.advance()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", best_f1=f"{max(best_f1, 0):.3f}", lr=f"{rate:.1e}")
            ended = schedule.done()
            if schedule.step % config.steps_per_epoch and not ended:
                continue
            epoch = -(-schedule.step // config.steps_per_epoch)
            row = {"epoch": epoch, "step": schedule.step, "loss": float(np.mean(losses)), "lr": rate,
                   "minutes": round(schedule.spent() / 60, 2)}
            losses = []
            if epoch % config.eval_every == 0 or ended:  # the last state is always validated
                checked = time.perf_counter()
                # judged at its best post-processing, as it will be used: a fixed threshold would
                # favour whichever epoch happens to be calibrated to it
                _, result = choose_postprocess(truths_of(monitored), predict_maps(network, monitored, config, device), (config.min_area,),
                                               config.max_false_per_clean)
                row.update({f"val_{k}": v for k, v in result.to_dict().items() if isinstance(v, float)})
                if best_rank is None or result.rank(config.max_false_per_clean) >= best_rank:
                    best_rank, best_f1, waited = result.rank(config.max_false_per_clean), result.f1, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
                else:
                    waited += 1
                # keep back the time of one more check and of the final choice, so that the budget holds them
                schedule.reserve = (time.perf_counter() - checked) * (1 + len(final) / max(len(monitored), 1))
            history.append(row)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, float):
                        writer.add_scalar(f"train_proposer/{key}", value, epoch)
            if state_file is not None:
                _write_state(state_file, config, network, optimizer, schedule, (best_f1, best_rank), history, waited, best_state)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if best_state is not None:
        network.load_state_dict(best_state)
    post, result = choose_postprocess(truths_of(final), predict_maps(network, final, config, device),
                                      tuple(sorted({config.min_area, *MIN_AREAS})), config.max_false_per_clean)
    network.cpu().eval()
    epochs_run = history[-1]["epoch"] if history else 0
    metrics = {"validation": result.to_dict(), "best_monitored_f1": round(best_f1, 4), "steps": schedule.step,
               "minutes": round(schedule.spent() / 60, 2)}
    return TrainedProposer(network, post, metrics, history, epochs_run)


def default_workers(device: torch.device) -> int:
    import os

    return 0 if device.type == "cpu" else max(0, min(8, (os.cpu_count() or 1) - 1))


def _write_state(path: Path, config, network, optimizer, schedule, best, history, waited, best_state) -> None:
    state = {
        "config": config.to_dict(),
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "best_f1": best[0],
        "best_rank": None if best[1] is None else list(best[1]),
        "history": history,
        "waited": waited,
        "best": best_state,
    }
    write_state(path, state)


def _read_state(path: Path, config: TrainProposerConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DefectkitError(f"{path}: cannot read the training state ({load_failure(exc)}); delete it to start over") from exc
    if state.get("config") != config.to_dict():
        changed = sorted(k for k in config.to_dict() if state.get("config", {}).get(k) != config.to_dict()[k])
        raise DefectkitError(f"{path}: a run with other settings ({', '.join(changed)}) left this state; "
                             "run with the same settings to resume it, or delete it to start over")
    return state
