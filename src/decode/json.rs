//! JSON objects with a field mapping: which field is the entity, which hold feature
//! values, which (if any) the event time. The default is the reference scenario's
//! `{"iotName": "DemoSensor", "iotValue": 14}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DecodeError, Decoded, Decoder};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonConfig {
    /// Fields whose values, joined with `/`, name the entity.
    pub entity: Vec<String>,
    /// Feature name -> the JSON field holding it (a number, or a numeric string).
    pub values: BTreeMap<String, String>,
    /// A field with the event time: milliseconds since the epoch, or RFC 3339 text.
    /// Without it, the stream's arrival time.
    pub event_time: Option<String>,
}

impl Default for JsonConfig {
    fn default() -> Self {
        JsonConfig {
            entity: vec!["iotName".into()],
            values: BTreeMap::from([("iotValue".into(), "iotValue".into())]),
            event_time: None,
        }
    }
}

pub struct JsonDecoder {
    config: JsonConfig,
}

impl JsonDecoder {
    pub fn new(config: JsonConfig) -> Self {
        JsonDecoder { config }
    }

    fn one(&self, object: &serde_json::Map<String, Value>, arrival_ms: i64) -> Result<Decoded, DecodeError> {
        let mut entity = Vec::with_capacity(self.config.entity.len());
        for field in &self.config.entity {
            let part = match object.get(field) {
                None | Some(Value::Null) => return Err(DecodeError::MissingField { field: field.clone() }),
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(other) => return Err(bad(field, other, "a non-empty string or a number")),
            };
            entity.push(part);
        }
        let mut values = BTreeMap::new();
        for (feature, field) in &self.config.values {
            let value = match object.get(field) {
                None | Some(Value::Null) => f64::NAN,
                Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                Some(Value::String(s)) => {
                    s.trim().parse().map_err(|_| bad(field, &Value::String(s.clone()), "a number"))?
                }
                Some(other) => return Err(bad(field, other, "a number")),
            };
            values.insert(feature.clone(), value);
        }
        let event_ms = match &self.config.event_time {
            None => arrival_ms,
            Some(field) => match object.get(field) {
                None | Some(Value::Null) => return Err(DecodeError::MissingField { field: field.clone() }),
                Some(Value::Number(n)) => {
                    n.as_i64().ok_or_else(|| bad(field, &Value::Number(n.clone()), "milliseconds since the epoch"))?
                }
                Some(Value::String(s)) => {
                    rfc3339_ms(s).ok_or_else(|| bad(field, &Value::String(s.clone()), "RFC 3339 time"))?
                }
                Some(other) => return Err(bad(field, other, "milliseconds since the epoch or RFC 3339 time")),
            },
        };
        Ok(Decoded { entity: entity.join("/"), event_ms, values })
    }
}

fn bad(field: &str, value: &Value, allowed: &str) -> DecodeError {
    let mut shown = value.to_string();
    if shown.len() > 80 {
        shown.truncate(77);
        shown.push_str("...");
    }
    DecodeError::BadField { field: field.to_owned(), value: shown, allowed: allowed.to_owned() }
}

/// `2026-11-23T18:07:36Z` or with `.123` and a `+hh:mm` offset -> milliseconds.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        // Bytes and `get`, not string slices: the offset is input, and a multi-byte
        // character in it must be a failed parse, not a slice off a char boundary.
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let hours = rest.get(1..3)?.parse::<i64>().ok()?;
            sign * (hours * 60 + rest.get(4..6)?.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    let days = crate::calendar::days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis - offset_minutes * 60_000)
}

impl Decoder for JsonDecoder {
    fn decode(&self, data: &[u8], arrival_ms: i64) -> Vec<Result<Decoded, DecodeError>> {
        let parsed: Result<Value, _> = serde_json::from_slice(data);
        vec![match parsed {
            Ok(Value::Object(object)) => self.one(&object, arrival_ms),
            Ok(other) => Err(DecodeError::Malformed {
                format: "JSON",
                reason: format!("expected an object, got {}", kind(&other)),
            }),
            Err(e) => Err(DecodeError::Malformed { format: "JSON", reason: e.to_string() }),
        }]
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(config: JsonConfig, text: &str) -> Result<Decoded, DecodeError> {
        JsonDecoder::new(config).decode(text.as_bytes(), 1_000).remove(0)
    }

    #[test]
    fn the_reference_scenario_decodes_with_the_defaults() {
        let d = decode(JsonConfig::default(), r#"{"iotName": "DemoSensor", "iotValue": 14}"#).expect("decodes");
        assert_eq!(
            d,
            Decoded {
                entity: "DemoSensor".into(),
                event_ms: 1_000,
                values: BTreeMap::from([("iotValue".into(), 14.0)])
            }
        );
        let missing =
            decode(JsonConfig::default(), r#"{"iotName": "DemoSensor"}"#).expect("a missing value is imputed later");
        assert!(missing.values["iotValue"].is_nan());
    }

    #[test]
    fn bad_records_name_what_is_wrong() {
        let err = |text| decode(JsonConfig::default(), text).expect_err("refused").to_string();
        assert_eq!(err(r#"{"iotValue": 1}"#), "field `iotName` is missing");
        assert_eq!(err(r#"{"iotName": "a", "iotValue": "high"}"#), "field `iotValue` = \"high\": a number");
        assert_eq!(err(r#"[1, 2]"#), "not valid JSON: expected an object, got an array");
        assert!(err("{not json").starts_with("not valid JSON: "));
    }

    #[test]
    fn entity_fields_join_and_event_time_is_read() {
        let config = JsonConfig {
            entity: vec!["account".into(), "interface".into()],
            values: BTreeMap::from([("bytes".into(), "b".into())]),
            event_time: Some("ts".into()),
        };
        let d = decode(
            config.clone(),
            r#"{"account": 12, "interface": "eni-1", "b": "300", "ts": "2026-11-23T18:07:36.5Z"}"#,
        )
        .expect("decodes");
        assert_eq!(d.entity, "12/eni-1");
        assert_eq!(d.values["bytes"], 300.0);
        assert_eq!(d.event_ms, 1_795_457_256_500);
        let d = decode(config, r#"{"account": 1, "interface": "x", "b": 1, "ts": 1700000000000}"#).expect("decodes");
        assert_eq!(d.event_ms, 1_700_000_000_000);
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn a_time_with_a_multi_byte_character_in_its_offset_is_a_bad_field_not_a_panic() {
        for ts in
            ["2026-11-23T18:07:36+€ab", "2026-11-23T18:07:36+0€:", "2026-11-23T18:07:36é", "2026-11-23T18:07:36.€"]
        {
            assert_eq!(rfc3339_ms(ts), None, "{ts}");
        }
        let config = JsonConfig { event_time: Some("ts".into()), ..JsonConfig::default() };
        let record = r#"{"iotName": "a", "iotValue": 1, "ts": "2026-11-23T18:07:36+€ab"}"#;
        let err = decode(config, record).expect_err("a bad time").to_string();
        assert!(err.contains("ts") && err.contains("€"), "{err}");
    }
}
