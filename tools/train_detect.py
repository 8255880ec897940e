"""Train the bundled surgical tool detector (endo-tools); export ONNX and its card.

    python -m tools.train_detect --out engines/models/endo-tools     # the bundled model
    python -m tools.train_detect --out /tmp/tools --quick            # smoke run, seconds
    python -m tools.train_detect --torchscript-only                  # model.pt from model.onnx

Needs the `train` extra. Frames come from `stream.sources.endoscopy` with the tool-tracking
realism (tools/eval_detect.scene_spec: instrument types, smoke, motion blur, occlusion), 640 x 480
BGR downscaled to 320 x 240; the truth is the source's per-tip boxes and types. The network
(tools/det_net.py) is trained CenterNet-style: a Gaussian centre heat-map per class (focal loss)
and the box at the cells near each centre (L1 on offset and log size); its exported output is
YOLOv8-style `1 x (4 + C) x N`. The card's metrics (AP at IoU 0.5 on held-out seeds) come from
the exported ONNX model (tools/eval_detect.py). Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from stream.sources.endoscopy import TOOL_LABELS
from tools.card_info import fill_card_info
from tools.det_net import STRIDE, DetNet
from tools.eval_detect import score_card, tool_frames
from tools.export_torchscript import export
from tools.train_common import (
    add_held_out_options,
    architecture_card,
    check_training_args,
    export_onnx,
    forward,
    input_card,
    loss_note,
    parse_training_args,
    run_card,
    schedule_card,
    seed_text,
    start_run,
    train,
    training_parser,
    versions,
    write_card,
)

WIDTH, HEIGHT = 320, 240
SCALE = 2.0  # frame pixels per model-input pixel (640 x 480 -> 320 x 240)
CLASSES = len(TOOL_LABELS)
THRESHOLD = 0.3  # the card's confidence_threshold: the operating point of the demo


def make_dataset(seeds: list[int], frames_per_seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(N x 240 x 320 x 3 uint8 BGR, per frame K x 5 boxes [x0, y0, x1, y1, type] in input px)."""
    images, boxes = [], []
    for image, truth in tool_frames(seeds, frames_per_seed):
        images.append(cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR))
        b = truth.copy()
        b[:, :4] /= SCALE
        boxes.append(b)
    return np.stack(images), boxes


