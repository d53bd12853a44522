"""Use case: the health of a fleet of policies, as `status` prints it and /health serves it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import clock, health
from ..policy import InvalidPolicy, Policy
from .evidence import EvidenceJobs


def fleet_status(
    app: EvidenceJobs, policies: Sequence[Policy], invalid: Sequence[InvalidPolicy] = ()
) -> dict[str, Any]:
    """{"status", "checked_at", "policies": {name: status}, "components"}: the overall status is the
    worst of the policies' (an invalid policy file makes it unhealthy); each component shows the
    first policy's problem with it, or "ok"."""
    per = {p.name: app.status(p) for p in policies}
    overall = health.worst(*(r["status"] for r in per.values()), *(["unhealthy"] if invalid else []))
    components: dict[str, str] = {}
    for r in per.values():
        for k, v in r["components"].items():
            if components.get(k, "ok") == "ok":
                components[k] = v
    return {"status": overall, "checked_at": clock.iso(clock.utcnow()), "policies": per, "components": components}
