"""The supervisor: starts every stage of a graph as its own process, restarts crashed ones,
stops them in order, and collects their stats into the run report.

Stop order: sources get SIGTERM first and send end-of-stream, which every stage forwards before
it exits, so frames in flight are delivered (a stage's lossless links hand on the frames still
queued before it exits, for up to `LOSSLESS_LINGER_S`). Stages still running once no frame has
moved for `DRAIN_S` get SIGTERM, then SIGKILL after `TERM_S`. Frames count as moving only once
every source here has stopped producing (exited, or sent its final snapshot): a lossless backlog,
a recording's tail, drains however long it takes while it moves. While a source produces, or with
no source here, the drain is `DRAIN_S` from the stop. Children die with the supervisor
(PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from .config import GrabSpec, InferSpec, PipelineConfig, RenderSpec, StageSpec, consumer_notes
from .exit_codes import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_NO_FRAMES,
    EXIT_OK,
    EXIT_SETUP,
    EXIT_STAGE_FATAL,
)
from .frozen_config import write_frozen
from .interrupts import interrupted_before
from .preflight import busy_endpoints
from .report import build_report
from .run_lock import RunDirBusy, RunLock
from .security import SUPERVISOR, Security, startup_notice
from .snapshot import MAX_SNAPSHOT_BYTES, parse_snapshot
from .spec import ConfigError
from .stages.base import stage_logger
from .stats import STATS_LINK
from .stats_relay import StatsRelay

DRAIN_S = 4.0  # the drain ends after this long with no frame moving (see the module doc)
TERM_S = 3.0
EXIT_FATAL = EXIT_STAGE_FATAL  # a permanent problem while running: not restarted
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class StartError(RuntimeError):
    """The run cannot start (nothing was started); `status` is the exit status it asks for."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class Child:
    spec: StageSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    start_at: float = 0.0
    done: bool = False  # exited for good (finished, failed, or stopped)


def start_order(cfg: PipelineConfig) -> list[StageSpec]:
    """Consumers first, so every producer finds its consumers subscribed when it starts."""
    rank = {RenderSpec: 0, InferSpec: 1, GrabSpec: 2}
    return sorted(cfg.stages, key=lambda s: rank[type(s)])


