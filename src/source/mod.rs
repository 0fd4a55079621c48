//! Where records come from: the gRPC API (`grpc`) and the built-in simulator
//! (`simulator`). Kinesis shard readers will join them (issue 6).

pub mod grpc;
pub mod kinesis;
pub mod simulator;
