//! Where a scenario's cost goes, per delivered report: the process's CPU
//! time split by thread group (from each thread's `/proc/self/task/*/stat`),
//! context switches (`getrusage`), bytes written to storage
//! (`/proc/self/io`) and heap allocations (when the binary counts them,
//! `alloc_count`). Two samples, one before and one after the measured
//! window, and the number of reports delivered in between, give the
//! breakdown the bench prints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Thread groups, by the thread's name (the kernel keeps its first 15
/// bytes): the prefix and what the bench calls it.
const GROUPS: [(&str, &str); 4] = [
    ("tokio-", "async runtime and blocking pool (tokio)"),
    ("sqlx-sqlite-wor", "SQLite statements (sqlx workers)"),
    ("alertrelay-bulk", "bulk signatures (background pool)"),
    ("alertrelay", "main thread"),
];

/// Counts heap allocations when the binary installs it as its global
/// allocator and the bench switches counting on; otherwise a plain
/// pass-through to mimalloc (one relaxed load per call).
/// Each thread counts on a cache line of its own, so counting costs no
/// contention between cores.
#[allow(unsafe_code)]
pub mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout};

    use mimalloc::MiMalloc as Inner;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    const SHARDS: usize = 32;

    #[repr(align(128))]
    struct Shard(AtomicU64);

    static ON: AtomicBool = AtomicBool::new(false);
    static COUNTS: [Shard; SHARDS] = [const { Shard(AtomicU64::new(0)) }; SHARDS];
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    fn count() {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        let i = SHARD
            .try_with(|s| {
                if s.get() == usize::MAX {
                    s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
                }
                s.get()
            })
            .unwrap_or(0);
        COUNTS[i].0.fetch_add(1, Ordering::Relaxed);
    }

    pub struct Counting;

    // SAFETY: every call is forwarded unchanged to mimalloc; counting
    // allocates nothing.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { Inner.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { Inner.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            unsafe { Inner.realloc(ptr, layout, new_size) }
        }
    }

    /// Switches counting on: `Some(count so far)` when this binary's
    /// allocator is `Counting` (the count moves), `None` otherwise.
    pub fn start() -> Option<u64> {
        ON.store(true, Ordering::Relaxed);
        if !INSTALLED.load(Ordering::Relaxed) {
            // An allocation through the global allocator tells.
            let before = now();
            std::hint::black_box(Box::new(0u64));
            INSTALLED.store(now() > before, Ordering::Relaxed);
        }
        INSTALLED.load(Ordering::Relaxed).then(now)
    }

    fn now() -> u64 {
        COUNTS.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// One sample of the whole process.
#[derive(Debug, Clone)]
pub struct Sample {
    cpu: Duration,
    /// CPU of the threads alive now, by group.
    groups: BTreeMap<&'static str, Duration>,
    context_switches: u64,
    written_bytes: u64,
    statements: u64,
    allocations: Option<u64>,
}

impl Sample {
    pub fn now() -> Sample {
        Sample {
            cpu: super::cpu_time(),
            groups: thread_groups(),
            context_switches: context_switches(),
            written_bytes: written_bytes(),
            statements: crate::store::statements_run(),
            allocations: alloc_count::start(),
        }
    }
}

/// Per delivered report, between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub reports: u64,
    /// The whole process's CPU, µs per report.
    pub cpu_us: f64,
    /// (thread group, µs per report), largest first; threads that ended
    /// within the window are `threads that ended`.
    pub cpu_by_group: Vec<(String, f64)>,
    pub context_switches: f64,
    /// Bytes the process caused to be written to storage (WAL, database
    /// pages, checkpoints), per report.
    pub written_bytes: f64,
    /// SQL statements the stores ran (BEGIN and COMMIT included), per
    /// report: each one a hand-off to the database's thread or server.
    pub statements: f64,
    /// Heap allocations (and reallocations) per report, when counted.
    pub allocations: Option<f64>,
}

impl Breakdown {
    pub fn between(a: &Sample, b: &Sample, reports: u64) -> Breakdown {
        let n = reports.max(1) as f64;
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
        let mut by_group: Vec<(String, f64)> = Vec::new();
        let mut counted = Duration::ZERO;
        for (group, end) in &b.groups {
            let spent = end.saturating_sub(a.groups.get(group).copied().unwrap_or_default());
            counted += spent;
            by_group.push(((*group).to_owned(), us(spent)));
        }
        let total = b.cpu.saturating_sub(a.cpu);
        by_group.push((
            "threads that ended".into(),
            us(total.saturating_sub(counted)),
        ));
        by_group.retain(|(_, v)| *v >= 0.5);
        by_group.sort_by(|x, y| y.1.total_cmp(&x.1));
        Breakdown {
            reports,
            cpu_us: us(total),
            cpu_by_group: by_group,
            context_switches: b.context_switches.saturating_sub(a.context_switches) as f64 / n,
            written_bytes: b.written_bytes.saturating_sub(a.written_bytes) as f64 / n,
            statements: b.statements.saturating_sub(a.statements) as f64 / n,
            allocations: a
                .allocations
                .zip(b.allocations)
                .map(|(x, y)| y.saturating_sub(x) as f64 / n),
        }
    }

    pub fn print(&self) {
        println!(
            "  per delivered report ({} reports): CPU {:.0} µs, {:.2} SQL statements, {:.1} context switches, {:.0} bytes written{}",
            self.reports,
            self.cpu_us,
            self.statements,
            self.context_switches,
            self.written_bytes,
            self.allocations
                .map_or(String::new(), |a| format!(", {a:.0} allocations"))
        );
        for (group, us) in &self.cpu_by_group {
            println!("    {group:<44} {us:>7.0} µs");
        }
    }
}

fn group_of(name: &str) -> &'static str {
    GROUPS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or("other threads", |(_, group)| group)
}

/// CPU time of each live thread of this process, summed by group.
fn thread_groups() -> BTreeMap<&'static str, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime (fields 14 and 15; `rest` starts at field 3),
        // in clock ticks of 10 ms.
        let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
        *out.entry(group_of(name)).or_default() += cpu;
    }
    out
}

/// Voluntary and involuntary context switches of every thread, ended ones
/// included.
#[allow(unsafe_code)]
fn context_switches() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return 0;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    (usage.ru_nvcsw + usage.ru_nivcsw) as u64
}

/// Bytes this process caused to be sent to storage (`write_bytes`).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
