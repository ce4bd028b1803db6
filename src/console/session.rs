//! Server-side sessions: a random token in an `HttpOnly; Secure;
//! SameSite=Strict` cookie names a session held in memory (a restart logs
//! everyone out), which ends after the idle timeout or the absolute one,
//! whichever comes first. Each session has its own CSRF token, which
//! every state-changing form carries back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The session cookie. `__Host-` makes browsers refuse it unless it is
/// Secure, for the whole site, and set by this very host.
pub const COOKIE: &str = "__Host-alertrelay-session";
/// The cookie a login form's CSRF token is bound to before a session.
pub const PRE_COOKIE: &str = "__Host-alertrelay-login";

#[derive(Debug, Clone)]
pub struct Session {
    /// The account's name.
    pub name: String,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

/// A new random token: 256 bits, URL-safe base64.
pub fn token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Sessions are kept under the hash of their token, so the map's keys are
/// not bearer tokens and lookups do not compare secrets byte by byte.
fn key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `name`: its token (for the cookie) and CSRF token.
    pub fn create(&self, name: &str) -> (String, String) {
        let (t, csrf) = (token(), token());
        let now = Instant::now();
        let mut map = self.lock();
        // Expired sessions go whenever a new one comes.
        map.retain(|_, s| !self.expired(s, now));
        map.insert(
            key(&t),
            Session {
                name: name.to_owned(),
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (t, csrf)
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) >= self.idle
            || now.duration_since(s.created) >= self.absolute
    }

    /// The live session of a token, its idle clock restarted; an expired
    /// one is removed and none returned.
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.lock();
        let k = key(token);
        let s = map.get_mut(&k)?;
        if self.expired(s, now) {
            map.remove(&k);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn remove(&self, token: &str) {
        self.lock().remove(&key(token));
    }

    /// Ends every session of `name` (disabled, reset).
    pub fn remove_person(&self, name: &str) {
        self.lock().retain(|_, s| s.name != name);
    }

    /// Ends every session of `name` but the one of `token` (a changed
    /// password).
    pub fn remove_others(&self, name: &str, token: &str) {
        let keep = key(token);
        self.lock().retain(|k, s| s.name != name || *k == keep);
    }

    /// Moves every session's clocks `by` into the past, as if that much
    /// time had gone by without a request: lets a test see a session
    /// expire without waiting for it.
    pub fn backdate(&self, by: Duration) {
        for s in self.lock().values_mut() {
            s.created = s.created.checked_sub(by).unwrap_or(s.created);
            s.last_seen = s.last_seen.checked_sub(by).unwrap_or(s.last_seen);
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value for `name`: HttpOnly, Secure, SameSite=Strict,
/// for the whole site; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict{age}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_too_old() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(3600));
        let (t, csrf) = s.create("alice");
        assert_eq!(s.get(&t).map(|x| x.csrf), Some(csrf));
        s.backdate(Duration::from_secs(61));
        assert!(s.get(&t).is_none(), "idle");
        assert!(s.get(&t).is_none(), "and gone");
        let (t, _) = s.create("bob");
        // Kept busy (a request every 50 s), until the absolute limit.
        for _ in 0..71 {
            s.backdate(Duration::from_secs(50));
            assert!(s.get(&t).is_some());
        }
        s.backdate(Duration::from_secs(50));
        assert!(s.get(&t).is_none(), "absolute");
        let (a, _) = s.create("carol");
        let (b, _) = s.create("carol");
        let (d, _) = s.create("dave");
        s.remove_others("carol", &a);
        assert!(s.get(&a).is_some() && s.get(&b).is_none() && s.get(&d).is_some());
    }

    #[test]
    fn cookies_are_parsed_and_set_strictly() {
        assert_eq!(cookie("a=1; __Host-x=2", "__Host-x"), Some("2"));
        assert_eq!(cookie("a=1", "b"), None);
        let c = set_cookie(COOKIE, "v", None);
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }
}
