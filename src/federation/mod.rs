//! Outbound delivery: one worker per peer reads that peer's outbox (urgent
//! first, then in order), sends batches over mutual TLS, checks the signed
//! receipts, and stores them; failures back off exponentially with jitter,
//! capped, and are retried forever. Handlers never send inline: they commit
//! to the outbox and wake the worker. Workers claim rows with a lease
//! before sending them (`Store::claim_outbox`), so replicas of one node on
//! one PostgreSQL database share the outbox; `wakeups` wakes a worker for
//! work another replica committed.

pub mod backoff;
pub mod channel;
pub mod exchange;
pub mod probe;
pub mod wakeups;
pub mod witness;
pub mod worker;
