"""Use case: make a policy's catalog index anew from its manifests (drtool catalog rebuild)."""

from __future__ import annotations

from typing import Any

from .. import catalog_index
from ..policy import Policy
from .context import UseCase


class IndexJobs(UseCase):
    def rebuild_index(self, policy: Policy, target: str | None = None) -> dict[str, Any]:
        """Read every manifest, check record and drill record of the policy in a storage target and
        write `<policy>/index.json` (signed with [signing].key_file). Under the policy lock, so no
        prune deletes meanwhile; a commit meanwhile makes the rebuild start again."""
        ctx = self.ctx
        store = ctx.store(policy, target=target)
        with ctx.locked(policy, store, "catalog-rebuild"):
            index = catalog_index.rebuild_and_write(store, policy.name, ctx.verifier(policy), ctx.signer(policy),
                                                    ctx.warn)  # fmt: skip
        return {
            "policy": policy.name,
            "target": target or "primary",
            "index": f"{store.url}/{catalog_index.index_key(policy.name)}",
            "backups": len(index.backups),
            "problems": [p["reason"] for p in index.problems.values()],
            "origin_checked": index.origin_checked,
        }
