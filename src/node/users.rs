//! Personal accounts of this hotline's people, for the console: adding
//! one (with a one-time enrolment code), enrolment (a password and a TOTP
//! second factor), logging in with lockout, and the admin's changes
//! (disable, reset, unlock). Every change and every refused login is in
//! the audit log under the person it concerns or the admin who made it.
//!
//! A person logged in is a `PeerIdentity::Operator` of this node with the
//! account's role: the console calls the node's functions with it exactly
//! as the Operator service does with a certificate's identity, so the
//! audit log names the same person whichever way they came in.

use sha2::{Digest, Sha256};

use crate::audit;
use crate::crypto::{password, totp};
use crate::identity::{PeerIdentity, Role, valid_operator_name};
use crate::node::{Core, NodeError};
use crate::report::InvalidInput;
use crate::store::UserRow;

/// How long an enrolment code is valid.
pub const ENROL_VALIDITY_MS: i64 = 72 * 3600 * 1000;
/// Failed logins in a row before the account locks.
pub const LOCK_AFTER: i64 = 5;
/// The first lock; each further failure doubles it, up to [`MAX_LOCK_MS`].
pub const FIRST_LOCK_MS: i64 = 60 * 1000;
pub const MAX_LOCK_MS: i64 = 24 * 3600 * 1000;

/// Password hashes computed at once (each takes about 19 MiB and tens of
/// milliseconds): a flood of logins waits here instead of taking every
/// blocking thread and the memory with it.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// `password::hash` on a blocking thread, a few at a time.
pub(super) async fn hash_password(pw: &str) -> Result<String, NodeError> {
    let _turn = HASHING
        .acquire()
        .await
        .map_err(|_| NodeError::Internal("password hashing stopped"))?;
    let pw = pw.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|_| NodeError::Internal("password hashing stopped"))?
        .map_err(|_| NodeError::Internal("password hashing failed"))
}

/// `password::verify` on a blocking thread, a few at a time; against the
/// dummy hash when there is no account (`phc` none).
pub(super) async fn verify_password(pw: &str, phc: Option<String>) -> bool {
    let Ok(_turn) = HASHING.acquire().await else {
        return false;
    };
    let pw = pw.to_owned();
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => password::verify(&pw, &phc),
        None => {
            // Spend the same time, and never let anyone in.
            let _ = password::verify(&pw, dummy_phc());
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// The states of an account.
pub const ENROLLING: &str = "enrolling";
pub const ACTIVE: &str = "active";
pub const DISABLED: &str = "disabled";

/// An account as shown to an admin (no secrets, no hashes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserView {
    pub name: String,
    pub role: String,
    pub state: String,
    pub failures: i64,
    /// When a lock ends, if the account is locked now (RFC 3339).
    pub locked_until: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub last_login: Option<String>,
    /// When the pending enrolment code stops working, while enrolling.
    pub enrol_expires: Option<String>,
}

/// A one-time enrolment code for `name`, shown once.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub name: String,
    pub code: String,
    pub expires_at_ms: i64,
}

/// The second factor to set up, from the first enrolment step.
#[derive(Debug, Clone)]
pub struct TotpSetup {
    pub name: String,
    pub secret: String,
    pub uri: String,
}

/// Why a login was refused. What the person is told does not say which
/// of name, password or code was wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("name, password or code is wrong")]
    Wrong,
    #[error("this account is locked after repeated failures; try again later or ask an admin")]
    Locked { until_ms: i64 },
    #[error(transparent)]
    Node(#[from] NodeError),
}

fn view(u: &UserRow, now_ms: i64) -> UserView {
    use crate::report::view::rfc3339;
    UserView {
        name: u.name.clone(),
        role: u.role.clone(),
        state: u.state.clone(),
        failures: u.failures,
        locked_until: (u.locked_until_ms > now_ms).then(|| rfc3339(u.locked_until_ms)),
        created_at: rfc3339(u.created_at_ms),
        created_by: u.created_by.clone(),
        last_login: u.last_login_ms.map(rfc3339),
        enrol_expires: (u.state == ENROLLING && u.enrol_code_hash.is_some())
            .then(|| rfc3339(u.enrol_expires_ms)),
    }
}

