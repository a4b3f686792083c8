use super::*;
use crate::load::parse_bootstrap;

#[test]
fn reports_every_structural_error_with_position() {
    let text = r#"
listeners:
  - name: a
    adress: 127.0.0.1:80
    protocols: [http1, spdy]
clusters:
  - name: c
    connect_timeout: soon
    endpoints:
      - address: 127.0.0.1:1
        weight: -3
"#;
    let errs = parse_bootstrap(text, "f.yaml").unwrap_err();
    let lines: Vec<String> = errs.to_string().lines().map(str::to_string).collect();
    assert_eq!(errs.errors.len(), 4, "{errs}");
    assert_eq!(
        lines[0],
        "f.yaml:4:5: listeners[0].adress: unknown field `adress` in Listener; did you mean `address`?"
    );
    assert!(lines[1].starts_with("f.yaml:5:24: listeners[0].protocols[1]: unknown value `spdy`; expected one of: http1, h2c"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("f.yaml:8:22: clusters[0].connect_timeout: "),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("f.yaml:11:17: clusters[0].endpoints[0].weight: expected an unsigned 32-bit integer, found `-3`"), "{}", lines[3]);
}

#[test]
fn oneof_conflicts_and_duplicates_are_errors() {
    let text = "route_tables:\n  - name: t\n    virtual_hosts:\n      - domains: ['*']\n        routes:\n          - match: {prefix: /a, path: /b}\n            name: x\n            name: y\n";
    let errs = parse_bootstrap(text, "f").unwrap_err();
    let s = errs.to_string();
    assert!(s.contains("`path` and `prefix` cannot both be set"), "{s}");
    assert!(
        s.contains("field `name` is given twice (first at line 7)"),
        "{s}"
    );
}

#[test]
fn json_input_and_enum_case_and_durations() {
    let text = r#"{"clusters": [{"name": "c", "protocol": "H2C", "lbPolicy": "random", "connect_timeout": "250ms"}]}"#;
    let (b, _) = parse_bootstrap(text, "f.json").unwrap();
    let c = &b.clusters[0];
    assert_eq!(c.protocol(), crate::proto::cluster::Protocol::H2c);
    assert_eq!(c.lb_policy(), crate::proto::cluster::LbPolicy::Random);
    assert_eq!(c.connect_timeout.as_ref().unwrap().nanos, 250_000_000);
}

#[test]
fn duration_forms() {
    use std::time::Duration;
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
    assert!(parse_duration("3 fortnights").is_err());
}

#[test]
fn wrong_shapes_are_named() {
    let errs = parse_bootstrap("listeners: {name: a}\nclusters: [3]\n", "f").unwrap_err();
    let s = errs.to_string();
    assert!(
        s.contains("f:1:12: listeners: expected a list, found a mapping"),
        "{s}"
    );
    assert!(
        s.contains("f:2:12: clusters[0]: expected a mapping for Cluster, found a scalar"),
        "{s}"
    );
}
