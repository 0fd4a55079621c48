//! CloudWatch Logs subscription envelopes, as a subscription filter writes them to a
//! Kinesis stream: gzip-compressed JSON holding a batch of log events. Each event's
//! message is decoded by an inner decoder (VPC flow logs, Apache lines, JSON) with the
//! event's timestamp as its arrival time. A CONTROL_MESSAGE (sent once to check the
//! stream can be written to) holds no log events and decodes to nothing.

use std::io::Read;

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};

use super::{BuildError, DecodeError, Decoded, Decoder, DecoderConfig};

const FORMAT: &str = "CloudWatch Logs envelope";

/// The most a decompressed envelope may hold. CloudWatch sends at most about 1 MB
/// compressed; a gzip bomb in a stream must not take the decoder's memory with it.
pub const MAX_DECOMPRESSED_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// The decoder for each log event's message, a table of its own:
    /// `inner = { format = "vpc_flow", entity = "interface-id" }`.
    pub inner: Box<DecoderConfig>,
}

pub struct CloudWatchDecoder {
    inner: Box<dyn Decoder>,
}

impl CloudWatchDecoder {
    pub fn new(config: &CloudWatchConfig) -> Result<Self, BuildError> {
        if let DecoderConfig::CloudWatch(_) = *config.inner {
            return Err(BuildError::BadSetting {
                field: "inner.format",
                value: "cloudwatch".into(),
                allowed: "json, vpc_flow or apache: a log event holds one message, not another envelope",
            });
        }
        Ok(CloudWatchDecoder { inner: config.inner.build()? })
    }
}

/// The envelope; `owner`, `logGroup`, `logStream` and `subscriptionFilters` are not
/// used, so not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    message_type: String,
    #[serde(default)]
    log_events: Vec<LogEvent>,
}

#[derive(Deserialize)]
struct LogEvent {
    /// Milliseconds since the epoch.
    timestamp: i64,
    message: String,
}

fn malformed(reason: String) -> Vec<Result<Decoded, DecodeError>> {
    vec![Err(DecodeError::Malformed { format: FORMAT, reason })]
}

impl Decoder for CloudWatchDecoder {
    fn decode(&self, data: &[u8], _arrival_ms: i64) -> Vec<Result<Decoded, DecodeError>> {
        let mut json = Vec::new();
        let mut limited = GzDecoder::new(data).take(MAX_DECOMPRESSED_BYTES + 1);
        if let Err(e) = limited.read_to_end(&mut json) {
            return malformed(format!("gzip: {e}"));
        }
        if json.len() as u64 > MAX_DECOMPRESSED_BYTES {
            return malformed(format!("more than {MAX_DECOMPRESSED_BYTES} bytes decompressed"));
        }
        let envelope: Envelope = match serde_json::from_slice(&json) {
            Ok(envelope) => envelope,
            Err(e) => return malformed(format!("JSON: {e}")),
        };
        match envelope.message_type.as_str() {
            "DATA_MESSAGE" => {}
            "CONTROL_MESSAGE" => return Vec::new(),
            other => {
                return vec![Err(DecodeError::BadField {
                    field: "messageType".into(),
                    value: other.chars().take(80).collect(),
                    allowed: "DATA_MESSAGE or CONTROL_MESSAGE".into(),
                })]
            }
        }
        envelope
            .log_events
            .iter()
            .flat_map(|event| self.inner.decode(event.message.as_bytes(), event.timestamp))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::decode::vpc_flow::{Field, VpcFlowConfig};

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(text.as_bytes()).expect("in memory");
        encoder.finish().expect("in memory")
    }

    fn vpc_inside() -> CloudWatchDecoder {
        let inner = DecoderConfig::VpcFlow(VpcFlowConfig { entity: Field::InterfaceId, ..VpcFlowConfig::default() });
        CloudWatchDecoder::new(&CloudWatchConfig { inner: Box::new(inner) }).expect("builds")
    }

    const FLOW_LOGS: &str = r#"{
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/vpc/flowlogs",
        "logStream": "eni-1235b8ca123456789-all",
        "subscriptionFilters": ["rcfd"],
        "logEvents": [
            {"id": "31953106606966983378809025079804211143289615424298221568", "timestamp": 1418530075000,
             "message": "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"},
            {"id": "31953106606966983378809025079804211143289615424298221569", "timestamp": 1418530076000,
             "message": "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1418530010 1418530070 - NODATA"},
            {"id": "31953106606966983378809025079804211143289615424298221570", "timestamp": 1418530077000,
             "message": "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 - 4249 - 1418530070 REJECT OK"},
            {"id": "31953106606966983378809025079804211143289615424298221571", "timestamp": 1418530078000,
             "message": "2 123456789010 eni-1235b8ca123456789 cut short"}
        ]
    }"#;

    #[test]
    fn each_log_event_is_decoded_by_the_inner_decoder() {
        let decoded = vpc_inside().decode(&gzip(FLOW_LOGS), 0);
        assert_eq!(decoded.len(), 3, "the NODATA event is no record: {decoded:?}");
        let first = decoded[0].as_ref().expect("decodes");
        assert_eq!(
            (first.entity.as_str(), first.event_ms, first.values["bytes"]),
            ("eni-1235b8ca123456789", 1_418_530_010_000, 4249.0)
        );
        let second = decoded[1].as_ref().expect("decodes");
        assert_eq!(second.event_ms, 1_418_530_077_000, "no start: the log event's timestamp");
        assert!(second.values["packets"].is_nan());
        assert!(matches!(decoded[2], Err(DecodeError::Malformed { format: "VPC flow log", .. })));
    }

    #[test]
    fn a_control_message_holds_nothing() {
        let control = r#"{"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "",
            "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": 1432826855000,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#;
        assert!(vpc_inside().decode(&gzip(control), 0).is_empty());
    }

    #[test]
    fn a_broken_envelope_is_one_malformed_error() {
        let err = |data: &[u8]| {
            let mut decoded = vpc_inside().decode(data, 0);
            assert_eq!(decoded.len(), 1);
            decoded.remove(0).expect_err("refused").to_string()
        };
        assert!(err(FLOW_LOGS.as_bytes()).starts_with("not valid CloudWatch Logs envelope: gzip: "));
        let mut truncated = gzip(FLOW_LOGS);
        truncated.truncate(truncated.len() / 2);
        assert!(err(&truncated).starts_with("not valid CloudWatch Logs envelope: gzip: "));
        assert!(err(&gzip(r#"{"messageType": "DATA_MESSAGE", "logEvents": [{"timestamp": "soon"}]}"#))
            .starts_with("not valid CloudWatch Logs envelope: JSON: "));
        assert_eq!(
            err(&gzip(r#"{"messageType": "DATA"}"#)),
            "field `messageType` = DATA: DATA_MESSAGE or CONTROL_MESSAGE"
        );
    }
}
