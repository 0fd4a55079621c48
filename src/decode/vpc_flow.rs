//! AWS VPC flow logs in the default (version 2) format: one record a line, 14 fields
//! separated by spaces, `-` where a field has no value. The entity is one of the fields
//! (the source address by default) and the features are its counters, so one model
//! learns each address's (or interface's) usual traffic. Custom formats (versions 3-5,
//! other field lists) are not read: their field count differs and is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DecodeError, Decoded, Decoder};

const FORMAT: &str = "VPC flow log";

/// The default format's fields, in order, as AWS names them.
pub const FIELDS: [&str; 14] = [
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// A field of the default format, spelt as AWS spells it. Typed rather than a string so
/// that a misspelt field is refused when the config is read, with the allowed names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    Version,
    AccountId,
    InterfaceId,
    Srcaddr,
    Dstaddr,
    Srcport,
    Dstport,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    Action,
    LogStatus,
}

impl Field {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        FIELDS[self.index()]
    }
}

/// A feature: a numeric field, or one derived from a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Version,
    Srcport,
    Dstport,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    /// `bytes / packets`: large transfers in few packets, or floods of tiny packets,
    /// stand out where either counter alone looks ordinary.
    BytesPerPacket,
    /// 1 when `action` is `REJECT`, else 0: a burst of rejected flows is a scan.
    Rejected,
}

impl Feature {
    /// The name the feature's value has in a decoded record.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Version => "version",
            Feature::Srcport => "srcport",
            Feature::Dstport => "dstport",
            Feature::Protocol => "protocol",
            Feature::Packets => "packets",
            Feature::Bytes => "bytes",
            Feature::Start => "start",
            Feature::End => "end",
            Feature::BytesPerPacket => "bytes_per_packet",
            Feature::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VpcFlowConfig {
    /// The field naming the entity: any of the 14 (`srcaddr`, `dstaddr`,
    /// `interface-id`, `account-id`, ...).
    pub entity: Field,
    /// Feature values, each named as written here: the numeric fields (`bytes`,
    /// `packets`, `srcport`, `dstport`, `protocol`, `start`, `end`, `version`) and the
    /// derived `bytes_per_packet` and `rejected`. A `-` field is a missing value (NaN),
    /// imputed later.
    pub features: Vec<Feature>,
}

impl Default for VpcFlowConfig {
    fn default() -> Self {
        VpcFlowConfig { entity: Field::Srcaddr, features: vec![Feature::Bytes, Feature::Packets] }
    }
}

pub struct VpcFlowDecoder {
    config: VpcFlowConfig,
}

impl VpcFlowDecoder {
    pub fn new(config: VpcFlowConfig) -> Self {
        VpcFlowDecoder { config }
    }

    /// `None` for a line that holds no flow: the header and NODATA/SKIPDATA records.
    fn one(&self, line: &str, arrival_ms: i64) -> Option<Result<Decoded, DecodeError>> {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        // Flow log files delivered to S3 begin with the field names.
        if fields.first() == Some(&"version") {
            return None;
        }
        if fields.len() != FIELDS.len() {
            let reason = format!("{} fields, expected {}: {}", fields.len(), FIELDS.len(), FIELDS.join(" "));
            return Some(Err(DecodeError::Malformed { format: FORMAT, reason }));
        }
        let field = |f: Field| fields[f.index()];
        match field(Field::LogStatus) {
            "OK" => {}
            // No traffic in the window, or records dropped by AWS for capacity: nothing
            // happened that a model could learn from, and nothing is wrong with the data,
            // so they are neither records nor dead letters.
            "NODATA" | "SKIPDATA" => return None,
            other => return Some(Err(bad(Field::LogStatus.name(), other, "OK, NODATA or SKIPDATA"))),
        }
        Some(self.flow(&fields, arrival_ms))
    }

