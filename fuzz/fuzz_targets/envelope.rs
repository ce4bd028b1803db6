//! `wire::open_envelope` against a fixed three-node directory.
//!
//! The first byte picks the attacker:
//! - even: a network peer sending arbitrary bytes as an `Envelope`;
//! - odd: a compromised peer that holds a signing key of the federation,
//!   so the rest of the input is a payload it signs (the harness signs it
//!   with node AA's fixed key) and the fuzzer explores everything after the
//!   signature check: decoding, the canonical check, hops and validation.
//!
//! Invariants: nothing panics; an envelope that opens carries exactly the
//! bytes AA signed, and its origin is AA.

#![no_main]

use std::sync::OnceLock;

use alertrelay::crypto::signing::{Purpose, key_id_of};
use alertrelay::directory::{Directory, RawDirectory};
use alertrelay::identity::NodeId;
use alertrelay::pb;
use alertrelay::wire;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use prost::Message;

struct Fixture {
    directory: Directory,
    key: SigningKey,
    key_id: String,
    aa: NodeId,
    bb: NodeId,
    cc: NodeId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        use base64::Engine;
        // Fixed keys, so every crash reproduces.
        let keys: Vec<SigningKey> = (1u8..=3)
            .map(|b| SigningKey::from_bytes(&[b; 32]))
            .collect();
        let mut text = String::from("federation = \"fuzz\"\n");
        for (id, k) in ["AA", "BB", "CC"].iter().zip(&keys) {
            let vk = k.verifying_key();
            text.push_str(&format!(
                "[[node]]\nid = \"{id}\"\nendpoint = \"https://127.0.0.1:1\"\n\
                 [[node.key]]\nid = \"{}\"\npublic_key = \"{}\"\n",
                key_id_of(&vk),
                base64::engine::general_purpose::STANDARD.encode(vk.as_bytes())
            ));
        }
        let raw: RawDirectory = toml::from_str(&text).expect("fixture directory");
        let key = keys[0].clone();
        Fixture {
            directory: Directory::from_raw(raw, "fuzz").expect("fixture directory"),
            key_id: key_id_of(&key.verifying_key()),
            key,
            aa: NodeId::new("AA").expect("id"),
            bb: NodeId::new("BB").expect("id"),
            cc: NodeId::new("CC").expect("id"),
        }
    })
}

fn sign_as_aa(f: &Fixture, payload: &[u8]) -> pb::Signed {
    let mut msg = Purpose::Report.tag().to_vec();
    msg.extend_from_slice(payload);
    pb::Signed {
        payload: payload.to_vec(),
        signer: "AA".into(),
        key_id: f.key_id.clone(),
        signature: f.key.sign(&msg).to_bytes().to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (env, signed) = if mode % 2 == 0 {
        let Ok(env) = pb::Envelope::decode(rest) else {
            return;
        };
        (env, None)
    } else {
        let signed = sign_as_aa(f, rest);
        (
            pb::Envelope {
                report: Some(signed.clone()),
                hops: vec![],
            },
            Some(signed),
        )
    };
    for sender in [&f.aa, &f.bb] {
        if let Ok(opened) = wire::open_envelope(&env, sender, &f.cc, &f.directory, 0) {
            // Only AA's key is ever used to sign here: whatever opens was
            // signed by AA, and carries exactly the signed bytes.
            assert_eq!(opened.origin, f.aa);
            let report = env.report.as_ref().expect("opened, so present");
            assert_eq!(opened.payload_bytes, report.payload);
            if let Some(s) = &signed {
                assert_eq!(opened.payload_bytes, s.payload);
            }
        }
    }
});
