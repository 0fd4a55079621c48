//! Compiles the gRPC API (proto/rcfd/v1) with a protoc from crates.io, so a build needs
//! no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // The records' maps hold a few features each: a BTreeMap (what the service's
        // types use) decodes faster than a HashMap and moves into a record uncopied.
        .btree_map(".")
        // Server reflection serves this, so grpcurl needs no .proto files.
        .file_descriptor_set_path(out_dir.join("rcfd_descriptor.bin"))
        .compile_protos(&["proto/rcfd/v1/rcfd.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
