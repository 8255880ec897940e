"""What every bundled model card tells the user: intended use, training data, notice, and (for
segmentation) the confidence threshold. `fill_card_info` restores what a retrained card lacks;
`python -m tools.calibrate_gate` calls it, so retraining + calibrating leaves complete cards."""

from __future__ import annotations

from typing import Any

NOTICE = "Research use only, not for diagnosis"
# softmax margin below which a pixel is sent as background; docs/applicability.md: on held-out
# phantom frames 0.5 removes 36 % of wrongly drawn foreground for 0.2 points of pixel accuracy
CONFIDENCE_THRESHOLD = 0.5

CARD_INFO: dict[str, tuple[str, str]] = {  # model: (intended use, training data)
    "us-seg": (
        "Research and demonstration: segmenting anechoic structures, lesions and bright "
        "interfaces in B-mode ultrasound that resembles medstream's synthetic phantom. Not "
        "validated on patient images.",
        "Synthetic only: medstream's ultrasound phantom (stream.sources.phantom; sector and "
        "linear probes, seeds 0-95), no patient data.",
    ),
    "us-seg-int8": (
        "As us-seg (int8 quantised copy for faster CPU and TensorRT inference). Research and "
        "demonstration on phantom-like B-mode ultrasound; not validated on patient images.",
        "Synthetic only: us-seg's training on medstream's ultrasound phantom, quantised with "
        "phantom calibration frames; no patient data.",
    ),
    "us-seg-dn": (
        "Research and demonstration: the segmenter of the hybrid chain us-denoise+us-seg-dn, on "
        "phantom-like B-mode ultrasound after speckle reduction. Not validated on patient images.",
        "Synthetic only: medstream's ultrasound phantom (seeds 0-95) after us-denoise; no "
        "patient data.",
    ),
    "us-seg-former": (
        "Research and demonstration: segmenting anechoic structures, lesions and bright "
        "interfaces in B-mode ultrasound that resembles medstream's synthetic phantom, with a "
        "small transformer (the evaluation's transformer row). Not validated on patient images.",
        "Synthetic only: medstream's ultrasound phantom (classic and anatomy scenes, seeds "
        "0-255), no patient data.",
    ),
    "us-seg-pruned": (
        "As us-seg (a channel-pruned, fine-tuned copy for faster CPU inference). Research and "
        "demonstration on phantom-like B-mode ultrasound; not validated on patient images.",
        "Synthetic only: us-seg's training on medstream's ultrasound phantom, then fine-tuning "
        "on phantom seeds 0-127; no patient data.",
    ),
    "us-denoise": (
        "Research and demonstration: speckle reduction of B-mode ultrasound that resembles "
        "medstream's synthetic phantom. The output is a smoothed estimate, not a diagnostic image.",
        "Synthetic only: pairs of noisy and speckle-free frames from medstream's ultrasound "
        "phantom; no patient data.",
    ),
    "us-denoise-v2": (
        "Research and demonstration: speckle reduction of B-mode ultrasound that resembles "
        "medstream's synthetic phantom, over a range of speckle strengths (trained at 0.5 to 1.2 "
        "x the phantom default). The output is a smoothed estimate, not a diagnostic image.",
        "Synthetic only: pairs of noisy and speckle-free frames from medstream's ultrasound "
        "phantom; no patient data.",
    ),
    "endo-instruments": (
        "Research and demonstration: segmenting surgical instruments in endoscopic video that "
        "resembles medstream's synthetic endoscope. Not validated on surgical video.",
        "Synthetic only: medstream's synthetic endoscopy source (stream.sources.endoscopy, "
        "seeds 0-79); no patient or surgical video.",
    ),
    "endo-tools": (
        "Research and demonstration: detecting and tracking surgical instrument tips in "
        "endoscopic video that resembles medstream's synthetic endoscope. Not validated on "
        "surgical video.",
        "Synthetic only: medstream's synthetic endoscope (stream.sources.endoscopy with tool "
        "types, smoke, blur and occlusion; seeds 0-499); no patient or surgical video.",
    ),
}


def fill_card_info(card: dict[str, Any], model: str) -> list[str]:
    """Set the keys `card` lacks (bundled `model`s only); return the keys set."""
    added: list[str] = []
    if model not in CARD_INFO:
        return added
    use, data = CARD_INFO[model]
    wanted: dict[str, Any] = {"intended_use": use, "training_data": data, "notice": NOTICE}
    if card.get("task") == "segmentation":
        wanted["confidence_threshold"] = CONFIDENCE_THRESHOLD
    for key, value in wanted.items():
        if key not in card:
            card[key] = value
            added.append(key)
    return added
