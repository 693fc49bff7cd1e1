//! What the reports organise results by: the audit areas and the threat model's threat matrix,
//! as the seed documents name them.

/// An audit area: its key in scenario files, its title, and what verifying it means.
pub struct Area {
    /// The `area` value scenarios use.
    pub key: &'static str,
    /// The section title.
    pub title: &'static str,
    /// What the scenarios of this area establish when they pass.
    pub claim: &'static str,
}

/// The areas, in report order.
pub const AREAS: &[Area] = &[
    Area {
        key: "concurrency",
        title: "Concurrency",
        claim: "Every path that decides on a workspace's connection or activation state is serialised by one advisory lock per workspace, backed by row locks; blocking is proven from pg_locks and pg_blocking_pids.",
    },
    Area {
        key: "tenant-isolation",
        title: "Tenant isolation",
        claim: "Identity is verified, membership is checked in the application, locks and rows are scoped by workspace and tenant, and row-level security hides foreign rows even from unfiltered queries.",
    },
    Area {
        key: "transaction-discipline",
        title: "Transaction discipline",
        claim: "Preconditions are checked inside the locked transaction; on failure the whole transaction is rolled back and the rollback has completed before the error response is written.",
    },
    Area {
        key: "idempotency",
        title: "Idempotency",
        claim: "UNIQUE(workspace_id) is the source of truth: any number of concurrent activations create one row and exactly one first caller.",
    },
    Area {
        key: "oauth-state",
        title: "OAuth state",
        claim: "States are random, bound to tenant, user and provider, stored hashed in Redis with a ten-minute TTL, consumed atomically exactly once, and shared by every replica.",
    },
    Area {
        key: "token-storage",
        title: "Token storage",
        claim: "Tokens are stored only as AES-256-GCM ciphertext bound to their row, tenant, provider and field; no plaintext token reaches the database, Redis, responses or logs.",
    },
    Area {
        key: "rate-limiting",
        title: "Rate limiting",
        claim: "Authorize and callback are limited per tenant and per address across replicas, failed state look-ups are counted, and the limit recovers.",
    },
    Area {
        key: "leakage",
        title: "Leakage",
        claim: "Connection and document responses carry metadata only.",
    },
];

/// A row of the threat model's threat matrix.
pub struct Threat {
    /// The threat's name, as scenario files cite it in `threats`.
    pub name: &'static str,
    /// Impact, likelihood, detectability and priority, as the threat model rates them.
    pub ratings: [&'static str; 4],
}

/// The threat matrix of `connector-isolation-threat-model.txt`.
pub const THREATS: &[Threat] = &[
    Threat {
        name: "Plaintext Token Storage",
        ratings: ["CRITICAL", "HIGH", "LOW", "CRITICAL"],
    },
    Threat {
        name: "DB Breach → Token Leak",
        ratings: ["CRITICAL", "MEDIUM", "LOW", "CRITICAL"],
    },
    Threat {
        name: "CSRF via State Confusion",
        ratings: ["CRITICAL", "HIGH", "MEDIUM", "CRITICAL"],
    },
    Threat {
        name: "State Reuse Attack",
        ratings: ["HIGH", "MEDIUM", "MEDIUM", "HIGH"],
    },
    Threat {
        name: "Race Condition Leak",
        ratings: ["MEDIUM", "MEDIUM", "LOW", "MEDIUM"],
    },
    Threat {
        name: "Token Expiry Failure",
        ratings: ["MEDIUM", "HIGH", "HIGH", "MEDIUM"],
    },
    Threat {
        name: "Callback Rate Limiting",
        ratings: ["LOW", "MEDIUM", "MEDIUM", "MEDIUM"],
    },
    Threat {
        name: "Settings Info Leakage",
        ratings: ["LOW", "MEDIUM", "LOW", "LOW"],
    },
];
