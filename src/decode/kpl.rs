//! KPL aggregation: the Kinesis Producer Library packs many user records into one
//! Kinesis record as magic bytes, a protobuf `AggregatedRecord` and the MD5 of that
//! protobuf. Not a format but a wrapper around one: the Kinesis source calls
//! `deaggregate` and decodes each user record it returns. The messages are written by
//! hand (from the KPL's `messages.proto`) so that no `.proto` build step is needed.

use md5::{Digest, Md5};
use prost::Message;

use super::DecodeError;

const FORMAT: &str = "KPL aggregate";

/// What begins every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

const MD5_LEN: usize = 16;

#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// Index into `partition_key_table`.
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    /// Index into `explicit_hash_key_table`.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// The user records in a Kinesis record: those of a KPL aggregate, or the record itself
/// when it does not begin with the magic bytes (a producer that does not aggregate).
pub fn deaggregate(data: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let Some(rest) = data.strip_prefix(&MAGIC) else {
        return Ok(vec![data.to_vec()]);
    };
    let malformed = |reason: String| DecodeError::Malformed { format: FORMAT, reason };
    let Some(body_len) = rest.len().checked_sub(MD5_LEN) else {
        return Err(malformed(format!("{} bytes after the magic, fewer than the {MD5_LEN}-byte MD5", rest.len())));
    };
    let (body, checksum) = rest.split_at(body_len);
    if Md5::digest(body).as_slice() != checksum {
        return Err(malformed("the MD5 does not match the protobuf body".into()));
    }
    let aggregate = AggregatedRecord::decode(body).map_err(|e| malformed(format!("protobuf: {e}")))?;
    let keys = aggregate.partition_key_table.len();
    aggregate
        .records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            // Within the MD5 yet pointing outside the table: a producer bug, and the
            // Kinesis deaggregators refuse it as well.
            if record.partition_key_index >= keys as u64 {
                return Err(malformed(format!(
                    "record {index}: partition key index {} of a {keys}-key table",
                    record.partition_key_index
                )));
            }
            Ok(record.data)
        })
        .collect()
}

/// What a KPL producer writes for `records` (partition key, user record): the inverse
/// of [`deaggregate`]. rcfd only reads aggregates; tests and benches write them with
/// this, as a producer that packs many small records into one Kinesis record would.
pub fn aggregate<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut keys: Vec<String> = Vec::new();
    let records = records
        .into_iter()
        .map(|(key, data)| {
            let index = keys.iter().position(|k| k == key).unwrap_or_else(|| {
                keys.push(key.to_owned());
                keys.len() - 1
            });
            Record {
                partition_key_index: index as u64,
                explicit_hash_key_index: None,
                data: data.to_vec(),
                tags: Vec::new(),
            }
        })
        .collect();
    let body =
        AggregatedRecord { partition_key_table: keys, explicit_hash_key_table: Vec::new(), records }.encode_to_vec();
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&Md5::digest(&body));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aggregate_gives_back_its_user_records_in_order() {
        let first = br#"{"iotName": "DemoSensor", "iotValue": 14}"#;
        let second = b"2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
        let third = br#"{"iotName": "DemoSensor", "iotValue": 15}"#;
        let records = deaggregate(&aggregate([
            ("DemoSensor", &first[..]),
            ("eni-1235b8ca123456789", &second[..]),
            ("DemoSensor", &third[..]),
        ]))
        .expect("deaggregates");
        assert_eq!(records, [first.to_vec(), second.to_vec(), third.to_vec()]);
        assert_eq!(deaggregate(&aggregate([])).expect("an empty aggregate"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_record_without_the_magic_is_its_own_user_record() {
        let plain = br#"{"iotName": "DemoSensor", "iotValue": 14}"#;
        assert_eq!(deaggregate(plain).expect("passes through"), [plain.to_vec()]);
        assert_eq!(deaggregate(&[]).expect("passes through"), [Vec::<u8>::new()]);
    }

    #[test]
    fn a_wrong_md5_or_body_is_malformed() {
        let mut bytes = aggregate([("k", &b"payload"[..])]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        assert_eq!(
            deaggregate(&bytes).expect_err("refused").to_string(),
            "not valid KPL aggregate: the MD5 does not match the protobuf body"
        );
        let mut short = MAGIC.to_vec();
        short.extend_from_slice(&[0; 5]);
        assert_eq!(
            deaggregate(&short).expect_err("refused").to_string(),
            "not valid KPL aggregate: 5 bytes after the magic, fewer than the 16-byte MD5"
        );
        let body = [0x1A, 0x05, 0x08]; // records, 5 bytes long, holding only 1
        let mut truncated = MAGIC.to_vec();
        truncated.extend_from_slice(&body);
        truncated.extend_from_slice(&Md5::digest(body));
        assert!(deaggregate(&truncated)
            .expect_err("refused")
            .to_string()
            .starts_with("not valid KPL aggregate: protobuf: "));
        let stray = AggregatedRecord {
            partition_key_table: vec!["k".into()],
            explicit_hash_key_table: Vec::new(),
            records: vec![Record {
                partition_key_index: 3,
                explicit_hash_key_index: None,
                data: b"x".to_vec(),
                tags: Vec::new(),
            }],
        }
        .encode_to_vec();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&stray);
        bytes.extend_from_slice(&Md5::digest(&stray));
        assert_eq!(
            deaggregate(&bytes).expect_err("refused").to_string(),
            "not valid KPL aggregate: record 0: partition key index 3 of a 1-key table"
        );
    }
}
