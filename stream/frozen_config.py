"""The frozen copy of a run's validated config, in its run dir.

The supervisor writes the document it validated at start (read-only) and starts every stage,
restarts included, from that copy: a YAML file edited during the run never reaches a stage.
`stream.config.load_config_file` recognises a frozen copy and validates it again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from .config import FROZEN_KEY, PipelineConfig

FROZEN_NAME = "config.frozen.yaml"


def write_frozen(cfg: PipelineConfig) -> Path:
    """Write `cfg`'s validated document to `run_dir/config.frozen.yaml` (mode 0444)."""
    path = Path(cfg.run_dir) / FROZEN_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "source_file": str(Path(cfg.source_file).resolve()) if cfg.source_file else "",
        "written_by_pid": os.getpid(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = (
        "# The config this run validated at start; its stages load this copy, never the\n"
        "# user's file. Written by the supervisor, read-only: edits here have no effect.\n"
        + yaml.safe_dump({FROZEN_KEY: meta, "config": cfg.document}, sort_keys=False)
    )
    tmp = path.with_name(f".{FROZEN_NAME}.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o444)
    os.replace(tmp, path)
    return path
