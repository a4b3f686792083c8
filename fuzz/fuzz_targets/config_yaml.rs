//! Configuration text (YAML, or JSON as a subset of YAML) through `load_str`:
//! parse, decode and compile must never panic; a config that compiles must
//! load again from its own `to_json` dump to the same version.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        corridor_fuzz::check_config(text);
    }
});
