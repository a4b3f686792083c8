//! Writes the three-cloud test PKI of the README's mTLS example:
//! `write_pki DIR` (for example `/tmp/corridor-pki`). Test material only:
//! the keys are written unencrypted.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: write_pki DIR"))?;
    corridor_tests::pki::write_three_clouds(std::path::Path::new(&dir))?;
    println!("wrote the oci, aws and azure CAs and SVIDs to {dir}");
    Ok(())
}
