//! Control-stream resources: arbitrary bytes decoded as each resource kind and
//! applied as one pushed change (upserts and removals) to a store holding the
//! demo configuration. Nothing may panic; see `corridor_fuzz::check_resources`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|pushed: Vec<corridor_fuzz::PushedResource>| {
    corridor_fuzz::check_resources(pushed);
});
