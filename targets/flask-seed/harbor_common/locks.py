"""harbor_common/locks.py — the workspace lock-key derivation (phase3-activation-audit.txt §2.1).

v2 (the remediated design the audit certifies): one canonical derivation shared by Phase 2
(OAuth/connection) and Phase 3 (activation), so both serialise on the same advisory lock.
v1 (before the remediation): each phase derived its key in its own namespace — the split the
audit's v1 findings describe — so the two never wait for each other.
"""
import os

MODE = os.environ.get("SEED_MODE", "v2")


def workspace_lock_key(workspace_id, phase):
    """The text the advisory lock key is hashed from; `phase` is "oauth" or "activation"."""
    if MODE == "v1":
        return f"{phase}:{workspace_id}"
    return f"workspace:{workspace_id}"


def lock_workspace(cur, workspace_id, phase):
    """Takes the workspace's transaction-scoped advisory lock, waiting for any holder."""
    cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (workspace_lock_key(workspace_id, phase),),
    )