def targets(boxes: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C x gh x gw centre heat-map, 4 x gh x gw box cx, cy, w, h in px, gh x gw weight)."""
    gh, gw = HEIGHT // STRIDE, WIDTH // STRIDE
    heat = np.zeros((CLASSES, gh, gw), np.float32)
    reg = np.zeros((4, gh, gw), np.float32)
    weight = np.zeros((gh, gw), np.float32)
    gy, gx = np.mgrid[0:gh, 0:gw].astype(np.float32) + 0.5
    for x0, y0, x1, y1, k in boxes:
        if flip:
            x0, x1 = WIDTH - x1, WIDTH - x0
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        sigma = max(0.5, min(w, h) / STRIDE / 3)
        g = np.exp(-((gx - cx / STRIDE) ** 2 + (gy - cy / STRIDE) ** 2) / (2 * sigma**2))
        i, j = min(int(cy // STRIDE), gh - 1), min(int(cx // STRIDE), gw - 1)
        g[i, j] = 1.0
        heat[int(k)] = np.maximum(heat[int(k)], g)
        near = (g > 0.3) & (g > weight)
        weight[near] = g[near]
        reg[:, near] = np.array([cx, cy, w, h], np.float32)[:, None]
    return heat, reg, weight


def detection_loss(
    model: DetNet, raw: torch.Tensor, heat: torch.Tensor, reg: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Focal loss on the heat-map (CenterNet, alpha 2 beta 4) + L1 on offset and log size."""
    p = torch.sigmoid(raw[:, 4:]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    focal = -(
        pos * (1 - p) ** 2 * torch.log(p) + (1 - pos) * (1 - heat) ** 4 * p**2 * torch.log(1 - p)
    )
    focal = focal.sum() / pos.sum().clamp(min=1)
    box = model.decode(raw).reshape(raw.shape[0], -1, HEIGHT // STRIDE, WIDTH // STRIDE)[:, :4]
    err = torch.cat(
        [
            (box[:, :2] - reg[:, :2]).abs() / STRIDE,
            (torch.log(box[:, 2:4]) - torch.log(reg[:, 2:4].clamp(min=1))).abs(),
        ],
        1,
    ).sum(1)
    l1 = (err * weight).sum() / weight.sum().clamp(min=1)
    return focal + l1


def batch(
    rng: np.random.Generator,
    images: np.ndarray,
    boxes: list[np.ndarray],
    size: int,
    mean: np.ndarray,
    std: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random batch, each frame mirrored left-right with probability 1/2."""
    idx = rng.integers(0, len(images), size)
    flips = rng.random(size) < 0.5
    x = images[idx].astype(np.float32) / 255
    x[flips] = x[flips, :, ::-1]
    x = ((x - mean) / std).transpose(0, 3, 1, 2)
    parts = [targets(boxes[i], bool(f)) for i, f in zip(idx, flips, strict=True)]
    heat, reg, weight = (torch.from_numpy(np.stack(p)) for p in zip(*parts, strict=True))
    return torch.from_numpy(np.ascontiguousarray(x)), heat, reg, weight


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "endo-tools", epochs=32, lr=4e-3, train_seeds="0-499")
    add_held_out_options(p, frames_per_seed=4, latency_runs=100)
    p.add_argument(
        "--torchscript-only",
        action="store_true",
        help="only write model.pt (TorchScript) from the folder's model.onnx and add it to the card",
    )
    p.set_defaults(test_seeds=list(range(2000, 2032)), batch=16, steps_per_epoch=50, threads=1)
    args = parse_training_args(p, argv)
    check_training_args(p, args, args.test_seeds)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.torchscript_only:
        add_torchscript(args.out)
        return
    command, started, rng = start_run("tools.train_detect", args, argv)
    cv2.setNumThreads(1)

    images, boxes = make_dataset(args.train_seeds, args.frames_per_seed)
    mean = [round(float(v) / 255, 4) for v in images.reshape(-1, 3).mean(0)]
    std = [round(float(v) / 255, 4) for v in images.reshape(-1, 3).std(0)]
    m32, s32 = np.array(mean, np.float32), np.array(std, np.float32)
    n_boxes = sum(len(b) for b in boxes)
    print(
        f"data: {len(images)} frames, {n_boxes} tips ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )

    model = DetNet(CLASSES, HEIGHT, WIDTH)

    def step_loss() -> torch.Tensor:
        x, heat, reg, weight = batch(rng, images, boxes, args.batch, m32, s32)
        return detection_loss(model, forward(model.raw, x, args.precision), heat, reg, weight)

    train_seconds = train(model, step_loss, loss_note, args.epochs, args.steps_per_epoch, args.lr)

    export_onnx(model, args.out, (1, 3, HEIGHT, WIDTH), "output")
    card: dict = {
        "name": args.name,
        "task": "detection",
        "description": "Surgical instrument tip detection (grasper, scissors, hook, clip applier) "
        "in endoscopic video, trained only on medstream's synthetic endoscopy source; the box is "
        "the instrument's tip (jaws / blades / hook and the end of the shaft).",
        "labels": list(TOOL_LABELS),
        "input": input_card("bgr", HEIGHT, WIDTH),
        "normalization": {"mean": mean, "std": std, "applied_to": "pixel / 255, B, G, R"},
        "output": {
            "name": "output",
            "layout": "yolo_4+C_N",
            "outputs": {"output": "output"},
            "columns": ["cx", "cy", "w", "h"],
            "dtype": "float32",
            "classes": CLASSES,
            "anchors": (HEIGHT // STRIDE) * (WIDTH // STRIDE),
            "postprocess": "rows cx, cy, w, h in model-input pixels then per-class sigmoid "
            "scores; threshold, class-aware NMS, scale to the frame",
        },
        "architecture": architecture_card("DetNet (tools/det_net.py)", model, in_channels=3),
        "training": {
            "data": "stream.sources.endoscopy with tool_types, smoke, blur, occlusion per seed "
            "(tools/eval_detect.scene_spec), 640x480 BGR downscaled to 320x240",
            "train_seeds": seed_text(args.train_seeds),
            "frames_per_seed": args.frames_per_seed,
            "frame_indices": "drawn per seed from 0-5999 (tools/eval_detect.tool_frames)",
            **schedule_card(args),
            "loss": "CenterNet focal loss on per-class centre heat-maps + L1 on centre offset "
            "and log size near each centre",
            "augmentation": "left-right mirror",
            **run_card(args, train_seconds),
        },
        "command": command,
        "versions": versions(),
        "confidence_threshold": THRESHOLD,
        "notice": "Research use only, not for diagnosis",
    }
    fill_card_info(card, "endo-tools")  # intended use, training data (tools/card_info.py)
    write_card(args.out / "card.json", card)
    add_torchscript(args.out)
    metrics = score_card(args.out, args.test_seeds, args.test_frames_per_seed, args.latency_runs)
    card = json.loads((args.out / "card.json").read_text())
    latency = card["cost"]["latency_ms"]
    print(
        f"held-out mAP@0.5 {metrics['map50']:.4f} (precision {metrics['precision']:.3f} recall "
        f"{metrics['recall']:.3f} at {THRESHOLD}); {card['cost']['gflops']} GFLOPs, "
        f"{latency['pipeline_median_ms']:.2f} ms median; total {time.perf_counter() - started:.0f} s",
        flush=True,
    )


def add_torchscript(folder: Path) -> None:
    """Write `folder`/model.pt from `folder`/model.onnx's weights (tools/export_torchscript.py)
    and name it in the card; prints the largest difference to ONNX Runtime."""
    diff = export(folder)
    print(f"exported {folder / 'model.pt'}; max |torchscript - onnx| {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