    fn flow(&self, fields: &[&str], arrival_ms: i64) -> Result<Decoded, DecodeError> {
        let field = |f: Field| fields[f.index()];
        let entity = match field(self.config.entity) {
            "-" => return Err(DecodeError::MissingField { field: self.config.entity.name().to_owned() }),
            value => value.to_owned(),
        };
        let counter = |f: Field| -> Result<f64, DecodeError> {
            match field(f) {
                "-" => Ok(f64::NAN),
                text => text.parse::<u64>().map(|n| n as f64).map_err(|_| bad(f.name(), text, "a whole number or -")),
            }
        };
        let mut values = BTreeMap::new();
        for &feature in &self.config.features {
            let value = match feature {
                Feature::Version => counter(Field::Version)?,
                Feature::Srcport => counter(Field::Srcport)?,
                Feature::Dstport => counter(Field::Dstport)?,
                Feature::Protocol => counter(Field::Protocol)?,
                Feature::Packets => counter(Field::Packets)?,
                Feature::Bytes => counter(Field::Bytes)?,
                Feature::Start => counter(Field::Start)?,
                Feature::End => counter(Field::End)?,
                Feature::BytesPerPacket => {
                    let packets = counter(Field::Packets)?;
                    // A flow of zero packets has no bytes per packet: missing, not infinite.
                    if packets > 0.0 {
                        counter(Field::Bytes)? / packets
                    } else {
                        f64::NAN
                    }
                }
                Feature::Rejected => match field(Field::Action) {
                    "REJECT" => 1.0,
                    "ACCEPT" => 0.0,
                    "-" => f64::NAN,
                    other => return Err(bad(Field::Action.name(), other, "ACCEPT, REJECT or -")),
                },
            };
            values.insert(feature.name().to_owned(), value);
        }
        let start = counter(Field::Start)?;
        let event_ms = if start.is_nan() { arrival_ms } else { (start as i64).saturating_mul(1000) };
        Ok(Decoded { entity, event_ms, values })
    }
}

fn bad(field: &str, value: &str, allowed: &str) -> DecodeError {
    let mut shown = value.to_owned();
    if shown.len() > 80 {
        let mut end = 77;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    DecodeError::BadField { field: field.to_owned(), value: shown, allowed: allowed.to_owned() }
}

impl Decoder for VpcFlowDecoder {
    /// One record a line: a Kinesis record from CloudWatch or a file can hold several.
    fn decode(&self, data: &[u8], arrival_ms: i64) -> Vec<Result<Decoded, DecodeError>> {
        super::lines(data)
            .filter_map(|line| match line {
                Ok(line) => self.one(line, arrival_ms),
                Err(e) => Some(Err(DecodeError::Malformed { format: FORMAT, reason: e.to_string() })),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTED: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
    const REJECTED: &str = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
    const NODATA: &str = "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
    const SKIPDATA: &str = "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA";

    fn decode(config: VpcFlowConfig, text: &str) -> Vec<Result<Decoded, DecodeError>> {
        VpcFlowDecoder::new(config).decode(text.as_bytes(), 1_000)
    }

    #[test]
    fn a_flow_decodes_with_the_defaults() {
        let d = decode(VpcFlowConfig::default(), ACCEPTED).remove(0).expect("decodes");
        assert_eq!(
            d,
            Decoded {
                entity: "172.31.16.139".into(),
                event_ms: 1_418_530_010_000,
                values: BTreeMap::from([("bytes".into(), 4249.0), ("packets".into(), 20.0)]),
            }
        );
    }

    #[test]
    fn entity_and_features_follow_the_config() {
        let config: VpcFlowConfig = toml::from_str(
            r#"
            entity = "interface-id"
            features = ["bytes_per_packet", "dstport", "rejected"]
            "#,
        )
        .expect("parses");
        let decoded: Vec<Decoded> =
            decode(config, &format!("{ACCEPTED}\n{REJECTED}\n")).into_iter().map(|r| r.expect("decodes")).collect();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1].entity, "eni-1235b8ca123456789");
        assert_eq!(decoded[1].values["bytes_per_packet"], 4249.0 / 20.0);
        assert_eq!(decoded[1].values["dstport"], 3389.0);
        assert_eq!((decoded[0].values["rejected"], decoded[1].values["rejected"]), (0.0, 1.0));
        let wrong = toml::from_str::<VpcFlowConfig>(r#"features = ["account-id"]"#).expect_err("not a number to learn");
        assert!(wrong.to_string().contains("expected one of"), "{wrong}");
    }

    #[test]
    fn nodata_skipdata_and_the_header_are_not_records() {
        let header = FIELDS.join(" ");
        let file = format!("{header}\r\n{NODATA}\r\n\r\n{ACCEPTED}\r\n{SKIPDATA}\r\n");
        let decoded = decode(VpcFlowConfig::default(), &file);
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].as_ref().map(|d| d.entity.as_str()), Ok("172.31.16.139"));
        assert!(decode(VpcFlowConfig::default(), NODATA).is_empty());
    }

    #[test]
    fn placeholders_are_missing_values_or_a_missing_entity() {
        let line = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 - - - 1 - 4249 - - - OK";
        let config = VpcFlowConfig {
            features: vec![Feature::Bytes, Feature::Packets, Feature::BytesPerPacket, Feature::Rejected],
            ..VpcFlowConfig::default()
        };
        let d = decode(config.clone(), line).remove(0).expect("decodes");
        assert_eq!(d.values["bytes"], 4249.0);
        assert!(d.values["packets"].is_nan() && d.values["bytes_per_packet"].is_nan() && d.values["rejected"].is_nan());
        assert_eq!(d.event_ms, 1_000, "no start: the arrival time");
        let by_destination = VpcFlowConfig { entity: Field::Dstaddr, ..config };
        assert_eq!(decode(by_destination, line).remove(0), Err(DecodeError::MissingField { field: "dstaddr".into() }));
    }

    #[test]
    fn bad_lines_name_what_is_wrong_and_spoil_only_themselves() {
        let err = |text: &str| decode(VpcFlowConfig::default(), text).remove(0).expect_err("refused").to_string();
        assert_eq!(
            err("2 123456789010 eni-1 10.0.0.1 10.0.0.2 443 80 6 20"),
            "not valid VPC flow log: 9 fields, expected 14: version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
        );
        assert_eq!(err(&ACCEPTED.replace(" 4249 ", " 4k ")), "field `bytes` = 4k: a whole number or -");
        assert_eq!(err(&ACCEPTED.replace(" OK", " FAILED")), "field `log-status` = FAILED: OK, NODATA or SKIPDATA");
        let mixed = decode(VpcFlowConfig::default(), &format!("{ACCEPTED}\nnot a flow\n{REJECTED}"));
        assert_eq!(mixed.iter().map(Result::is_ok).collect::<Vec<_>>(), [true, false, true]);
        let mut bytes = ACCEPTED.as_bytes().to_vec();
        bytes.extend_from_slice(b"\n2 \xff\n");
        assert!(matches!(
            VpcFlowDecoder::new(VpcFlowConfig::default()).decode(&bytes, 0).as_slice(),
            [Ok(_), Err(DecodeError::Malformed { .. })]
        ));
    }
}
