//! Compiles the wire contract in `proto/` with protox (a pure-Rust protobuf
//! compiler), so building alertrelay never needs a system `protoc`.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/alertrelay/v1/federation.proto",
        "proto/alertrelay/v1/operator.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The descriptor set also feeds gRPC server reflection at run time.
    fs::write(out.join("alertrelay_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
