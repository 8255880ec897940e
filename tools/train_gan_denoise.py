"""Train an adversarial speckle reducer (us-denoise-gan); export ONNX, TorchScript and card.

    python -m tools.train_gan_denoise --out engines/models/us-denoise-gan --epochs 30 --threads 1
    python -m tools.train_gan_denoise --out /tmp/gan --quick --init none   # smoke run, seconds

Needs the `train` extra. The generator is tools/denoise_net.DenoiseNet (us-denoise's network and
size); the discriminator a small PatchGAN (`PatchDiscriminator`, three strided 4x4 convolutions,
spectral norm, LeakyReLU, one score per ~46-pixel patch) that tells the phantom's clean image
from the generator's output on random 256 x 256 crops. Loss of the generator: L1 to the clean
image + `--adv-weight` x least-squares adversarial loss (LSGAN); of the discriminator: LSGAN.
SRGAN-style, the generator starts (`--init`, default us-denoise) from a content-trained
denoiser's weights (the bundled ONNX file; BatchNorm folded, so the generator's BatchNorms stay
in inference mode) and is then trained adversarially; `--init none` starts from scratch.
The card's PSNR / SSIM / GMSD / texture ratio come from held-out seeds through the exported ONNX
model and the real pipeline. Deterministic for a given --seed and --threads.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.denoise_net import DenoiseNet
from tools.train_common import (
    add_held_out_options,
    check_training_args,
    denoiser_card_head,
    export_model,
    forward,
    load_onnx_weights,
    parse_training_args,
    run_card,
    schedule_card,
    start_run,
    training_parser,
    versions,
)
from tools.train_denoise import CROP, SIZE, batch, denoise_data, pairs_card, score_denoiser

MODELS = Path(__file__).resolve().parents[1] / "engines" / "models"


class PatchDiscriminator(nn.Module):
    """1 x 1 x H x W image / 255 -> 1 x 1 x H/8 x W/8 realness scores (PatchGAN)."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.widths = widths
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        cin = 1
        for w in widths:
            layers += [sn(nn.Conv2d(cin, w, 4, 2, 1)), nn.LeakyReLU(0.2)]
            cin = w
        layers.append(sn(nn.Conv2d(cin, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.25) / 0.25)


def initial_generator(init: str, mean: float, std: float) -> tuple[DenoiseNet, float, float]:
    """(generator, mean, std): from `init`'s bundled ONNX weights and normalisation, or new."""
    if init == "none":
        return DenoiseNet(mean, std), mean, std
    card = json.loads((MODELS / init / "card.json").read_text())
    mean, std = card["normalization"]["mean"][0], card["normalization"]["std"][0]
    model = DenoiseNet(mean, std, tuple(card["architecture"]["widths"]))
    load_onnx_weights(model, MODELS / init / "model.onnx")
    return model, mean, std


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = training_parser(__doc__, "us-denoise-gan", epochs=30, lr=1e-4, train_seeds="0-63")
    p.add_argument("--d-lr", type=float, default=2e-4, help="discriminator learning rate")
    p.add_argument("--adv-weight", type=float, default=0.01, help="adversarial loss weight")
    p.add_argument("--init", default="us-denoise", help="bundled denoiser to start from, or 'none'")
    add_held_out_options(p, frames_per_seed=4, latency_runs=100)
    p.set_defaults(batch=8)
    args = parse_training_args(p, argv)
    check_training_args(p, args, args.test_seeds)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command, started, rng = start_run("tools.train_gan_denoise", args, argv)

    noisy, clean, mean, std = denoise_data(args, started)
    gen, mean, std = initial_generator(args.init, mean, std)
    disc = PatchDiscriminator()
    g_opt = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=args.d_lr, betas=(0.5, 0.999))
    gen.train()
    if args.init != "none":  # folded weights: BatchNorm is the identity + bias; keep it so
        for m in gen.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()

    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        logs: dict[str, list[float]] = {"l1": [], "g_adv": [], "d": []}
        for _ in range(args.steps_per_epoch):
            x, y = batch(rng, noisy, clean, args.batch, CROP)
            real = torch.from_numpy(y)
            fake = forward(gen, torch.from_numpy((x - mean) / std), args.precision)
            # discriminator: clean -> 1, generated -> 0 (least squares)
            d_loss = 0.5 * (
                (forward(disc, real, args.precision) - 1).pow(2).mean()
                + forward(disc, fake.detach(), args.precision).pow(2).mean()
            )
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            # generator: content (L1) + adversarial (make the discriminator say 1)
            l1 = (fake - real).abs().mean()
            g_adv = (forward(disc, fake, args.precision) - 1).pow(2).mean()
            g_opt.zero_grad()
            (l1 + args.adv_weight * g_adv).backward()
            g_opt.step()
            for k, v in (("l1", l1), ("g_adv", g_adv), ("d", d_loss)):
                logs[k].append(float(v.item()))
        print(
            f"epoch {epoch}/{args.epochs}  L1 {np.mean(logs['l1']) * 255:.3f} levels  "
            f"G adv {np.mean(logs['g_adv']):.3f}  D {np.mean(logs['d']):.3f}  "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - t0

    fresh = DenoiseNet(mean, std, gen.widths)
    onnx_path, _ = export_model(gen, fresh, args.out, (1, 1, SIZE, SIZE), "denoised")

    init = (
        "from scratch"
        if args.init == "none"
        else f"{args.init}'s weights (engines/models/{args.init}/model.onnx, BatchNorm folded "
        "and kept in inference mode), then adversarial fine-tuning"
    )
    card: dict = {
        **denoiser_card_head(
            args.name,
            "Ultrasound speckle reduction trained adversarially (generator + PatchGAN "
            "discriminator, L1 content loss): noisy B-mode frame -> clean estimate, trained only "
            "on medstream's synthetic phantom (noisy / speckle-free pairs).",
            gen,
            SIZE,
            mean,
            std,
        ),
        "training": {
            **pairs_card(args),
            "init": init,
            **schedule_card(args),  # its optimizer replaced: in place, the card's order kept
            "optimizer": f"Adam betas (0.5, 0.999), constant lr: generator {args.lr}, "
            f"discriminator {args.d_lr}; one discriminator step per generator step",
            "adversarial_weight": args.adv_weight,
            "loss": f"generator: L1 (pixel / 255) + {args.adv_weight} x LSGAN (D(G(x)) - 1)^2; "
            "discriminator: LSGAN 0.5 ((D(clean) - 1)^2 + D(G(x))^2)",
            "discriminator": {
                "name": "PatchDiscriminator (tools/train_gan_denoise.py)",
                "widths": list(disc.widths),
                "parameters": sum(p.numel() for p in disc.parameters()),
                "shipped": False,
            },
            **run_card(args, train_seconds),
        },
        "command": command,
        "versions": versions(),
        "intended_use": "Research and demonstration: the adversarial row of `medstream "
        "evaluate`, beside us-denoise. The output is a synthetic estimate, not a diagnostic "
        "image: a GAN can invent texture.",
        "training_data": "Synthetic only: pairs of noisy and speckle-free frames from "
        "medstream's ultrasound phantom; no patient data.",
        "notice": "Research use only, not for diagnosis",
    }
    metrics, latency = score_denoiser(
        args,
        onnx_path,
        card,
        "SSIM 11x11 Gaussian window; GMSD and texture ratio as in tools/image_metrics.py",
    )
    print(
        f"held-out PSNR {metrics['psnr_db']:.2f} dB (input {metrics['input_psnr_db']:.2f}), "
        f"SSIM {metrics['ssim']:.3f}, GMSD {metrics['gmsd']:.4f}, texture ratio "
        f"{metrics['texture_ratio']:.3f}; {card['cost']['gflops']} GFLOPs, "
        f"{latency['pipeline_median_ms']:.2f} ms median; total "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
