//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA1,
//! 6 digits, 30-second steps — what common authenticator apps use — with
//! the shared secret in base32 (RFC 4648) and the `otpauth://` URI those
//! apps read from a QR code.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps either side of now a code may come from (clock drift).
pub const WINDOW: u64 = 1;

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (padding and case ignored); none when it is not.
pub fn from_base32(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())?;
        buffer = (buffer << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
        buffer &= 0xff;
    }
    Some(out)
}

/// A new random 160-bit secret (RFC 4226's recommended length), in base32.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base32(&bytes)
}

/// The HOTP value of `secret` at `counter` (RFC 4226 §5.3).
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return 0; // HMAC takes keys of any length
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    bin % 10u32.pow(DIGITS)
}

/// The step a Unix time (seconds) falls in.
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The code for a step, zero-padded.
pub fn code_at(secret: &[u8], step: u64) -> String {
    format!("{:0width$}", hotp(secret, step), width = DIGITS as usize)
}

/// The step whose code `code` is, within [`WINDOW`] of `now_step` and
/// after `last_step` (a code is accepted once); none otherwise.
pub fn matching_step(secret: &[u8], code: &str, now_step: u64, last_step: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    (now_step.saturating_sub(WINDOW)..=now_step + WINDOW)
        .filter(|s| *s > last_step)
        .find(|s| constant_time_eq(code_at(secret, *s).as_bytes(), code.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `otpauth://totp/…` URI authenticator apps import (the Key Uri
/// Format): `issuer:account`, the secret, and the parameters above.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    // byte_serialize writes spaces as '+', which a path must not carry.
    let label = format!("{}:{}", enc(issuer), enc(account)).replace('+', "%20");
    format!(
        "otpauth://totp/{label}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer).replace('+', "%20")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (8 digits there; the last 6 here).
    #[test]
    fn rfc6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (t, expect) in [
            (59u64, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(code_at(secret, step_at(t)), expect[2..], "at {t}");
        }
    }

    /// RFC 4648 §10.
    #[test]
    fn base32_rfc4648_vectors_round_trip() {
        for (raw, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(raw.as_bytes()), enc);
            assert_eq!(from_base32(enc).unwrap(), raw.as_bytes());
        }
        assert_eq!(from_base32("MZXW6YQ=").unwrap(), b"foob");
        assert!(from_base32("MZ1").is_none());
    }

    #[test]
    fn codes_match_within_the_window_once() {
        let secret = b"12345678901234567890";
        let now = 1000;
        let code = code_at(secret, now - 1);
        assert_eq!(matching_step(secret, &code, now, 0), Some(now - 1));
        assert_eq!(matching_step(secret, &code, now, now - 1), None, "replay");
        assert_eq!(
            matching_step(secret, &code_at(secret, now - 2), now, 0),
            None
        );
        assert_eq!(matching_step(secret, "12345", now, 0), None);
    }

    #[test]
    fn otpauth_uri_has_the_key_uri_format() {
        assert_eq!(
            otpauth_uri("alertrelay FR-PDC", "alice", "JBSWY3DPEHPK3PXP"),
            "otpauth://totp/alertrelay%20FR-PDC:alice?secret=JBSWY3DPEHPK3PXP&issuer=alertrelay%20FR-PDC&algorithm=SHA1&digits=6&period=30"
        );
    }
}
