"""Train a preset: ``python -m training.run PRESET [--data-root DIR] [--work-dir DIR]
[--set key=value ...] [--resume]``.

Multi-GPU: ``torchrun --nproc_per_node=N -m training.run gta_hrda``. Each rank draws its own data
stream; gradients are averaged over ranks after every backward so the students, and therefore
the EMA teachers, stay identical; the global batch of the preset is split over the ranks, and so
are the validation images (the confusion matrices are summed over ranks).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.checkpoint import CheckpointError, load_mit_imagenet
from models.segmentor import build_segmentor

from .config import DESCRIPTIONS, PRESETS, TrainConfig, get_preset
from .data.errors import DatasetError
from .data.loader import build_uda_loader, build_val_dataset
from .evaluate import evaluate, scores_to_json
from .optim import build_optimizer, set_learning_rate
from .overrides import OverrideError, apply_overrides, dataclass_from_dict, to_dict
from .report import save_debug_image, save_final_plots
from .state import load_training_checkpoint, save_training_checkpoint
from .uda_step import UDABatch, uda_step

LATEST = "latest.safetensors"
BEST = "best.safetensors"


class TrainingError(RuntimeError):
    """A run cannot start or must stop; the message says why and what to do."""


def resolve_device(config: TrainConfig) -> torch.device:
    """The device a run uses, refusing GPU-sized presets on a CPU unless ``allow_cpu``."""
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available; "
                            "use --set device=cpu")
    gpu_sized = not config.preset.startswith("toy_") and config.model.backbone != "mit_test"
    if device.type == "cpu" and gpu_sized and not config.allow_cpu:
        raise TrainingError(
            f"preset {config.preset!r} ({config.model.backbone}, {config.data.crop_size} crops) "
            "is sized for a CUDA GPU and none is available. To run it on the CPU anyway (days "
            "per thousand iterations) add: --set allow_cpu=true")
    return device


def _distributed() -> tuple[int, int, int]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size


def _average_gradients(model: nn.Module, world_size: int) -> None:
    """All-reduce the gradients (coalesced into one buffer) and divide by the rank count."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if world_size == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _broadcast_buffers(model: nn.Module, world_size: int) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), as DDP's
    ``broadcast_buffers`` does: each rank updates them from its own batch, so without this the
    ranks would evaluate, and rank 0 save, different models."""
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if world_size == 1 or not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.broadcast(flat, src=0)
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_models(config: TrainConfig, device: torch.device
                 ) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """Student (ImageNet-initialised when ``pretrained`` is set), EMA teacher and the frozen
    ImageNet model of the feature distance."""
    student = build_segmentor(config.model)
    if config.pretrained:
        if not config.model.backbone.startswith("mit_b"):
            raise TrainingError(f"pretrained weights are loaded for MiT backbones only; set "
                                f"--set pretrained= for {config.model.backbone}")
        load_mit_imagenet(student.backbone, config.pretrained)
    student.to(device).train()
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    imagenet = None
    if config.uda.fd_lambda > 0 and config.uda.mode != "target_only":
        imagenet = copy.deepcopy(student).eval()
        for parameter in imagenet.parameters():
            parameter.requires_grad_(False)
    return student, teacher, imagenet


def teacher_checksum(teacher: nn.Module) -> float:
    """Sum of all teacher parameters in float64: equal on every rank when DDP is in sync."""
    return float(sum(p.detach().double().sum() for p in teacher.parameters()))


def _check_ranks_agree(student: nn.Module, teacher: nn.Module, world_size: int) -> float:
    checksum = teacher_checksum(teacher)
    if world_size > 1:
        statistics = float(sum(b.double().sum() for b in student.buffers()
                               if b.is_floating_point()))
        values = [None] * world_size
        dist.all_gather_object(values, (checksum, statistics))
        if any(v[0] != values[0][0] for v in values):
            raise TrainingError(f"the EMA teachers differ between ranks: {values}")
        if any(v[1] != values[0][1] for v in values):
            raise TrainingError(f"the students' BatchNorm statistics differ between ranks: "
                                f"{values}")
    return checksum


def _check_finite(logs: dict[str, float], iteration: int) -> None:
    bad = [name for name, value in logs.items() if not math.isfinite(value)]
    if bad:
        raise TrainingError(f"non-finite loss at iteration {iteration}: "
                            + ", ".join(f"{name}={logs[name]}" for name in bad)
                            + "; lower optim.lr or use precision=fp32, then --resume")


class _Logger:
    """JSON lines, TensorBoard scalars and the progress bar (rank 0 only)."""

    def __init__(self, work_dir: Path, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = None
        self.board = None
        self.bar = None
        if not enabled:
            return
        self.jsonl = open(work_dir / "log.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(work_dir / "tensorboard"))
        except ImportError:
            print("tensorboard is not installed: no TensorBoard scalars", file=sys.stderr)
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, desc="train",
                        disable=not sys.stderr.isatty() and os.environ.get("CLUDA_PROGRESS") != "1")

    def log(self, iteration: int, record: dict[str, float], write: bool) -> None:
        if not self.enabled:
            return
        self.bar.update(1)
        self.bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "seg_src", "cl_src")
                              if k in record}, refresh=False)
        if not write:
            return
        self.jsonl.write(json.dumps({"iteration": iteration, **record}) + "\n")
        self.jsonl.flush()
        if self.board is not None:
            for key, value in record.items():
                self.board.add_scalar(f"train/{key}", value, iteration)
        if not self.bar.disable:
            return
        terms = " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "lr")
        print(f"iter {iteration}: {terms} lr={record.get('lr', 0):.2e}", flush=True)

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        if self.enabled and self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.jsonl.close()
            if self.board is not None:
                self.board.close()


def train(config: TrainConfig, data_root: Path, work_dir: Path, resume: bool = False
          ) -> dict:
    """Runs (or resumes) one training run and returns the final evaluation as a dict."""
    rank, local_rank, world_size = _distributed()
    device = resolve_device(config)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if world_size > 1 else (device.index or 0))
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Leave a core to each data worker: OpenMP threads competing with the workers for the
        # cores slow a CPU step down by an order of magnitude (measured: 1.3 s vs 34 s).
        cores = len(os.sched_getaffinity(0)) // world_size
        torch.set_num_threads(max(1, cores - config.data.num_workers))
    if config.data.batch_size % world_size:
        raise TrainingError(f"data.batch_size={config.data.batch_size} cannot be split over "
                            f"{world_size} processes; set --set data.batch_size=<multiple>")
    rank_data = dataclass_from_dict(type(config.data), {
        **to_dict(config.data), "batch_size": config.data.batch_size // world_size})
    if config.pretrained and not Path(config.pretrained).is_file():
        raise TrainingError(
            f"pretrained weights {config.pretrained} do not exist. Download the SegFormer "
            f"ImageNet-1k weights ({config.model.backbone}.pth from NVlabs/SegFormer, or "
            f"python -m models.convert --download-mit {config.model.backbone} pretrained/ "
            "and --set pretrained=pretrained/model.safetensors); they are for non-commercial "
            "use. Or train from scratch with --set pretrained=")
    generator = _seed_everything(config.seed + rank)
    val_set = build_val_dataset(config.data, data_root)
    student, teacher, imagenet = build_models(config, device)
    if world_size > 1:
        for tensor in student.state_dict().values():
            dist.broadcast(tensor, 0)
    optimizer = build_optimizer(student, config.optim)
    work_dir.mkdir(parents=True, exist_ok=True)
    start, best, history = 0, None, []
    if resume:
        latest = work_dir / LATEST
        if not latest.is_file():
            raise TrainingError(f"--resume: no checkpoint {latest} to resume from")
        state = load_training_checkpoint(latest, student, teacher, optimizer,
                                         {"step": generator})
        start, best, history = state.iteration, state.best_miou, state.history
        if rank == 0:
            print(f"resumed from {latest} at iteration {start}")
    if rank == 0:
        (work_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    loader = build_uda_loader(rank_data, data_root, config.seed, rank, world_size,
                              start_batch=start)
    autocast_dtype = torch.bfloat16 if config.precision == "bf16" else None
    logger = _Logger(work_dir, config.iterations, start, rank == 0)
    started = time.perf_counter()

    def save(iteration: int, name: str = LATEST) -> None:
        if rank == 0:
            save_training_checkpoint(work_dir / name, student, teacher, optimizer, iteration,
                                     config, {"step": generator}, best, history)

    def run_evaluation(iteration: int) -> float:
        nonlocal best
        result = evaluate(student, config.model, val_set, config.eval_mode, device,
                          autocast_dtype=autocast_dtype, rank=rank, world_size=world_size)
        record = scores_to_json(result, {"iteration": iteration})
        history.append(record)
        logger.scalars(iteration, {"val/miou19": result.miou19, "val/miou16": result.miou16})
        if rank == 0:
            print(f"\niteration {iteration}: target mIoU19 {100 * result.miou19:.2f} "
                  f"(mIoU16 {100 * result.miou16:.2f}, mIoU13 {100 * result.miou13:.2f})",
                  flush=True)
        if best is None or result.miou19 > best:
            best = result.miou19
            save(iteration, BEST)
        return result.miou19

    try:
        for iteration in range(start, config.iterations):
            lr = set_learning_rate(optimizer, iteration, config.iterations, config.optim)
            batch = next(loader)
            step_batch = UDABatch(batch["src_img"], batch["src_label"], batch["tgt_img"],
                                  batch["tgt_valid_mask"], batch["tgt_label"]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=autocast_dtype is not None and device.type == "cuda"):
                result = uda_step(student, teacher, imagenet, step_batch, config, iteration,
                                  generator)
            _check_finite(result.logs, iteration)
            if not result.backward_done:
                result.loss.backward()
            _average_gradients(student, world_size)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _broadcast_buffers(student, world_size)
            done = iteration + 1
            logger.log(done, {**result.logs, "lr": lr},
                       write=done % config.log_interval == 0 or done == config.iterations)
            if rank == 0 and config.debug_image_interval and (
                    iteration % config.debug_image_interval == 0) and result.debug:
                with torch.no_grad():
                    student.eval()
                    prediction = student(step_batch.tgt_img).argmax(1)
                    student.train()
                save_debug_image(work_dir / "debug" / f"{done:06d}.png", result.debug, prediction)
            if config.eval_interval and done % config.eval_interval == 0 and done < config.iterations:
                run_evaluation(done)
            if done % config.checkpoint_interval == 0 or done == config.iterations:
                save(done)
    finally:
        logger.close()
    final = run_evaluation(config.iterations) if start < config.iterations or not history \
        else history[-1]["miou19"]
    save(config.iterations)
    checksum = _check_ranks_agree(student, teacher, world_size)
    if rank == 0:
        if world_size > 1:
            print(f"teacher checksum {checksum:.10e} identical on {world_size} ranks")
        save_final_plots(work_dir, history)
        elapsed = time.perf_counter() - started
        print(f"done: {config.iterations - start} iterations in {elapsed:.0f} s; "
              f"target mIoU19 {100 * final:.2f}; checkpoint {work_dir / LATEST}")
    return history[-1]


def _list_presets() -> str:
    width = max(len(name) for name in PRESETS)
    return "\n".join(f"{name:<{width}}  {DESCRIPTIONS.get(name, '')}" for name in PRESETS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", help="preset name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--data-root", default=os.environ.get("CLUDA_DATA", "data"),
                        help="data root (default: $CLUDA_DATA or data/)")
    parser.add_argument("--work-dir", help="output folder (default: work_dirs/PRESET)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from WORK_DIR/latest.safetensors")
    args = parser.parse_args(argv)
    if args.list or not args.preset:
        print(_list_presets())
        return 0 if args.list else 2
    try:
        config = apply_overrides(get_preset(args.preset), args.overrides)
        work_dir = Path(args.work_dir or Path("work_dirs") / config.preset)
        if args.resume and (work_dir / "config.json").is_file():
            saved = json.loads((work_dir / "config.json").read_text())
            config = apply_overrides(dataclass_from_dict(TrainConfig, saved), args.overrides)
        train(config, Path(args.data_root), work_dir, args.resume)
        if dist.is_initialized():
            dist.destroy_process_group()
    except (KeyError, OverrideError, TrainingError, DatasetError, CheckpointError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
