//! The variables the Worker reads, and what each holds. `projector deploy` renders them
//! from `projections.yaml`; the comments name the YAML key each comes from.

/// PostgreSQL URL (a secret in production): `postgres://user:password@host:port/db`.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Comma-separated projections to run; each is named after its compiled-in handler.
pub const PROJECTIONS: &str = "PROJECTIONS";
/// Hash partitions per projection (must agree with the store; default 1). `partitions`.
pub const PARTITIONS: &str = "PARTITIONS";
/// Events read per batch (default 1000). `batch_size`.
pub const BATCH_SIZE: &str = "BATCH_SIZE";
/// Wall-clock budget of one invocation, in milliseconds (default 30000). `config.timeout`.
pub const INVOCATION_BUDGET_MS: &str = "INVOCATION_BUDGET_MS";
/// Share of that budget an invocation spends on batches before it commits and stops
/// (0 < share <= 1; default 0.5): the rest is the margin for the last batch, releasing
/// leases and answering.
pub const BUDGET_SHARE: &str = "BUDGET_SHARE";
/// How long a partition may go without a claim or commit before `/health` reports
/// it, in seconds (default 180: three missed one-minute crons).
pub const HEALTH_INTERVAL_S: &str = "HEALTH_INTERVAL_S";
/// Comma-separated event types whose registered upcaster chains run (default none),
/// as `upcasting.event_types` in `projections.yaml`.
pub const UPCASTING: &str = "UPCASTING";
/// Bearer token that `POST /rebuild/<projection>` and `POST /wake` require (a secret).
pub const REBUILD_TOKEN: &str = "REBUILD_TOKEN";
/// Comma-separated event types the projections read (default all). `events.event_types`.
pub const EVENT_TYPES: &str = "EVENT_TYPES";
/// Comma-separated aggregate types the projections read (default all). `events.aggregate_types`.
pub const AGGREGATE_TYPES: &str = "AGGREGATE_TYPES";
/// Retries of an event that fails transiently (0 to 20, default 3). `retry.max_retries`.
pub const MAX_RETRIES: &str = "MAX_RETRIES";
/// First backoff ceiling in milliseconds (default 100). `retry.base`.
pub const RETRY_BASE_MS: &str = "RETRY_BASE_MS";
/// Largest backoff in milliseconds (default 10000, at least the base). `retry.cap`.
pub const RETRY_CAP_MS: &str = "RETRY_CAP_MS";
/// `park` (default) or `stop`. `on_failure`.
pub const ON_FAILURE: &str = "ON_FAILURE";
/// How long an event waits for missing versions, in milliseconds (default 30000).
/// `gap_timeout`.
pub const GAP_TIMEOUT_MS: &str = "GAP_TIMEOUT_MS";
/// Crashes in a row on one batch before its poison event is isolated (1 to 100,
/// default 3). `crash_limit`.
pub const CRASH_LIMIT: &str = "CRASH_LIMIT";
/// Memory of one invocation in bytes: how much a catch-up far behind folds before it
/// commits (default: one batch per commit). `config.memory`.
pub const MEMORY_BYTES: &str = "MEMORY_BYTES";
/// How long a lease lasts, in milliseconds; more than the invocation budget (default
/// twice the budget and 5 s). `lease_ttl`.
pub const LEASE_TTL_MS: &str = "LEASE_TTL_MS";
/// `http(s)://` URL that receives a JSON POST when an invocation dead-letters events or
/// a partition stops (default none: logged only). `alerts.webhook`.
pub const ALERT_WEBHOOK: &str = "ALERT_WEBHOOK";
/// The queue whose messages the wake queue gave up on (its `dead_letter_queue`); a batch
/// from it is handled as dead letters. Unset: every queue batch is a wake-up.
pub const DEAD_LETTER_QUEUE: &str = "DEAD_LETTER_QUEUE";
/// The binding of the wake queue's producer (`[[queues.producers]] binding`), through
/// which the Worker schedules its own retries and `POST /wake` wakes it.
pub const WAKE_BINDING: &str = "WAKE";
