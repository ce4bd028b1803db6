//! Keys and certificates: Ed25519 signing under domain tags, the
//! federation PKI (minting), and the rustls configurations.

pub mod pki;
pub mod signing;
pub mod tls;
