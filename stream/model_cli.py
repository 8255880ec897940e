"""`medstream model add FILE.onnx`: make a user's ONNX file a model the pipeline can name."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from engines.model_add import TASK_CHOICES

    from .cli import at_least_one

    model = sub.add_parser("model", help="user models: `model add FILE.onnx`")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    add = model_sub.add_parser(
        "add",
        help="inspect an ONNX file, run it once, write it with a card into the user models "
        "folder ($MEDSTREAM_MODELS, default ~/.local/share/medstream/models)",
    )
    add.add_argument("file", help="the .onnx file (copied; the original is left as it is)")
    add.add_argument("--name", default=None, help="model name (default: the file's stem)")
    add.add_argument("--task", default="auto", choices=TASK_CHOICES, help="what the model does")
    add.add_argument(
        "--layout",
        default=None,
        help="detection layout, where the output's shape fits several (a 1- or 2-class YOLOv5 "
        "head 1 x N x 6|7 is shaped like NMS rows): yolo_4+C_N, yolo_N_5+C, nms_K_6, nms_K_7, "
        "nms_split, ssd_boxes_scores (docs/user_models.md)",
    )
    add.add_argument("--labels", default=None, help="class names, comma-separated")
    add.add_argument("--labels-file", default=None, help="class names, one per line")
    add.add_argument(
        "--mean", type=float, nargs="+", default=[0.0], help="per-channel mean of pixel / 255"
    )
    add.add_argument(
        "--std", type=float, nargs="+", default=[1.0], help="per-channel std of pixel / 255"
    )
    add.add_argument(
        "--channels",
        default=None,
        choices=("gray", "rgb", "bgr"),
        help="channel order the model expects (default: gray for 1 channel, rgb for 3)",
    )
    add.add_argument(
        "--size", type=at_least_one, default=256, help="input height and width where the model's are dynamic"
    )
    add.add_argument("--force", action="store_true", help="replace a user model of that name")
    add.set_defaults(func=_cmd_add)


def _cmd_add(args: argparse.Namespace) -> int:
    from engines.model_add import add_model
    from engines.registry import ModelError

    try:
        r = add_model(
            args.file,
            name=args.name,
            task=args.task,
            labels=args.labels,
            labels_file=args.labels_file,
            mean=args.mean,
            std=args.std,
            channels=args.channels,
            size=args.size,
            force=args.force,
            layout=args.layout,
        )
    except ModelError as e:
        print(f"medstream: model add: {e}", file=sys.stderr)
        return 2
    card, f = r.card, r.finding
    inp, norm = card["input"], card["normalization"]
    print(f"added user model {r.name!r} in {r.folder}")
    print(f"  input          {inp['name']!r} {inp['channels']} {inp['height']}x{inp['width']} {inp['dtype']}")
    print(f"  normalisation  (pixel / 255 - {norm['mean']}) / {norm['std']}")
    print(f"  task           {f.task}")
    print(f"  classes        {', '.join(card['labels']) or '(none: an output image)'}")
    kind = "sigmoid" if f.task == "segmentation" else "scores"
    print(f"  layout         {f.layout} {f.outputs}" + (f" {kind} {f.sigmoid}" if f.sigmoid else ""))
    print(f"  ms per frame   {r.ms_per_frame:.2f} (ONNX Runtime CPU, 1 thread)")
    for note in r.notes:
        print(f"  note           {note}")
    if f.task == "detection":
        print(f"  input fit      letterbox, pad {inp['pad_value']}; columns {', '.join(f.columns)}")
    print(f"use it in a config: engine: {{model: {r.name}}}")
    return 0
