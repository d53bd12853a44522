"""Heartbeats on the source (pitr.heartbeat_interval): one committed row every interval, so an idle
server still writes WAL (archive_timeout then switches segments) and a PITR drill always finds a
recent commit to measure its recovery point from (docs/pitr.md, "Heartbeat").

The row lives in the `drtool` schema of the policy's database, created on the first beat only when
the interval is set: `drtool.heartbeat (id int PRIMARY KEY CHECK (id = 1), ts timestamptz)`, one
row updated in place (no growth). `drtool wal daemon` calls `Heartbeat.tick` from its loop;
`drtool wal heartbeat` writes one beat (cron, or a host without the daemon)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import clock, postgres
from ..errors import DrtoolError, UsageError
from ..policy import Policy
from .context import Context


def beat(ctx: Context, policy: Policy) -> dict[str, Any]:
    """Write one heartbeat now; DatabaseError naming the database when it cannot."""
    if not policy.pitr.enabled or not policy.pitr.heartbeat_interval:
        raise UsageError(f"{policy.source}: heartbeats need [pitr] enabled = true and heartbeat_interval set")
    postgres.write_heartbeat(ctx.source(policy))
    return {"policy": policy.name, "table": postgres.HEARTBEAT_TABLE, "at": clock.iso(clock.utcnow())}


@dataclass
class Heartbeat:
    """For the daemon's loop: `tick()` each pass writes a beat when the interval has passed. A
    failed beat is warned about once per failure run and never stops the loop (archiving matters
    more than the heartbeat)."""

    ctx: Context
    policy: Policy
    last: float | None = None
    failing: bool = False

    def tick(self) -> bool:
        interval = self.policy.pitr.heartbeat_interval
        if not self.policy.pitr.enabled or not interval:
            return False
        now = time.monotonic()
        if self.last is not None and now - self.last < interval:
            return False
        self.last = now
        try:
            postgres.write_heartbeat(self.ctx.source(self.policy))
        except DrtoolError as e:
            if not self.failing:
                self.ctx.warn(f"heartbeat of policy {self.policy.name}: {e}")
            self.failing = True
            return False
        self.failing = False
        return True
