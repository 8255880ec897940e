"""Open the stats channel named on a tool's command line: a pipeline config or an endpoint."""

from __future__ import annotations

import zmq

from stream.bundled_configs import resolve_config
from stream.config import load_config_file
from stream.spec import ConfigError
from stream.stats_relay import SnapshotCollector, StatsSubscriber

ENDPOINT_PREFIXES = ("tcp://", "ipc://", "inproc://")


def open_stats(
    ctx: zmq.Context, target: str, collect: bool
) -> tuple[StatsSubscriber | SnapshotCollector, str]:
    """A receiver of stats messages for `target` and the endpoint it uses.

    `target` is a pipeline config (its `stats_pub`, or with `collect` its `stats_endpoint`) or
    an endpoint. `collect` binds the endpoint and gathers the stages' own pushes: for stages run
    with `medstream stage` and no supervisor.
    """
    name, budget = "", 0.0
    if target.startswith(ENDPOINT_PREFIXES):
        endpoint = target
    else:
        path = resolve_config(target)
        if not path.is_file():
            raise ConfigError(f"{target}: neither a config file nor a tcp:// or ipc:// endpoint")
        cfg = load_config_file(path)
        name, budget = cfg.name, cfg.budget_ms
        endpoint = cfg.stats_endpoint if collect else cfg.stats_pub
        if not endpoint:
            key = "stats_endpoint" if collect else "stats_pub"
            raise ConfigError(f"{target}: {key} is '' (off); nothing to tap")
    if collect:
        return SnapshotCollector(ctx, endpoint, name, budget), endpoint
    return StatsSubscriber(ctx, endpoint), endpoint
