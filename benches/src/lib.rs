//! Benchmarks live in `benches/` (criterion), `run.sh` (load tests) and
//! `xds_scale.sh` (the control-stream scale benchmark, whose helpers are here).

pub mod xds_scale;
