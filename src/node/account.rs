//! A person's own account, changed by that person (the console's "my
//! account" page): their console language, and their password (with the
//! current password and a current TOTP code). Each change and each
//! refusal is audited under the person.

use crate::audit;
use crate::crypto::{password, totp};
use crate::identity::PeerIdentity;
use crate::node::users::{self, ACTIVE};
use crate::node::{Core, NodeError};
use crate::report::InvalidInput;
use crate::store::UserRow;

/// The account name of a person acting as themselves.
fn own_name(who: &PeerIdentity) -> Result<&str, NodeError> {
    match who {
        PeerIdentity::Operator { name, .. } => Ok(name),
        _ => Err(NodeError::PermissionDenied(
            "only a person changes their own account".into(),
        )),
    }
}

/// Sets `who`'s console language: one of `offered` (the console's
/// catalogues), or empty to let the browser's language decide.
pub async fn set_language(
    core: &Core,
    who: &PeerIdentity,
    language: &str,
    offered: &[&str],
) -> Result<(), NodeError> {
    let result = apply_language(core, who, language, offered).await;
    let fields: [&[u8]; 2] = [b"account.language", language.as_bytes()];
    core.audit_if_refused(who, "bad-setting", &fields, result)
        .await
}

async fn apply_language(
    core: &Core,
    who: &PeerIdentity,
    language: &str,
    offered: &[&str],
) -> Result<(), NodeError> {
    let name = own_name(who)?;
    let language = match language.trim() {
        "" => None,
        l if offered.contains(&l) => Some(l.to_owned()),
        _ => {
            let reason = format!(
                "must be one of {}, or empty for the browser's",
                offered.join(", ")
            );
            return Err(InvalidInput::new("bad-setting", "language", reason).into());
        }
    };
    let detail = serde_json::json!({ "language": language });
    let mut tx = core.store.begin().await?;
    let mut user = active(&mut tx, name).await?;
    user.language = language;
    tx.save_user(&user).await?;
    tx.audit(
        &audit::Entry::new("user.language", who.to_string(), name, detail),
        Core::now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The active account `name`, inside a transaction.
async fn active(tx: &mut crate::store::Tx, name: &str) -> Result<UserRow, NodeError> {
    tx.user(name)
        .await?
        .filter(|u| u.state == ACTIVE)
        .ok_or_else(|| NodeError::PermissionDenied("the account is not active".into()))
}

fn wrong_credentials() -> NodeError {
    InvalidInput::new(
        "bad-password",
        "current_password",
        "the current password or the code is wrong",
    )
    .into()
}

/// Changes `who`'s password: their current password and a current TOTP
/// code (each code is accepted once) prove it is them. A wrong password or
/// code counts toward the account's lock as a failed login does.
pub async fn change_password(
    core: &Core,
    who: &PeerIdentity,
    current: &str,
    totp_code: &str,
    new: &str,
) -> Result<(), NodeError> {
    let result = apply_password(core, who, current, totp_code, new).await;
    core.audit_if_refused(who, "bad-password", &[b"account.password"], result)
        .await
}

async fn apply_password(
    core: &Core,
    who: &PeerIdentity,
    current: &str,
    totp_code: &str,
    new: &str,
) -> Result<(), NodeError> {
    let name = own_name(who)?;
    password::check_new(new)
        .map_err(|e| InvalidInput::new("bad-password", "new_password", e.to_string()))?;
    if new == current {
        let reason = "must differ from the current password";
        return Err(InvalidInput::new("bad-password", "new_password", reason).into());
    }
    let now = Core::now_ms();
    let user = core
        .store
        .user(name)
        .await?
        .filter(|u| u.state == ACTIVE)
        .ok_or_else(|| NodeError::PermissionDenied("the account is not active".into()))?;
    if user.locked_until_ms > now {
        return Err(NodeError::FailedPrecondition(
            "this account is locked after repeated failures; ask an admin".into(),
        ));
    }
    let ok = users::verify_password(current, user.password_hash.clone()).await;
    let last = u64::try_from(user.totp_last_step).unwrap_or(0);
    let step = user
        .totp_secret
        .as_deref()
        .and_then(totp::from_base32)
        .and_then(|s| totp::matching_step(&s, totp_code, users::unix_step(now), last))
        .filter(|_| ok);
    let phc = match step {
        Some(_) => Some(users::hash_password(new).await?),
        None => None,
    };
    settle_password(core, who, name, step.zip(phc), now).await
}

/// Stores a checked password change (`change` the TOTP step used and the
/// new hash), or counts a failed one toward the lock.
async fn settle_password(
    core: &Core,
    who: &PeerIdentity,
    name: &str,
    change: Option<(u64, String)>,
    now: i64,
) -> Result<(), NodeError> {
    let mut tx = core.store.begin().await?;
    let mut user = active(&mut tx, name).await?;
    let Some((step, phc)) = change.filter(|(s, _)| *s > user.totp_last_step as u64) else {
        user.failures += 1;
        let lock = users::lock_ms(user.failures);
        if lock > 0 {
            user.locked_until_ms = now + lock;
        }
        tx.save_user(&user).await?;
        tx.commit().await?;
        return Err(wrong_credentials());
    };
    user.password_hash = Some(phc);
    user.totp_last_step = i64::try_from(step).unwrap_or(i64::MAX);
    user.failures = 0;
    tx.save_user(&user).await?;
    let entry = audit::Entry::new(
        "user.password-changed",
        who.to_string(),
        name,
        serde_json::json!({}),
    );
    tx.audit(&entry, now).await?;
    tx.commit().await?;
    Ok(())
}
