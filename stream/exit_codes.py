"""Exit statuses of `medstream run` and of a stage process (documented in docs/reliability.md).

A stage process:
    0   finished (its source ended, or it was asked to stop)
    2   a permanent problem while running (e.g. a recorder that could not write what it was
        handed): not restarted, the run fails
    78  could not start because of its setup (bind, connect, key files, a source, model or sink
        that does not open; EX_CONFIG): not restarted, the run fails with that one line
    any other status or a signal: a crash, restarted with backoff up to `restart.max_restarts`

`medstream run` (and `validate` for EXIT_CONFIG / EXIT_BUSY):
    0   the run delivered frames and no stage failed
    1   a stage was given up (kept crashing) or failed while running or stopping
    2   a config error, found before any stage started (also argparse usage errors)
    3   the run ended without delivering a single frame
    75  the run dir is held by another run, or an endpoint it binds is in use (EX_TEMPFAIL)
    78  a stage could not start because of its setup (EX_CONFIG)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STAGE_FATAL = 2
EXIT_NO_FRAMES = 3
EXIT_BUSY = 75
EXIT_SETUP = 78

RUN_EPILOG = f"""exit status:
  {EXIT_OK:<3} the run delivered frames and no stage failed
  {EXIT_FAILED:<3} a stage was given up (kept crashing) or failed, or the report was not written
  {EXIT_CONFIG:<3} config error or a start check failed (nothing was started)
  {EXIT_NO_FRAMES:<3} the run delivered no frame
  {EXIT_BUSY:<3} another run holds the run dir, or an endpoint to bind is in use
  {EXIT_SETUP:<3} a stage could not start because of its setup (bind, connect, keys, files)
see docs/reliability.md"""
