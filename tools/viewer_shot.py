"""Screenshot a running viewer page after it has run for a while, in real time.

    python -m tools.viewer_shot http://127.0.0.1:8080/ --seconds 5 --out docs/img/viewer.png

Headless Chromium (Debian `chromium`) over the DevTools pipe (tools/browser_cdp.py): unlike
`--screenshot` with a virtual time budget, the page runs on the wall clock, so the display
latency it reports to the viewer (`POST /shown`) is real.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tools.browser_cdp import Browser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.viewer_shot", description=__doc__)
    parser.add_argument("url", help="the viewer's page, e.g. http://127.0.0.1:8080/")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the page runs first")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=700)
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("viewer_shot: chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile, Browser(
        chromium, Path(profile), args.width, args.height
    ) as browser:
        browser.open(args.url)
        time.sleep(args.seconds)
        browser.screenshot(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
