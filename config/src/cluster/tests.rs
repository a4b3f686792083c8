use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::load::load_str;

#[test]
fn glob_patterns() {
    assert!(glob_match("gpt-*", "gpt-4o"));
    assert!(glob_match("gpt-*", "gpt-"));
    assert!(!glob_match("gpt-*", "claude-3"));
    assert!(glob_match("*-mini", "gpt-4o-mini"));
    assert!(glob_match("a?c*z", "abcxyz"));
    assert!(!glob_match("a?c", "ac"));
    assert!(glob_match("*", ""));
    assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
}

fn view<'a>(h: &'a HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
    static GET: Method = Method::GET;
    RequestView {
        method: &GET,
        path: "/",
        query,
        headers: h,
        client: None,
    }
}

#[test]
fn demo_subsets_pick_cloud_by_model_with_default_fallback() {
    let snap = load_str(include_str!("../../../examples/demo.yaml"), "demo").unwrap();
    let chat = snap.route_tables[0].virtual_hosts[0]
        .routes
        .iter()
        .find(|r| r.name.as_ref() == "chat")
        .unwrap();
    let crate::RouteAction::Forward(f) = &chat.action else {
        panic!()
    };
    let t = &f.targets[0];
    let c = snap.cluster(&t.cluster).unwrap();
    let cloud_of = |model: Option<&str>| -> Vec<String> {
        let mut h = HeaderMap::new();
        if let Some(m) = model {
            h.insert("x-model", HeaderValue::from_str(m).unwrap());
        }
        let set = t.candidates(c, &view(&h, None)).unwrap();
        set.iter()
            .map(|i| c.endpoints[i].locality.cloud.to_string())
            .collect()
    };
    assert_eq!(cloud_of(Some("gpt-4o")), ["azure"]);
    assert_eq!(cloud_of(Some("claude-3-5-sonnet")), ["aws"]);
    assert_eq!(cloud_of(Some("llama-3")), ["oci"]);
    assert_eq!(cloud_of(Some("mistral")), ["oci"]);
    assert_eq!(cloud_of(None), ["oci"]);
}

#[test]
fn fallbacks_none_and_any_and_query_source() {
    let text = r#"
listeners: [{ name: l, address: "127.0.0.1:1", route_table: t }]
clusters:
  - name: c
    endpoints:
      - { address: "127.0.0.1:2", labels: { gpu: h100 } }
      - { address: "127.0.0.1:3", labels: { gpu: a10 } }
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - name: none
            match: { prefix: /none }
            route: { cluster: c, subset: { from_request: [{ query_parameter: gpu, label: gpu }] } }
          - name: any
            route: { cluster: c, subset: { from_request: [{ header: x-gpu, label: gpu }], fallback: any } }
"#;
    let snap = load_str(text, "t").unwrap();
    let routes = &snap.route_tables[0].virtual_hosts[0].routes;
    let target = |i: usize| match &routes[i].action {
        crate::RouteAction::Forward(f) => f.targets[0].clone(),
        _ => panic!(),
    };
    let c = &snap.clusters.values().next().unwrap();
    let h = HeaderMap::new();
    let none = target(0);
    assert_eq!(
        none.candidates(c, &view(&h, Some("gpu=a10")))
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(
        none.candidates(c, &view(&h, Some("gpu=tpu"))),
        Err(SubsetError::Empty)
    );
    assert_eq!(none.candidates(c, &view(&h, None)), Err(SubsetError::Empty));
    let any = target(1);
    assert_eq!(any.candidates(c, &view(&h, None)).unwrap().len(), 2);
}