/// The identity a logged-in account acts as.
pub fn identity(core: &Core, u: &UserRow) -> Result<PeerIdentity, NodeError> {
    Ok(PeerIdentity::Operator {
        node: core.me.clone(),
        name: u.name.clone(),
        role: Role::parse(&u.role).ok_or(NodeError::Internal("a stored role is unknown"))?,
    })
}

fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

fn new_code() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 15];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    totp::base32(&bytes)
}

fn check_name(name: &str) -> Result<(), NodeError> {
    if valid_operator_name(name) {
        Ok(())
    } else {
        Err(InvalidInput::new(
            "bad-user",
            "name",
            "must be 1-64 of A-Z, a-z, 0-9, '.', '_', '-'",
        )
        .into())
    }
}

fn require_admin(who: &PeerIdentity) -> Result<(), NodeError> {
    match who.role() {
        Some(Role::Admin) => Ok(()),
        _ => Err(NodeError::PermissionDenied(
            "managing accounts needs the admin role".into(),
        )),
    }
}

/// Adds an account for `name` with `role`, enrolling with a one-time code.
pub async fn add(
    core: &Core,
    admin: &PeerIdentity,
    name: &str,
    role: &str,
) -> Result<Enrolment, NodeError> {
    let result = add_checked(core, admin, name, role).await;
    core.audit_if_refused(
        admin,
        "bad-user",
        &[b"users.add", name.as_bytes(), role.as_bytes()],
        result,
    )
    .await
}

