//! The gRPC API (proto/rcfd/v1/rcfd.proto): `api` implements the Scoring, Detectors and
//! Models services, `convert` maps between the wire messages and the service's types
//! (and errors to statuses), `auth` checks the bearer token. The server itself, with
//! health and reflection, is assembled in `crate::service::run`.

pub mod api;
pub mod auth;
pub mod convert;

/// The generated messages, servers and clients.
pub mod proto {
    tonic::include_proto!("rcfd.v1");
    /// Served by reflection, so grpcurl works without the .proto files.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rcfd_descriptor");
}
