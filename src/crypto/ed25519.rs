//! The one rule by which every Ed25519 signature is verified here, alone
//! or in a batch, so a signature is valid or not whatever it travels with.
//!
//! The rule: `s` is canonical (below the group order), `A` and `R` are
//! canonical encodings of points that are not of small order, and the
//! cofactored equation `[8](sB − kA − R) = 0` holds, with
//! `k = SHA-512(R ‖ A ‖ M) mod ℓ` (RFC 8032, section 5.1.7, which allows
//! the cofactored check). A batch checks
//! `[8](Σ zᵢsᵢ·B − Σ zᵢkᵢ·Aᵢ − Σ zᵢ·Rᵢ) = 0` with fresh random 128-bit
//! `zᵢ` from the operating system: it holds exactly when every signature's
//! own equation holds (but with probability 2⁻¹²⁸), and no signer can
//! choose the coefficients.
//!
//! Why not ed25519-dalek's `verify_strict` and `verify_batch`: the first is
//! cofactorless, the second cofactorless with coefficients derived from
//! the batch itself. A signer who adds a small-order component to `R` gets
//! a signature `verify_strict` refuses and that a batch accepts or refuses
//! depending on what else is in it (the signer can grind for either). With
//! one cofactored rule both answers are the same, always. Only a key's
//! holder can make such a signature; it is valid here, everywhere.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};

/// A signature ready for its equation: points decoded and checked, `k`
/// computed.
pub(crate) struct Prepared {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Whether the `y` an encoding holds (its low 255 bits) is below
/// p = 2²⁵⁵ − 19, read off the bytes: `y` ≥ p exactly when byte 0 is at
/// least 0xed, bytes 1 to 30 are 0xff and byte 31 is 0x7f (its top bit,
/// `x`'s sign, aside). With that, an encoding is canonical unless it sets
/// the sign bit of `x` = 0, which only the points (0, ±1) have, both of
/// small order and refused as such. Cheaper than decoding and encoding
/// again (which costs a field inversion per point).
fn y_below_p(bytes: &[u8; 32]) -> bool {
    !(bytes[0] >= 0xed && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[31] & 0x7f == 0x7f)
}

/// A point from its encoding: canonical, and not of small order.
fn point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !y_below_p(bytes) {
        return None;
    }
    let p = CompressedEdwardsY(*bytes).decompress()?;
    (!p.is_small_order()).then_some(p)
}

/// The key's point, held decoded by `VerifyingKey` (so not decoded again
/// for each signature), by the same rule as [`point`].
fn key_point(key: &VerifyingKey) -> Option<EdwardsPoint> {
    let a = key.to_edwards();
    (y_below_p(key.as_bytes()) && !a.is_small_order()).then_some(a)
}

/// Checks everything but the equation: encodings, small order, `s` below
/// the group order. `None` when any fails.
pub(crate) fn prepare(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> Option<Prepared> {
    let a = key_point(key)?;
    let r = point(sig.r_bytes())?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes()))?;
    let mut h = Sha512::new();
    h.update(sig.r_bytes());
    h.update(key.as_bytes());
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Some(Prepared { a, r, s, k })
}

