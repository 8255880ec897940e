"""Check a model name without loading it: bundled names, .onnx paths (with their card),
classical methods and `+` chains, against the backend they would run on."""

from __future__ import annotations

from engines.backends import CLASSICAL_PREFIX
from engines.registry import ModelError, check_runnable, resolve_model


def check_model(model: str, backend: str) -> None:
    """Raise `ModelError` (one line) if `model` cannot be resolved or cannot run on `backend`."""
    names = model.split("+")
    if any(not n for n in names):
        raise ModelError(f"model chain {model!r}: empty name between '+'")
    for name in names:
        where = f"{name!r} in chain {model!r}" if len(names) > 1 else repr(name)
        if name.startswith(CLASSICAL_PREFIX):
            from engines.classical import list_classical

            methods = list_classical()
            if name not in methods:
                raise ModelError(f"unknown classical method {where}; one of {', '.join(methods)}")
            if backend not in ("auto", "classical"):
                raise ModelError(
                    f"model {where} is a classical OpenCV method: use backend auto or classical"
                )
            continue
        if backend == "classical":
            raise ModelError(f"backend 'classical' runs the classical-* methods only, not {where}")
        try:
            check_runnable(resolve_model(name))
        except ModelError as e:
            raise ModelError(f"{e}" if len(names) == 1 else f"chain {model!r}: {e}") from None
