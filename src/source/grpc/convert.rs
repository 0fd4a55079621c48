//! Between wire messages and the service's types, and from errors to gRPC statuses
//! whose message names the offending field.

use tonic::{Code, Status};

use super::proto;
use crate::detector::model::Direction;
use crate::detector::registry::RegistryError;
use crate::event::{Record, ScoredEvent};
use crate::service::scorer::RecordError;

pub fn record(wire: proto::Record) -> Record {
    Record {
        detector: wire.detector,
        entity: wire.entity,
        event_ms: wire.event_time_ms,
        values: wire.values,
        id: Some(wire.id).filter(|id| !id.is_empty()),
        source: None,
    }
}

pub fn scored_event(event: &ScoredEvent) -> proto::ScoredEvent {
    proto::ScoredEvent {
        id: event.id.clone(),
        detector: event.detector.clone(),
        entity: event.entity.clone(),
        event_time_ms: event.event_ms,
        ingested_at_ms: event.ingested_at,
        values: event.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        anomaly_score: event.anomaly_score,
        anomaly_grade: event.anomaly_grade,
        confidence: event.confidence,
        is_anomaly: event.is_anomaly,
        learning: event.learning,
        attribution: event
            .attribution
            .iter()
            .map(|(name, a)| {
                let direction = match a.direction {
                    Direction::High => "HIGH",
                    Direction::Low => "LOW",
                };
                (name.clone(), proto::Attribution { score: a.score, direction: direction.into(), strength: a.strength })
            })
            .collect(),
        expected_values: event.expected_values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        steps_back: u32::try_from(event.steps_back).unwrap_or(u32::MAX),
        starts_region: event.starts_region,
    }
}

/// The status code a record error would have as a whole call, and its documented name.
pub fn record_code(e: &RecordError) -> (Code, &'static str) {
    match e {
        RecordError::UnknownDetector(_)
        | RecordError::EmptyEntity
        | RecordError::UnknownFeature { .. }
        | RecordError::MissingFeature { .. }
        | RecordError::Infinite { .. }
        | RecordError::TooLarge { .. } => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        RecordError::Late(_) | RecordError::Future(_) => (Code::OutOfRange, "OUT_OF_RANGE"),
        RecordError::Internal(_) => (Code::Internal, "INTERNAL"),
    }
}

pub fn record_result(result: Result<&ScoredEvent, RecordError>) -> proto::RecordResult {
    let result = match result {
        Ok(event) => proto::record_result::Result::Event(scored_event(event)),
        Err(e) => proto::record_result::Result::Error(proto::RecordError {
            code: record_code(&e).1.to_owned(),
            message: e.to_string(),
        }),
    };
    proto::RecordResult { result: Some(result) }
}

pub fn registry_status(e: RegistryError) -> Status {
    let message = e.to_string();
    match e {
        RegistryError::UnknownDetector(_) | RegistryError::UnknownModel { .. } => Status::not_found(message),
        RegistryError::DetectorExists(_) => Status::already_exists(message),
        RegistryError::EmptyEntity => Status::invalid_argument(format!("entity: {message}")),
        RegistryError::Late { .. } | RegistryError::Future { .. } => Status::out_of_range(message),
        RegistryError::Model(_) => Status::invalid_argument(format!("snapshot: {message}")),
        RegistryError::Store(_) => Status::internal(message),
        // The API waits for lent models; this would be a bug, and retrying is safe.
        RegistryError::Lent { .. } => Status::unavailable(message),
    }
}

/// tonic rejects a request over `max_decoding_message_size` with OUT_OF_RANGE; the gRPC
/// spec (and our API) says RESOURCE_EXHAUSTED. The rejection happens before our
/// handlers run, so the status is rewritten on the way out, in the headers of a
/// trailers-only reply or in the trailers.
pub fn oversized_is_resource_exhausted(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let (mut parts, body) = response.into_parts();
    rewrite_oversized(&mut parts.headers);
    http::Response::from_parts(parts, tonic::body::Body::new(RewriteTrailers(body)))
}

fn rewrite_oversized(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() == Code::OutOfRange && status.message().starts_with("Error, decoded message length too large") {
        let exhausted =
            Status::resource_exhausted(format!("request message over grpc.max_message_bytes: {}", status.message()));
        // Only fails for a message that cannot be a header value; ours always can.
        let _ = exhausted.add_header(headers);
    }
}

struct RewriteTrailers(tonic::body::Body);

impl http_body::Body for RewriteTrailers {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        rewrite_oversized(&mut trailers);
                        http_body::Frame::trailers(trailers)
                    }
                    Err(data) => data,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_errors_carry_grpc_code_names() {
        let result = record_result(Err(RecordError::EmptyEntity));
        let Some(proto::record_result::Result::Error(e)) = result.result else { panic!("an error") };
        assert_eq!(e.code, "INVALID_ARGUMENT");
        assert_eq!(e.message, "entity: must not be empty");
        let late = record_result(Err(RecordError::Late("x".into())));
        let Some(proto::record_result::Result::Error(e)) = late.result else { panic!("an error") };
        assert_eq!(e.code, "OUT_OF_RANGE");
        let too_large = record_result(Err(RecordError::TooLarge { name: "v".into(), value: 2e36 }));
        let Some(proto::record_result::Result::Error(e)) = too_large.result else { panic!("an error") };
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("INVALID_ARGUMENT", "values.v = 2e36: magnitudes above 1e35 are not allowed")
        );
    }
}
