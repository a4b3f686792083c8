//! Owns the generated `corridor.v1` protobuf types and their descriptors.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/corridor.v1.rs"));

/// Encoded `FileDescriptorSet` of the `corridor.v1` package.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/corridor_descriptor.bin"));

/// The descriptor pool of `corridor.v1`, decoded once.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("descriptor set built by build.rs is valid")
    })
}
