//! Start-up's audit: the entry that records each start, and one entry per
//! change of configuration, directory, certificate, CA, signing key or geo
//! data since the previous start.

use std::net::SocketAddr;

use crate::audit;
use crate::store::StoreError;

use super::Core;

/// The SHA-256 of a file, hex; empty when it cannot be read.
pub fn file_sha256(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|b| hex::encode(crate::wire::digest(&b)))
        .unwrap_or_default()
}

/// What in a node's configuration is the node's, not the process's: the
/// parsed `node.toml` without the keys each replica of a node sets for
/// itself (`listen`, `[delivery] replica`, `[metrics] listen`), as
/// canonical JSON, hashed. Replicas of one node, each with its own file,
/// then agree, and a change of any other key shows. (The file's own hash
/// when it does not parse.)
pub fn config_digest(path: &std::path::Path) -> String {
    let Some(mut value) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
    else {
        return file_sha256(path);
    };
    value.remove("listen");
    for (section, key) in [("delivery", "replica"), ("metrics", "listen")] {
        if let Some(toml::Value::Table(t)) = value.get_mut(section) {
            t.remove(key);
        }
    }
    // A `toml::Table` keeps its keys sorted: the JSON is canonical.
    let canonical = serde_json::to_string(&value).unwrap_or_default();
    hex::encode(crate::wire::digest(canonical.as_bytes()))
}

/// Audits the start-up, and every change of configuration, directory, TLS
/// certificate or signing key since the previous start.
pub async fn audit_start(
    core: &Core,
    addr: SocketAddr,
    peers: &[crate::directory::DirectoryNode],
) -> Result<(), StoreError> {
    let cfg = &core.config;
    let facts = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        // A clean stop writes `node.stopped`: without one after this
        // start, the next start knows the process died.
        "records_stop": true,
        "replica": core.replica,
        "key_id": core.key().key_id(),
        "config_digest": config_digest(&cfg.path),
        "directory_sha256": file_sha256(&cfg.directory_path),
        "directory_serial": core.directory().serial(),
        "tls_cert_sha256": file_sha256(&cfg.tls.cert),
        "ca_sha256": file_sha256(&cfg.tls.ca),
        "listen": addr.to_string(),
        "peers": peers.iter().map(|p| p.id.to_string()).collect::<Vec<_>>(),
        // Which hosting data routed reports from now on.
        "geo_sources": cfg
            .geo
            .describe()
            .iter()
            .map(|g| format!("{} ({})", g.name, g.dataset_date))
            .collect::<Vec<_>>(),
    });
    let previous_row = core.store.last_audit_of_kind("node.started").await?;
    let crash = unclean_stop(core, previous_row.as_ref()).await?;
    let previous =
        previous_row.and_then(|row| serde_json::from_str::<serde_json::Value>(&row.detail).ok());
    let me = format!("node:{}", core.me);
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    if let Some(event) = crash {
        super::alerts::raise_in(core, &mut tx, &event).await?;
    }
    if let Some(prev) = previous {
        for (field, kind) in [
            ("key_id", "key.changed"),
            ("config_digest", "config.changed"),
            ("directory_sha256", "directory.changed"),
            ("tls_cert_sha256", "certificate.changed"),
            ("ca_sha256", "ca.changed"),
            ("geo_sources", "geo.changed"),
        ] {
            // A fact the previous version did not record is no change.
            if prev.get(field).is_some() && prev.get(field) != facts.get(field) {
                tracing::warn!(what = field, "changed since the last start");
                tx.audit(
                    &audit::Entry::new(
                        kind,
                        me.clone(),
                        core.me.to_string(),
                        serde_json::json!({
                            "field": field,
                            "before": prev.get(field),
                            "after": facts.get(field),
                        }),
                    ),
                    now,
                )
                .await?;
            }
        }
    }
    tx.audit(
        &audit::Entry::new("node.started", me, core.me.to_string(), facts),
        now,
    )
    .await?;
    tx.commit().await
}

/// The `crash_restart` event when the previous start (`previous`, which
/// promised to record its stop) has no `node.stopped` after it: the
/// process was killed, crashed or lost its machine. On SQLite a node is
/// one process; on PostgreSQL only a replica with a configured id
/// (`[delivery] replica`) can find its own previous run among the others'.
async fn unclean_stop(
    core: &Core,
    previous: Option<&crate::store::AuditRow>,
) -> Result<Option<super::alerts::Event>, StoreError> {
    let store = &core.store;
    let (previous, stopped) = match (store, &core.config.delivery.replica) {
        (crate::store::Store::Sqlite(_), _) => (
            previous.cloned(),
            store.last_audit_of_kind("node.stopped").await?,
        ),
        (crate::store::Store::Postgres(_), Some(id)) => (
            store.last_audit_of_replica("node.started", id).await?,
            store.last_audit_of_replica("node.stopped", id).await?,
        ),
        (crate::store::Store::Postgres(_), None) => return Ok(None),
    };
    let Some(prev) = previous else {
        return Ok(None);
    };
    let promised = serde_json::from_str::<serde_json::Value>(&prev.detail)
        .ok()
        .and_then(|d| d.get("records_stop").and_then(|v| v.as_bool()))
        .unwrap_or(false);
    // A `db restore` after that start put a backup in place: its run did
    // not crash here.
    let restored = store.last_audit_of_kind("db.restored").await?;
    let after =
        |row: &Option<crate::store::AuditRow>| row.as_ref().is_some_and(|r| r.seq > prev.seq);
    if !promised || after(&stopped) || after(&restored) {
        return Ok(None);
    }
    let since = crate::report::view::rfc3339(prev.at_ms);
    Ok(Some(super::alerts::Event::new(
        "crash_restart",
        format!("crash_restart:{}", prev.seq),
        format!(
            "{} restarted after an unclean stop (the run started {since} did not shut down)",
            core.me
        ),
        serde_json::json!({ "previous_start": since, "previous_start_entry": prev.seq }),
    )))
}

/// Audits a clean stop (`NodeHandle::shutdown`), so that the next start
/// does not take it for a crash.
pub async fn audit_stop(core: &Core) -> Result<(), StoreError> {
    let mut tx = core.store.begin().await?;
    tx.audit(
        &audit::Entry::new(
            "node.stopped",
            format!("node:{}", core.me),
            core.me.to_string(),
            serde_json::json!({ "replica": core.replica }),
        ),
        Core::now_ms(),
    )
    .await?;
    tx.commit().await
}
