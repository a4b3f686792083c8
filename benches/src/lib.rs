//! Benchmarks live in `benches/` (criterion) and `run.sh` (load tests).
