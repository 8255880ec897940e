"""One-way arrows between the packages: `engines` imports nothing from `stream` or `tools`, and
`stream` nothing from `tools` (read from the source with ast, so lazy imports count too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(path: Path) -> set[str]:
    """Top-level package names `path` imports, anywhere in the file (relative imports skipped:
    they stay inside the file's own package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def offenders(package: str, forbidden: set[str]) -> list[str]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    return [
        f"{p.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
        for p in files
        if (bad := imported_packages(p) & forbidden)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"), [("engines", {"stream", "tools"}), ("stream", {"tools"})]
)
def test_imports_point_one_way(package: str, forbidden: set[str]) -> None:
    assert offenders(package, forbidden) == []


def test_the_check_sees_lazy_and_dotted_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from stream.spec import bounded\n    import tools.bench\n")
    assert imported_packages(src) == {"os", "stream", "tools"}


def test_loading_a_config_loads_no_inference_runtime() -> None:
    """`engines` loads its backends on first use: the config loader (and so every stage that
    runs no model) does not pay for ONNX Runtime."""
    code = "import sys, stream.config, stream.spec; print('onnxruntime' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