async fn add_checked(
    core: &Core,
    admin: &PeerIdentity,
    name: &str,
    role: &str,
) -> Result<Enrolment, NodeError> {
    require_admin(admin)?;
    check_name(name)?;
    let role = Role::parse(role).ok_or_else(|| {
        InvalidInput::new("bad-user", "role", "must be analyst, supervisor or admin")
    })?;
    let now = Core::now_ms();
    let code = new_code();
    let row = UserRow {
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        state: ENROLLING.to_owned(),
        password_hash: None,
        totp_secret: None,
        totp_last_step: 0,
        enrol_code_hash: Some(code_hash(&code)),
        enrol_expires_ms: now + ENROL_VALIDITY_MS,
        failures: 0,
        locked_until_ms: 0,
        created_at_ms: now,
        created_by: admin.to_string(),
        last_login_ms: None,
        language: None,
    };
    let mut tx = core.store.begin().await?;
    if !tx.insert_user(&row).await? {
        return Err(NodeError::FailedPrecondition(format!(
            "an account named {name} exists"
        )));
    }
    tx.audit(
        &audit::Entry::new(
            "user.added",
            admin.to_string(),
            name,
            serde_json::json!({"role": role.as_str(), "enrol_expires_ms": row.enrol_expires_ms}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Enrolment {
        name: name.to_owned(),
        code,
        expires_at_ms: row.enrol_expires_ms,
    })
}

/// Every account, for an admin; the read is audited.
pub async fn list(core: &Core, admin: &PeerIdentity) -> Result<Vec<UserView>, NodeError> {
    require_admin(admin)?;
    let users = core.store.users().await?;
    let now = Core::now_ms();
    crate::node::cases::audit_read(
        core,
        admin,
        "user.read",
        String::new(),
        serde_json::json!({"count": users.len()}),
    )
    .await?;
    Ok(users.iter().map(|u| view(u, now)).collect())
}

/// An admin's change to one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Disable,
    Unlock,
}

/// Disables or unlocks an account.
pub async fn change(
    core: &Core,
    admin: &PeerIdentity,
    name: &str,
    what: Change,
) -> Result<UserView, NodeError> {
    let (kind, tag): (&'static str, &[u8]) = match what {
        Change::Disable => ("user.disabled", b"users.disable"),
        Change::Unlock => ("user.unlocked", b"users.unlock"),
    };
    let result = modify(core, admin, name, kind, |u| {
        match what {
            Change::Disable => u.state = DISABLED.to_owned(),
            Change::Unlock => {
                u.failures = 0;
                u.locked_until_ms = 0;
            }
        }
        Ok(())
    })
    .await;
    if let Ok(u) = &result {
        remember_state(core, name, u.state == DISABLED, Core::now_ms())?;
    }
    let result = result.map(|u| view(&u, Core::now_ms()));
    core.audit_if_refused(admin, "bad-user", &[tag, name.as_bytes()], result)
        .await
}

/// Resets an account: its password and second factor are cleared and a new
/// enrolment code is issued (also for a disabled account, which becomes
/// enrolling again).
pub async fn reset(core: &Core, admin: &PeerIdentity, name: &str) -> Result<Enrolment, NodeError> {
    let code = new_code();
    let expires = Core::now_ms() + ENROL_VALIDITY_MS;
    let hash = code_hash(&code);
    let result = modify(core, admin, name, "user.reset", |u| {
        u.state = ENROLLING.to_owned();
        u.password_hash = None;
        u.totp_secret = None;
        u.enrol_code_hash = Some(hash);
        u.enrol_expires_ms = expires;
        u.failures = 0;
        u.locked_until_ms = 0;
        Ok(())
    })
    .await
    .map(|u| Enrolment {
        name: u.name,
        code,
        expires_at_ms: expires,
    });
    core.audit_if_refused(
        admin,
        "bad-user",
        &[b"users.reset", name.as_bytes()],
        result,
    )
    .await
}

/// Reads, changes and stores one account in one transaction with its
/// audit entry, for an admin.
async fn modify(
    core: &Core,
    admin: &PeerIdentity,
    name: &str,
    kind: &'static str,
    f: impl FnOnce(&mut UserRow) -> Result<(), NodeError>,
) -> Result<UserRow, NodeError> {
    require_admin(admin)?;
    check_name(name)?;
    let mut tx = core.store.begin().await?;
    let mut user = tx
        .user(name)
        .await?
        .ok_or_else(|| NodeError::NotFound(format!("no account named {name}")))?;
    f(&mut user)?;
    tx.save_user(&user).await?;
    tx.audit(
        &audit::Entry::new(
            kind,
            admin.to_string(),
            name,
            serde_json::json!({"state": user.state}),
        ),
        Core::now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

fn bad_code() -> NodeError {
    InvalidInput::new(
        "bad-enrolment",
        "code",
        "is not a valid enrolment code, or it has expired or been used",
    )
    .into()
}

/// Enrolment, first step: a valid code and a new password. Stores the
/// password's hash and a new TOTP secret (the account stays enrolling
/// until a code from the authenticator confirms it: `finish_enrolment`).
pub async fn begin_enrolment(
    core: &Core,
    code: &str,
    new_password: &str,
) -> Result<TotpSetup, NodeError> {
    password::check_new(new_password)
        .map_err(|e| InvalidInput::new("bad-password", "password", e.to_string()))?;
    let phc = hash_password(new_password).await?;
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    let mut user = pending(&mut tx, code, now).await?;
    let secret = totp::new_secret();
    user.password_hash = Some(phc);
    user.totp_secret = Some(secret.clone());
    tx.save_user(&user).await?;
    tx.commit().await?;
    let issuer = format!("alertrelay {}", core.me);
    Ok(TotpSetup {
        uri: totp::otpauth_uri(&issuer, &user.name, &secret),
        name: user.name,
        secret,
    })
}

/// The enrolling account whose valid code this is.
async fn pending(tx: &mut crate::store::Tx, code: &str, now: i64) -> Result<UserRow, NodeError> {
    if code.len() > 64 {
        return Err(bad_code());
    }
    match tx.user_by_enrol_code(&code_hash(code)).await? {
        Some(u) if u.state == ENROLLING && u.enrol_expires_ms > now => Ok(u),
        _ => Err(bad_code()),
    }
}

/// Enrolment, second step: a code from the authenticator app proves the
/// secret was taken; the account becomes active and the enrolment code is
/// spent.
pub async fn finish_enrolment(
    core: &Core,
    code: &str,
    totp_code: &str,
) -> Result<PeerIdentity, NodeError> {
    let now = Core::now_ms();
    let mut tx = core.store.begin().await?;
    let mut user = pending(&mut tx, code, now).await?;
    let secret = user
        .totp_secret
        .as_deref()
        .and_then(totp::from_base32)
        .ok_or_else(|| {
            NodeError::FailedPrecondition(
                "set a password first: the enrolment has no secret".into(),
            )
        })?;
    let step = totp::matching_step(&secret, totp_code, unix_step(now), 0).ok_or_else(|| {
        NodeError::from(InvalidInput::new(
            "bad-enrolment",
            "totp",
            "is not the current code of the authenticator",
        ))
    })?;
    user.state = ACTIVE.to_owned();
    user.totp_last_step = i64::try_from(step).unwrap_or(i64::MAX);
    user.enrol_code_hash = None;
    user.enrol_expires_ms = 0;
    tx.save_user(&user).await?;
    let who = identity(core, &user)?;
    tx.audit(
        &audit::Entry::new(
            "user.enrolled",
            who.to_string(),
            &user.name,
            serde_json::json!({}),
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(who)
}

pub(super) fn unix_step(now_ms: i64) -> u64 {
    totp::step_at(u64::try_from(now_ms / 1000).unwrap_or(0))
}

/// How long the lock after `failures` failed logins in a row lasts (none
/// before [`LOCK_AFTER`]).
pub fn lock_ms(failures: i64) -> i64 {
    if failures < LOCK_AFTER {
        return 0;
    }
    let doublings = u32::try_from(failures - LOCK_AFTER)
        .unwrap_or(u32::MAX)
        .min(20);
    FIRST_LOCK_MS
        .saturating_mul(1 << doublings)
        .min(MAX_LOCK_MS)
}

/// Logs `name` in with a password and a TOTP code. A locked account is
/// refused without looking at either; every failure counts toward the
/// lock and is audited under the account's person; a success is audited
/// and resets the count.
pub async fn login(
    core: &Core,
    name: &str,
    pw: &str,
    totp_code: &str,
) -> Result<PeerIdentity, LoginError> {
    let now = Core::now_ms();
    let user = match valid_operator_name(name) {
        true => core.store.user(name).await.map_err(NodeError::from)?,
        false => None,
    };
    let Some(user) = user.filter(|u| u.state == ACTIVE) else {
        // The same work as a real check, so timing does not tell names.
        verify_password(pw, None).await;
        core.audit_refusal(
            "console:unidentified",
            "login-failed",
            "no active account of that name",
            &[],
        )
        .await;
        return Err(LoginError::Wrong);
    };
    let who = identity(core, &user)?;
    if user.locked_until_ms > now {
        core.audit_refusal(
            &who.to_string(),
            "login-locked",
            "the account is locked",
            &[],
        )
        .await;
        return Err(LoginError::Locked {
            until_ms: user.locked_until_ms,
        });
    }
    let phc = user.password_hash.clone().unwrap_or_default();
    let password_ok = verify_password(pw, Some(phc)).await;
    let secret = user.totp_secret.as_deref().and_then(totp::from_base32);
    let last = u64::try_from(user.totp_last_step).unwrap_or(0);
    let step = secret
        .as_deref()
        .and_then(|s| totp::matching_step(s, totp_code, unix_step(now), last));
    settle_login(core, &who, name, password_ok.then_some(step).flatten(), now).await
}

/// Records the outcome of a checked login in one transaction.
async fn settle_login(
    core: &Core,
    who: &PeerIdentity,
    name: &str,
    step: Option<u64>,
    now: i64,
) -> Result<PeerIdentity, LoginError> {
    let mut tx = core.store.begin().await.map_err(NodeError::from)?;
    let Some(mut user) = tx.user(name).await.map_err(NodeError::from)? else {
        return Err(LoginError::Wrong);
    };
    let entry = match step {
        Some(step) => {
            user.failures = 0;
            user.locked_until_ms = 0;
            user.totp_last_step = i64::try_from(step).unwrap_or(i64::MAX);
            user.last_login_ms = Some(now);
            audit::Entry::new("user.login", who.to_string(), name, serde_json::json!({}))
        }
        None => {
            user.failures += 1;
            let lock = lock_ms(user.failures);
            if lock > 0 {
                user.locked_until_ms = now + lock;
            }
            audit::Entry::new(
                "user.login-failed",
                who.to_string(),
                name,
                serde_json::json!({"failures": user.failures, "locked_for_ms": lock}),
            )
        }
    };
    tx.save_user(&user).await.map_err(NodeError::from)?;
    tx.audit(&entry, now).await.map_err(NodeError::from)?;
    tx.commit().await.map_err(NodeError::from)?;
    match step {
        Some(_) => Ok(who.clone()),
        None => Err(LoginError::Wrong),
    }
}

/// A logged-in person as their account is now.
#[derive(Debug, Clone)]
pub struct Current {
    pub who: PeerIdentity,
    /// Their own console language, when they chose one.
    pub language: Option<String>,
}

/// How long a person's account state read for an operator certificate
/// (`disabled`) is used before it is read again: a disable made on another
/// replica takes effect within this; one made here at once.
const ACCOUNT_STATE_MS: i64 = 5_000;

/// Whether `name` has an account here that is disabled: a personal
/// operator certificate of a disabled person is refused, as the console
/// refuses the person (a certificate with no account of its name, such as
/// a node's shared `[operator]` one, is the CA's and its CRL's to refuse).
/// Read at most once per `ACCOUNT_STATE_MS` per name.
pub async fn disabled(core: &Core, name: &str) -> Result<bool, NodeError> {
    let now = Core::now_ms();
    if let Some(&(off, at)) = core.account_states.lock().map_err(poisoned)?.get(name)
        && now - at < ACCOUNT_STATE_MS
    {
        return Ok(off);
    }
    let off = core
        .store
        .user(name)
        .await?
        .is_some_and(|u| u.state == DISABLED);
    remember_state(core, name, off, now)?;
    Ok(off)
}

fn remember_state(core: &Core, name: &str, off: bool, now: i64) -> Result<(), NodeError> {
    let mut states = core.account_states.lock().map_err(poisoned)?;
    if states.len() > 10_000 {
        states.clear();
    }
    states.insert(name.to_owned(), (off, now));
    Ok(())
}

fn poisoned<T>(_: T) -> NodeError {
    NodeError::Internal("account state lock poisoned")
}

/// The current role, state and setting of a logged-in person, checked on
/// every console request (a disabled account or a changed role takes
/// effect at once).
pub async fn current(core: &Core, name: &str) -> Result<Option<Current>, NodeError> {
    match core.store.user(name).await? {
        Some(u) if u.state == ACTIVE => Ok(Some(Current {
            who: identity(core, &u)?,
            language: u.language,
        })),
        _ => Ok(None),
    }
}

/// An argon2id hash of a random password, verified against when the
/// account does not exist (made once, on the first such login).
fn dummy_phc() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash(&totp::new_secret()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_from_the_fifth_failure_and_are_capped() {
        assert_eq!(lock_ms(4), 0);
        assert_eq!(lock_ms(5), FIRST_LOCK_MS);
        assert_eq!(lock_ms(6), 2 * FIRST_LOCK_MS);
        assert_eq!(lock_ms(7), 4 * FIRST_LOCK_MS);
        assert_eq!(lock_ms(1000), MAX_LOCK_MS);
    }
}
