"""The TensorRT engine cache: one file per (model, GPU, TensorRT version, precision).

A serialized engine only runs on the GPU model and TensorRT version that built it, and only
describes the model file it was built from. Its cache key hashes all five parts, so a changed
model file, another GPU, a TensorRT upgrade or another precision never loads a stale engine.
Each engine has a JSON sidecar with the parts, for `medstream engine info`. Writes are atomic
(temporary file + rename): a crash mid-write never leaves a truncated engine behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKeyParts:
    """Everything a serialized engine depends on."""

    model_sha256: str
    gpu_name: str
    compute_capability: tuple[int, int]
    tensorrt_version: str
    precision: str  # fp32, fp16 or int8


def engine_cache_key(parts: EngineKeyParts) -> str:
    """A file-name-safe key: readable prefix + sha256 of all the parts (changes with any)."""
    canonical = json.dumps(asdict(parts), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:24]
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", parts.gpu_name).strip("-").lower() or "gpu"
    major, minor = parts.compute_capability
    return f"{gpu}-sm{major}{minor}-trt{parts.tensorrt_version}-{parts.precision}-{digest}"


class EngineCache:
    """A folder of `<key>.engine` files with `<key>.json` sidecars."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.engine"

    def load(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def store(self, key: str, plan: bytes, parts: EngineKeyParts, extra: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._atomic_write(self.path(key), plan)
        meta = {**asdict(parts), **extra, "key": key}
        self._atomic_write(self.folder / f"{key}.json", json.dumps(meta, indent=2).encode())
        return self.path(key)

    def entries(self) -> list[dict]:
        """The sidecars of every cached engine (unreadable ones are skipped and named)."""
        out = []
        for meta in sorted(self.folder.glob("*.json")):
            try:
                out.append(json.loads(meta.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                out.append({"key": meta.stem, "error": f"unreadable sidecar: {e}"})
        return out

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
