//! Keys and certificates: Ed25519 signing under domain tags, the
//! federation PKI (minting), and the rustls configurations; the console's
//! people's passwords (argon2id) and one-time codes (TOTP).

pub mod ed25519;
pub mod password;
pub mod pki;
pub mod signing;
pub mod tls;
pub mod totp;
