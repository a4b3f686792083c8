//! Compiles `proto/echo.proto` and `proto/grpc/health/v1/health.proto` into
//! the gRPC test services (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    println!("cargo:rerun-if-changed=proto/grpc/health/v1/health.proto");
    let fds = protox::compile(
        ["proto/echo.proto", "proto/grpc/health/v1/health.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
