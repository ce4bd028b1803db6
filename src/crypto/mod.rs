//! Keys and certificates: Ed25519 signing under domain tags, the
//! federation PKI (minting), and the rustls configurations.

pub mod ed25519;
pub mod pki;
pub mod signing;
pub mod tls;
