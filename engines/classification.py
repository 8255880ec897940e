"""Classification postprocess: a 1 x C output -> the top-k (label index, probability) pairs.

The card's `output.scores` says what the C values are: "logits" (the default; a softmax turns
them into probabilities) or "probabilities" (used as they are). `medstream model add` writes
"probabilities" when the model's test run gave non-negative values summing to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCORES = ("logits", "probabilities")


def scores_kind(output: dict[str, Any], where: str) -> str:
    """The card's `output.scores` ("logits" when absent); `ValueError` naming the key if bad."""
    kind = output.get("scores", "logits")
    if kind not in SCORES:
        raise ValueError(f"{where}: output.scores must be logits or probabilities, got {kind!r:.40}")
    return str(kind)


def top_k(output: np.ndarray, k: int, kind: str, num_classes: int) -> list[tuple[int, float]]:
    """1 x C scores -> the k most probable (class index, probability), best first (ties: the
    lower index first)."""
    x = np.asarray(output, np.float64)
    if x.shape != (1, num_classes):
        raise ValueError(f"a classifier output must be 1 x {num_classes} (the card's labels), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the classifier output holds NaN or infinite values")
    p = x[0]
    if kind == "logits":
        e = np.exp(p - p.max())
        p = e / e.sum()
    elif kind != "probabilities":
        raise ValueError(f"scores must be logits or probabilities, got {kind!r}")
    order = np.argsort(-p, kind="stable")[: max(1, k)]
    return [(int(i), float(p[i])) for i in order]
