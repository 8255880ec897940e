"""How many lost frames a sequence gap may claim on one link (docs/protocol.md section 5.1)."""

from __future__ import annotations

from .clock import Clock

MAX_LINK_FPS = 10_000  # most frames per second a link's senders are believed able to send
GAP_CREDIT_S = 10.0  # a gap may spend up to this many seconds of MAX_LINK_FPS at once


class GapBudget:
    """How many frames a link's senders could have sent that never arrived: credit accrues at
    MAX_LINK_FPS per second of the receiver's clock, up to GAP_CREDIT_S seconds' worth, and
    each gap counted spends it. A `link_seq` or `seq` jump beyond the credit is implausible:
    the message is refused (`invalid:implausible_gap`), never counted as millions of drops."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.credit = float(MAX_LINK_FPS)  # one second's worth to start with
        self.t_ns = clock.now_ns()

    def spend(self, gap: int) -> bool:
        now = self.clock.now_ns()
        cap = MAX_LINK_FPS * GAP_CREDIT_S
        self.credit = min(cap, self.credit + max(0, now - self.t_ns) / 1e9 * MAX_LINK_FPS)
        self.t_ns = now
        if gap > self.credit:
            return False
        self.credit -= gap
        return True


__all__ = ["GAP_CREDIT_S", "MAX_LINK_FPS", "GapBudget"]
