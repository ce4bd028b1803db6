//! A report's signed payload as the store keeps it: once. The store holds
//! opaque bytes; what it means for the payload to be "inside the
//! envelope" is protobuf knowledge, and lives here. A new report's
//! `payload` column is empty when its envelope carries exactly its payload
//! bytes ([`payload_column`]); reading a row, [`StoredPayload::payload`]
//! finds the bytes in the envelope without copying, or takes the column
//! (rows of older versions, or payloads their envelope does not carry).

use crate::store::ReportRow;

/// What goes in a report row's `route` column: the route's kind,
/// destinations and reason, as JSON. The evidence and steps (about
/// 1.5 KiB per report, and the resolved host names) stay in the signed
/// payload only, which every view reads; the column is what remains of the
/// route once retention purges the payload (`store::rows::purged_route`).
pub fn route_column<D: std::fmt::Display>(kind: &str, destinations: &[D], reason: &str) -> String {
    let destinations: Vec<String> = destinations.iter().map(D::to_string).collect();
    serde_json::json!({"kind": kind, "destinations": destinations, "reason": reason}).to_string()
}

/// The origin's exact signed payload bytes of a stored report.
pub trait StoredPayload {
    /// The bytes the origin signed. They are stored once: in the envelope
    /// when it carries them (every report this version stores), in the
    /// `payload` column otherwise (rows of older versions). Empty once
    /// retention purged the report.
    fn payload(&self) -> &[u8];
}

impl StoredPayload for ReportRow {
    fn payload(&self) -> &[u8] {
        if self.stored_payload.is_empty() {
            envelope_payload(&self.envelope).unwrap_or_default()
        } else {
            &self.stored_payload
        }
    }
}

/// What goes in the `payload` column for a new report
/// (`store::NewReport::payload`): nothing when its envelope carries exactly
/// these bytes (the payload is then stored once, ~1.5 KiB less per
/// report), the bytes themselves otherwise.
pub fn payload_column<'a>(payload: &'a [u8], envelope: &[u8]) -> &'a [u8] {
    if !payload.is_empty() && envelope_payload(envelope) == Some(payload) {
        &[]
    } else {
        payload
    }
}

/// The report payload bytes inside an encoded `Envelope` (`report` = 1,
/// its `Signed.payload` = 1), found without copying. `None` unless each of
/// the two fields occurs exactly once in well-formed protobuf, so the
/// bytes are exactly what any decoder reads there.
fn envelope_payload(envelope: &[u8]) -> Option<&[u8]> {
    let report = only_bytes_field(envelope, 1)?;
    only_bytes_field(report, 1)
}

/// The single occurrence of length-delimited field `field` in `msg`.
fn only_bytes_field(mut msg: &[u8], field: u64) -> Option<&[u8]> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut found = None;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let len = match key & 7 {
            0 => {
                varint(&mut msg)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut msg)?).ok()?,
            5 => 4,
            _ => return None,
        };
        if len > msg.len() {
            return None;
        }
        let (value, rest) = msg.split_at(len);
        msg = rest;
        if key >> 3 == field {
            if key & 7 != 2 || found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found
}

/// The origin's signed correction a stored report shows, if any (the
/// latest by signed time: `node::amend` keeps it so).
pub fn applied_correction(row: &ReportRow) -> Option<crate::pb::Amendment> {
    use prost::Message;
    let signed = crate::pb::Signed::decode(row.correction.as_deref()?).ok()?;
    crate::pb::Amendment::decode(signed.payload.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload found in an envelope without decoding it is what prost
    /// decodes there, and anything ambiguous (a field twice, a field of the
    /// wrong type, truncation) finds nothing, so the column keeps it.
    #[test]
    fn the_payload_inside_an_envelope_is_found_exactly_or_not_at_all() {
        use crate::pb;
        use prost::Message;
        let signed = |payload: Vec<u8>| pb::Signed {
            payload,
            signer: "de-hotline".into(),
            key_id: "k".into(),
            signature: vec![1; 64],
            batch: None,
        };
        for len in [1usize, 127, 128, 300, 20_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            let env = pb::Envelope {
                report: Some(signed(payload.clone())),
                hops: vec![signed(b"hop one".to_vec()), signed(b"hop two".to_vec())],
            };
            let bytes = env.encode_to_vec();
            let decoded = pb::Envelope::decode(bytes.as_slice())
                .unwrap()
                .report
                .unwrap()
                .payload;
            assert_eq!(envelope_payload(&bytes), Some(decoded.as_slice()));
            assert_eq!(envelope_payload(&bytes), Some(payload.as_slice()));
            assert_eq!(envelope_payload(&bytes[..bytes.len() - 1]), None);
        }
        // Two `report` fields (a decoder merges them): not taken.
        let one = pb::Envelope {
            report: Some(signed(b"a".to_vec())),
            hops: vec![],
        }
        .encode_to_vec();
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(envelope_payload(&twice), None);
        // An empty payload is no field at all in protobuf: nothing found
        // (and an empty payload keeps its own, empty, column).
        let empty = pb::Envelope {
            report: Some(signed(Vec::new())),
            hops: vec![],
        }
        .encode_to_vec();
        assert_eq!(envelope_payload(&empty), None);
        // No report at all, or not protobuf.
        assert_eq!(
            envelope_payload(&pb::Envelope::default().encode_to_vec()),
            None
        );
        assert_eq!(envelope_payload(b"\x0b\x0c"), None);
        assert_eq!(envelope_payload(b""), None);
    }
}
