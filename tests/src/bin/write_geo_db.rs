//! Writes a GeoIP2-style country database for benchmarks and demos:
//! `write_geo_db OUT.mmdb CIDR=CC [CIDR=CC ...]`, for example
//! `write_geo_db geo.mmdb 127.0.0.0/8=DE`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: write_geo_db OUT.mmdb CIDR=CC [CIDR=CC ...]"))?;
    let pairs: Vec<(String, String)> = args
        .map(|a| {
            a.split_once('=')
                .map(|(c, cc)| (c.to_string(), cc.to_string()))
                .ok_or_else(|| anyhow::anyhow!("`{a}` is not CIDR=CC"))
        })
        .collect::<anyhow::Result<_>>()?;
    let entries: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(c, cc)| (c.as_str(), cc.as_str()))
        .collect();
    corridor_tests::geo::write_country_db(Path::new(&out), &entries)
}
