//! JSON-shaped configuration: the bytes as given (UTF-8), then, when they are
//! JSON, the value re-serialized by serde_json compactly (one line, flow
//! style throughout) and pretty-printed. The two re-serializations are the
//! same document, so they must both be rejected or compile to the same
//! version; each that compiles must survive the `to_json` round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        corridor_fuzz::check_config(text);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let compact = serde_json::to_string(&value).expect("a Value serializes");
    let pretty = serde_json::to_string_pretty(&value).expect("a Value serializes");
    let a = corridor_fuzz::check_config(&compact);
    let b = corridor_fuzz::check_config(&pretty);
    assert_eq!(
        a, b,
        "compact and pretty JSON of one value load differently\ncompact: {compact}"
    );
});