/// The equation of one signature.
pub(crate) fn holds(p: &Prepared) -> bool {
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(-p.k), &p.a, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// The equations of many signatures at once, with random coefficients.
pub(crate) fn all_hold(batch: &[Prepared]) -> bool {
    use rand::RngCore;
    if batch.is_empty() {
        return true;
    }
    let mut rng = rand::rngs::OsRng;
    let mut b = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(batch.len() * 2 + 1);
    let mut points = Vec::with_capacity(batch.len() * 2 + 1);
    for p in batch {
        let mut z = [0u8; 16];
        rng.fill_bytes(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b += z * p.s;
        scalars.push(-(z * p.k));
        points.push(p.a);
        scalars.push(-z);
        points.push(p.r);
    }
    scalars.push(b);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// One signature, by the rule.
pub(crate) fn verify(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> bool {
    prepare(key, msg, sig).is_some_and(|p| holds(&p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    /// RFC 8032, section 7.1, TEST 1 and TEST 3 (provenance: the RFC).
    #[test]
    fn the_rfc_8032_test_vectors_verify() {
        let vectors = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (key, msg, sig) in vectors {
            let key: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
            let key = VerifyingKey::from_bytes(&key).unwrap();
            let msg = hex::decode(msg).unwrap();
            let sig = Signature::from_slice(&hex::decode(sig).unwrap()).unwrap();
            assert!(verify(&key, &msg, &sig));
            let mut other = msg.clone();
            other.push(0);
            assert!(!verify(&key, &other, &sig));
        }
    }

    /// A signature whose `R` carries an order-2 component, made by the key
    /// holder: the same answer alone and in every batch it is put in, run
    /// after run (the adversarial review ground batches until a
    /// deterministic coefficient hid it).
    #[test]
    fn a_signature_with_a_torsion_component_verifies_the_same_alone_and_in_any_batch() {
        let a = Scalar::from(0x1234_5678_9abc_def0_u64) * Scalar::from(0xfeed_beef_u64);
        let public = EdwardsPoint::mul_base(&a);
        let key = VerifyingKey::from_bytes(&public.compress().to_bytes()).unwrap();
        // The order-2 point (0, -1).
        let t2 = curve25519_dalek::constants::EIGHT_TORSION[4];
        assert!(t2.is_small_order() && !t2.is_identity());
        let msg = b"a report payload";
        let torsioned = |nonce: u64| {
            let r = Scalar::from(nonce);
            let r_point = EdwardsPoint::mul_base(&r) + t2;
            let r_bytes = r_point.compress().to_bytes();
            let mut h = Sha512::new();
            h.update(r_bytes);
            h.update(key.as_bytes());
            h.update(msg);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let s = r + k * a;
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&r_bytes);
            bytes[32..].copy_from_slice(s.as_bytes());
            Signature::from_bytes(&bytes)
        };
        let good_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let good = |i: u8| {
            let m = vec![i; 10];
            let sig = good_key.sign(&m);
            prepare(&good_key.verifying_key(), &m, &sig).unwrap()
        };
        for nonce in 1..40u64 {
            let sig = torsioned(nonce);
            // ed25519-dalek's cofactorless check refuses it...
            assert!(key.verify_strict(msg, &sig).is_err());
            // ...this rule accepts it, alone and in batches of every size.
            assert!(verify(&key, msg, &sig), "nonce {nonce}");
            for n in 0..6u8 {
                let mut batch: Vec<Prepared> = (0..n).map(good).collect();
                batch.push(prepare(&key, msg, &sig).unwrap());
                assert!(all_hold(&batch), "nonce {nonce}, batch of {}", n + 1);
            }
        }
        // A signature that is wrong is refused alone and in any batch.
        let bad = {
            let mut b = torsioned(1).to_bytes();
            b[40] ^= 1;
            Signature::from_bytes(&b)
        };
        assert!(!verify(&key, msg, &bad));
        for n in 0..6u8 {
            let mut batch: Vec<Prepared> = (0..n).map(good).collect();
            if let Some(p) = prepare(&key, msg, &bad) {
                batch.push(p);
                assert!(!all_hold(&batch));
            }
        }
    }

    #[test]
    fn small_order_and_non_canonical_encodings_are_refused() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let msg = b"m";
        let sig = sk.sign(msg);
        assert!(verify(&sk.verifying_key(), msg, &sig));
        // R = the identity (small order).
        let mut bytes = sig.to_bytes();
        bytes[..32].copy_from_slice(&EdwardsPoint::default().compress().to_bytes());
        assert!(prepare(&sk.verifying_key(), msg, &Signature::from_bytes(&bytes)).is_none());
        // s ≥ ℓ.
        let mut bytes = sig.to_bytes();
        bytes[63] |= 0xf0;
        assert!(prepare(&sk.verifying_key(), msg, &Signature::from_bytes(&bytes)).is_none());
    }

    /// The rule as first written: decode, encode again, compare, and
    /// refuse small order.
    fn round_trip(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
        let p = CompressedEdwardsY(*bytes).decompress()?;
        (p.compress().to_bytes() == *bytes && !p.is_small_order()).then_some(p)
    }

    /// Reading canonical encodings off the bytes refuses exactly what
    /// decoding and encoding again refuses: every `y` from p − 2 up to
    /// 2²⁵⁵ − 1 and the small values, each with both signs, and random
    /// encodings; for points and for keys.
    #[test]
    fn canonical_encodings_read_off_the_bytes_match_the_round_trip() {
        use rand::RngCore;
        let mut cases: Vec<[u8; 32]> = Vec::new();
        // 2²⁵⁵ − 21 … 2²⁵⁵ − 1: p − 2 … p + 18.
        for low in 0xebu8..=0xff {
            let mut b = [0xff; 32];
            b[0] = low;
            b[31] = 0x7f;
            cases.push(b);
        }
        for small in 0u8..=4 {
            let mut b = [0; 32];
            b[0] = small;
            cases.push(b);
        }
        // p − 1 = −1, an order-2 point, and its negative-sign encoding.
        let mut b = [0xff; 32];
        b[0] = 0xec;
        b[31] = 0x7f;
        cases.push(b);
        let mut rng = rand::rngs::OsRng;
        for _ in 0..2000 {
            let mut b = [0; 32];
            rng.fill_bytes(&mut b);
            cases.push(b);
        }
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        cases.push(sk.verifying_key().to_bytes());
        let (mut points, mut refused) = (0, 0);
        for mut b in cases {
            for sign in [0, 0x80] {
                b[31] = (b[31] & 0x7f) | sign;
                let expected = round_trip(&b);
                assert_eq!(point(&b), expected, "{}", hex::encode(b));
                if let Ok(key) = VerifyingKey::from_bytes(&b) {
                    assert_eq!(key_point(&key), expected, "key {}", hex::encode(b));
                }
                if expected.is_some() {
                    points += 1;
                } else {
                    refused += 1;
                }
            }
        }
        // Both answers were exercised, non-canonical ones included.
        assert!(points > 100 && refused > 100, "{points} {refused}");
        // Some y = p + 2 … p + 18 (≡ 2 … 18) decode to points of large
        // order, refused only for their encoding.
        let large_order = (0xefu8..=0xff)
            .map(|low| {
                let mut b = [0xff; 32];
                b[0] = low;
                b[31] = 0x7f;
                b
            })
            .filter(|b| {
                CompressedEdwardsY(*b)
                    .decompress()
                    .is_some_and(|p| !p.is_small_order())
            })
            .inspect(|b| assert!(point(b).is_none(), "{}", hex::encode(b)))
            .count();
        assert!(large_order > 0);
    }
}