class Supervisor:
    """Runs the stages of `cfg` on this host (all, or the ids in `stages`: the others run
    elsewhere with `medstream stage` and push their stats to this supervisor)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        config_path: str,
        duration_s: float | None = None,
        stages: list[str] | None = None,
    ):
        self.cfg = cfg
        self.config_path = str(Path(config_path).resolve())
        self.duration_s = duration_s
        self.log = stage_logger("supervisor")
        local = [cfg.stage(sid).id for sid in stages] if stages else [s.id for s in cfg.stages]
        if not local:
            raise ConfigError("--stages: name at least one stage to run here")
        self.children = {s.id: Child(s) for s in start_order(cfg) if s.id in local}
        self.stage_ids = {s.id for s in cfg.stages}  # stats accepted from remote stages too
        self.snapshots: dict[tuple[str, int], dict[str, Any]] = {}
        self.malformed_stats = 0
        self.security_counts: dict[str, int] = {}
        self.stop_reason = ""
        self.exit_code = EXIT_OK
        self.setup_failed: list[str] = []  # stages that exited EXIT_SETUP
        self.frozen_path = ""
        self.signals = 0
        self.stopping_since: float | None = None
        self.quiet_since = 0.0  # the drain's clock: the stop, or the last frame seen moving
        self.drain_extends = False  # whether moving frames restart that clock
        self.moved = 0  # the stages' frames in + out + dropped when last looked at
        self.drain_said = 0.0  # when the log last said the drain goes on
        self.term_at: float | None = None
        self.kill_sent = False

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        env["MEDSTREAM_SUPERVISOR_PID"] = str(os.getpid())
        env.setdefault("PYTHONUNBUFFERED", "1")
        # every start, restarts included, loads the frozen copy validated at start
        cmd = [sys.executable, "-m", "stream.cli", "stage", self.frozen_path, child.spec.id]
        child.proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        self.log.info("started %s (%s) pid %d", child.spec.id, child.spec.kind, child.proc.pid)
        if child.done:  # a signal during Popen: the stop began while it had no process yet
            child.done = False  # it runs now: watched and stopped as `begin_stop` stops the rest
            if isinstance(child.spec, GrabSpec):
                self._signal(child, signal.SIGTERM)

    def _signal(self, child: Child, sig: int) -> None:
        if child.proc is not None and child.proc.poll() is None:
            with suppress(ProcessLookupError):
                child.proc.send_signal(sig)

    def _on_exit(self, child: Child, rc: int) -> None:
        sid = child.spec.id
        child.proc = None
        if rc == EXIT_SETUP:
            self.setup_failed.append(sid)
            why = f"could not start (exit {rc}: its setup failed, see its error above)"
            self._give_up(child, why, f"stage {sid} could not start")
            return
        if self.stopping_since is not None:
            child.done = True
            # SIGINT: a Ctrl-C that reached a stage still being started (between fork and
            # setsid it is in the terminal's process group); any other failure while stopping
            # (a sink that lost frames it had to keep) fails the run
            if rc not in (0, -signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT):
                self.exit_code = EXIT_FAILED
                self.log.error("%s failed while stopping (exit %d)", sid, rc)
            return
        if rc == 0:
            child.done = True
            self.log.info("%s finished", sid)
            if isinstance(child.spec, GrabSpec):
                self.begin_stop(f"source {sid} ended")
            return
        if rc == EXIT_FATAL:
            self._give_up(child, f"failed (exit {rc})", f"stage {sid} failed")
            return
        how = f"signal {-rc}" if rc < 0 else f"exit {rc}"
        if child.restarts >= self.cfg.restart.max_restarts:
            crashed = f"crashed ({how}) {child.restarts + 1} times"
            self._give_up(child, crashed, f"stage {sid} kept crashing", "giving up")
            return
        delay = min(self.cfg.restart.backoff_s * 2**child.restarts, self.cfg.restart.backoff_max_s)
        child.restarts += 1
        child.start_at = time.monotonic() + delay
        self.log.warning("%s crashed (%s); restart %d in %.1f s", sid, how, child.restarts, delay)

    def _give_up(self, child: Child, why: str, stop: str, then: str = "not restarting it") -> None:
        """`child` is done for good and fails the run: log `why`, then `stop` without a drain."""
        child.done = True
        self.exit_code = EXIT_FAILED
        self.log.error("%s %s; %s", child.spec.id, why, then)
        self.begin_stop(stop, drain=False)

    # -- stopping --------------------------------------------------------------------------
    def begin_stop(self, reason: str, drain: bool = True) -> None:
        """Stop the graph: sources first, then (after the drain) everything else.

        `drain=False` (a stage failed for good: no end-of-stream will come) skips the drain."""
        if self.stopping_since is not None:
            return
        self.stop_reason = reason
        self.stopping_since = time.monotonic()
        self.quiet_since = self.stopping_since - (0.0 if drain else DRAIN_S + 0.001)
        self.drain_extends = drain
        self.moved = self._frames_moved()
        self.log.info("stopping: %s", reason)
        for child in self.children.values():
            if isinstance(child.spec, GrabSpec):
                self._signal(child, signal.SIGTERM)
            if child.proc is None:
                child.done = True

    def _frames_moved(self) -> int:
        """Frames in, out and dropped, summed over the stages' latest snapshots."""
        return sum(
            snap["counters"].get("in", 0) + snap["counters"].get("out", 0) + sum(snap["drops"].values())
            for snap in self.snapshots.values()
        )

    def _sources_ended(self) -> bool:
        """Whether this host runs sources and each has exited or sent its final snapshot (it
        produces no more frames; its lossless links may still be handing queued ones on)."""
        sources = [c for c in self.children.values() if isinstance(c.spec, GrabSpec)]
        return bool(sources) and all(
            c.proc is None or self.snapshots.get((c.spec.id, c.proc.pid), {}).get("final")
            for c in sources
        )

    def _advance_stop(self) -> None:
        assert self.stopping_since is not None
        now = time.monotonic()
        if self.drain_extends and self.term_at is None and self._sources_ended():
            moved = self._frames_moved()
            if moved != self.moved:
                self.moved = moved
                self.quiet_since = now
                if now - self.stopping_since > DRAIN_S and now >= self.drain_said + DRAIN_S:
                    self.drain_said = now  # said when the drain outlasts DRAIN_S, then every DRAIN_S
                    self.log.info(
                        "draining: frames still moving %.0f s after the stop (signal again to stop now)",
                        now - self.stopping_since,
                    )
        if now - self.quiet_since > DRAIN_S and self.term_at is None:
            self.term_at = now
            for child in self.children.values():
                self._signal(child, signal.SIGTERM)
        if self.term_at is not None and now - self.term_at > TERM_S and not self.kill_sent:
            self.kill_sent = True
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is None:
                    self.log.warning("%s did not stop; killing it", child.spec.id)
                self._signal(child, signal.SIGKILL)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            self.begin_stop(f"signal {signal.Signals(signum).name}")
        else:  # asked twice: do not wait for the drain
            self.quiet_since = time.monotonic() - DRAIN_S - 0.001
            self.drain_extends = False

    # -- stats -----------------------------------------------------------------------------
    def _collect(self, sock: zmq.Socket, timeout_ms: int) -> None:
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                body = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                snap = parse_snapshot(body, self.stage_ids)
            except ValueError as e:
                self.malformed_stats += 1
                if self.malformed_stats == 1:
                    self.log.warning("ignored a malformed stats message (%s); counting more", e)
                continue
            self.snapshots[(snap["stage"], snap["pid"])] = snap

    def live_snapshots(self) -> list[dict[str, Any]]:
        return list(self.snapshots.values())

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the graph until the duration, a signal, or the sources end. Returns the report.

        Raises `StartError` before starting anything if another run holds the run dir, an
        endpoint to bind is in use, or the stats channel cannot be bound."""
        config = Path(self.cfg.source_file or self.config_path).resolve()
        lock = RunLock(self.cfg.run_dir, str(config))
        try:
            lock.acquire()
        except RunDirBusy as e:
            raise StartError(str(e), EXIT_BUSY) from None
        except OSError as e:
            raise StartError(f"run_dir: cannot use {self.cfg.run_dir}: {e}", EXIT_SETUP) from None
        try:
            return self._run_locked(lock)
        finally:
            lock.release()

    def _run_locked(self, lock: RunLock) -> dict[str, Any]:
        self._check_start(lock)
        for note in consumer_notes(self.cfg):
            self.log.warning(note)
        ctx = zmq.Context()
        security = Security(self.cfg, SUPERVISOR, ctx, self.log) if self.cfg.security.curve else None
        stats = self._bind_stats(ctx, security)
        relay = self._open_relay()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if interrupted_before():  # a Ctrl-C that Python dropped (stream.interrupts)
            self._on_signal(signal.SIGINT, None)
        t0 = time.monotonic()
        try:
            self._supervise(stats, relay, t0)
        finally:
            for child in self.children.values():
                self._signal(child, signal.SIGKILL)
                if child.proc is not None:
                    child.proc.wait()
            for s, handler in old.items():
                signal.signal(s, handler)
            stats.close()
            if security is not None:
                self.security_counts = dict(security.take_counts())
                security.close()
            ctx.term()
            if relay is not None and sys.exc_info()[0] is not None:
                relay.close()
        return self._finish(time.monotonic() - t0, relay)

    def _check_start(self, lock: RunLock) -> None:
        """Before anything starts: no endpoint to bind in use, the frozen config written."""
        if lock.previous.get("pid"):
            self.log.info(
                "run_dir %s: took over the lock of a run that is gone (pid %s)",
                self.cfg.run_dir,
                lock.previous["pid"],
            )
        busy = busy_endpoints(self.cfg, list(self.children))
        if busy:
            raise StartError(busy[0], EXIT_BUSY)
        try:
            self.frozen_path = str(write_frozen(self.cfg).resolve())
        except OSError as e:
            raise StartError(f"run_dir: cannot write the frozen config: {e}", EXIT_SETUP) from None
        startup_notice(self.cfg, self.log)

    def _bind_stats(self, ctx: zmq.Context, security: Security | None) -> zmq.Socket:
        """The stats channel the stages push to, bound; on failure `security` and `ctx` are
        closed too (a StartError where the endpoint cannot be bound)."""
        stats = ctx.socket(zmq.PULL)
        stats.setsockopt(zmq.LINGER, 0)
        stats.setsockopt(zmq.MAXMSGSIZE, MAX_SNAPSHOT_BYTES)
        try:
            if security is not None:
                security.secure(stats, STATS_LINK, binds=True)
            stats.bind(self.cfg.stats_endpoint)
        except BaseException as e:
            stats.close()
            if security is not None:
                security.close()
            ctx.term()
            if isinstance(e, zmq.ZMQError):
                raise StartError(
                    f"stats_endpoint: cannot bind {self.cfg.stats_endpoint}: {e}", EXIT_SETUP
                ) from None
            raise
        return stats

    def _supervise(self, stats: zmq.Socket, relay: StatsRelay | None, t0: float) -> None:
        """Start the stages and watch them until every one is done; then wait up to 1 s for
        their final snapshots (pushed as each stage exits)."""
        self._start_all()
        while not all(c.done for c in self.children.values()):
            self._collect(stats, 50)
            now = time.monotonic()
            self._poll_children(now)
            if self.stopping_since is None and self.duration_s and now - t0 >= self.duration_s:
                self.begin_stop(f"duration {self.duration_s:g} s reached")
            if self.stopping_since is not None:
                self._advance_stop()
            if relay is not None:
                relay.maybe_publish(self.live_snapshots())
        if not self.stop_reason:
            self.stop_reason = "every stage here finished"
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not self._all_final():
            self._collect(stats, 50)

    def _start_all(self) -> None:
        """Start the stages in start order; once a stop is asked for (a signal while they
        start), the rest are not started (`begin_stop` marks them done)."""
        for child in self.children.values():
            if not child.done:
                self._spawn(child)

    def _poll_children(self, now: float) -> None:
        """Handle the stages that exited; start those whose restart is due (unless stopping)."""
        for child in self.children.values():
            if child.proc is not None and (rc := child.proc.poll()) is not None:
                self._on_exit(child, rc)
            elif child.proc is None and not child.done and now >= child.start_at:
                if self.stopping_since is None:
                    self._spawn(child)
                else:
                    child.done = True

    def _finish(self, duration: float, relay: StatsRelay | None) -> dict[str, Any]:
        """The run report with the supervisor's own figures; the relay's final message."""
        restarts = {sid: c.restarts for sid, c in self.children.items()}
        report = build_report(self.cfg, self.live_snapshots(), duration, restarts, self.stop_reason)
        self.exit_code = self._final_status(report)
        report["supervisor"] = {
            "stages_here": list(self.children),
            "malformed_stats": self.malformed_stats,
            "security": self.security_counts,
            "setup_failed": self.setup_failed,
            "exit_status": self.exit_code,
        }
        if relay is not None:  # the final message: last snapshots and the report, for tools
            relay.publish(self.live_snapshots(), True, self.stop_reason, report)
            relay.close()
        return report

    def _final_status(self, report: dict[str, Any]) -> int:
        """The run's exit status (see stream.exit_codes)."""
        if self.setup_failed:
            return EXIT_SETUP
        if self.exit_code != EXIT_OK:
            return self.exit_code
        if not report.get("frames", {}).get("delivered"):
            self.log.error("the run delivered no frame")
            return EXIT_NO_FRAMES
        return EXIT_OK

    def _open_relay(self) -> StatsRelay | None:
        """The stats channel for tools (`stats_pub`), if configured; a run goes on without it
        when its endpoint cannot be bound (tools then cannot tap this run)."""
        if not self.cfg.stats_pub:
            return None
        stages = [{"id": s.id, "kind": s.kind} for s in self.cfg.stages]
        try:
            return StatsRelay(self.cfg.stats_pub, self.cfg.name, self.cfg.budget_ms, stages)
        except (zmq.ZMQError, OSError) as e:
            self.log.warning("stats_pub %s: cannot bind (%s); tools cannot tap this run", self.cfg.stats_pub, e)
            return None

    def _all_final(self) -> bool:
        latest: dict[str, dict[str, Any]] = {}
        for (sid, _pid), snap in self.snapshots.items():
            if sid not in latest or snap["started_ns"] > latest[sid]["started_ns"]:
                latest[sid] = snap
        return all(sid in latest and latest[sid].get("final") for sid in self.children)


def become_supervised_child() -> None:
    """In a stage started by the supervisor: die with it (Linux), and exit if it is gone."""
    parent = os.environ.get("MEDSTREAM_SUPERVISOR_PID")
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):
        logging.getLogger("medstream").error("supervisor %s is gone; exiting", parent)
        sys.exit(1)
