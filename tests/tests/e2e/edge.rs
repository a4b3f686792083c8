//! What a listener does to a request before routing: path normalization (a
//! prefix deny cannot be walked around), forwarding headers by policy and the
//! trusted client address, request ids end to end, error detail, and the
//! per-listener size limits on HTTP/1.1 and HTTP/2.

use bytes::Bytes;
use corridor_tests::{client, Client, Corridor, Upstream};
use http::Request;

use super::{fetch, fetch_get, Reply};

/// One listener (with `http` settings) routing `/admin...` to a 403 and everything else to `up`.
fn config(up: std::net::SocketAddr, http: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "{{{{LISTEN}}}}"
    route_table: t
    http: {{ {http} }}
admin: {{ address: "{{{{ADMIN}}}}", access_log: {{ enabled: true, format: json }} }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - name: deny
            match: {{ prefix: /admin }}
            direct_response: {{ status: 403, body: denied }}
          - name: from-doc
            match: {{ prefix: /whoami, client_cidrs: ["203.0.113.0/24"] }}
            direct_response: {{ status: 200, body: documentation-range }}
          - name: up
            match: {{ prefix: / }}
            route: {{ cluster: up }}
clusters:
  - {{ name: up, endpoints: [{{ address: "{up}" }}] }}
"#
    )
}

/// A new connection like `c` (an HTTP/1.1 connection is closed after a rejection).
async fn fresh(c: &Client, addr: std::net::SocketAddr) -> Client {
    match c.version() {
        http::Version::HTTP_2 => Client::h2c(addr).await.unwrap(),
        _ => Client::h1(addr).await.unwrap(),
    }
}

async fn get_with(c: &Client, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    fetch(c, req.body(client::empty()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_paths_route_and_forward_so_denies_cannot_be_walked_around() {
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr(), "")).await;
    for c in [
        Client::h1(proxy.addr).await.unwrap(),
        Client::h2c(proxy.addr).await.unwrap(),
    ] {
        for path in [
            "/admin",
            "//admin",
            "/public/../admin",
            "/%61dmin/x",
            "/%2e%2e/admin",
            "/x/./../admin/",
            "/x/%2E%2e/admin",
        ] {
            let r = fetch_get(&c, path).await;
            assert_eq!(
                (r.status, &r.body[..]),
                (403, &b"denied"[..]),
                "{path} over {:?}",
                c.version()
            );
        }
        for path in [
            "/admin%2fx",
            "/%2Fadmin",
            "/x%5c..%5cadmin",
            "/x%00",
            "/public/..;/admin",
        ] {
            let r = fetch_get(&fresh(&c, proxy.addr).await, path).await;
            assert_eq!(
                r.status,
                400,
                "{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.header("x-corridor-error"), "bad_request");
        }
        let r = fetch_get(&c, "//v1/.././%65cho?x=%2F&y=a/../b").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-echo-path"),
            "/echo?x=%2F&y=a/../b",
            "the query is left as sent"
        );
    }
    assert!(up.request_log().iter().all(|r| !r.path().contains("admin")));

    // Encoded slashes kept as data, by configuration.
    let proxy = Corridor::start(&config(
        up.addr(),
        "path_normalization: { escaped_slashes: keep, merge_slashes: false }",
    ))
    .await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch_get(&c, "//echo").await;
    assert_eq!(
        r.status, 404,
        "slashes are not merged: the upstream sees //echo"
    );
    let r = fetch_get(&c, "/x/../echo?p=a%2fb").await;
    assert_eq!(r.header("x-echo-path"), "/echo?p=a%2fb");
    let r = fetch_get(&c, "/admin%2fx").await;
    assert_eq!(
        r.status, 403,
        "an encoded slash is data: /admin%2Fx is still under /admin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_follow_the_listener_policy() {
    let up = Upstream::http1("up").await;
    let client_headers = [
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("host", "svc.example"),
    ];
    /// X-Forwarded-For, Forwarded, X-Forwarded-Proto and X-Forwarded-Host as the upstream sees them.
    type Seen<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    // (forwarding settings, what the upstream sees)
    let cases: &[(&str, Seen)] = &[
        (
            "",
            (
                Some("6.6.6.6, 127.0.0.1"),
                None,
                Some("http"),
                Some("svc.example"),
            ),
        ),
        (
            "mode: trusted, trusted_cidrs: [127.0.0.0/8]",
            (
                Some("6.6.6.6, 127.0.0.1"),
                Some("for=6.6.6.6"),
                Some("https"),
                Some("evil.example"),
            ),
        ),
        (
            "mode: trusted, trusted_cidrs: [10.0.0.0/8]",
            (Some("127.0.0.1"), None, Some("http"), Some("svc.example")),
        ),
        (
            "mode: replace",
            (Some("127.0.0.1"), None, Some("http"), Some("svc.example")),
        ),
        ("mode: strip", (None, None, None, None)),
    ];
    for (policy, (xff, fwd, proto, host)) in cases {
        let proxy =
            Corridor::start(&config(up.addr(), &format!("forwarding: {{ {policy} }}"))).await;
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = get_with(&c, "/echo", &client_headers).await;
        assert_eq!(r.status, 200, "{policy}");
        let seen = up.request_log().pop().unwrap();
        let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap());
        assert_eq!(h("x-forwarded-for"), *xff, "{policy}");
        assert_eq!(h("forwarded"), *fwd, "{policy}");
        assert_eq!(h("x-forwarded-proto"), *proto, "{policy}");
        assert_eq!(h("x-forwarded-host"), *host, "{policy}");
        assert_eq!(
            seen.headers.get_all("x-forwarded-for").iter().count(),
            usize::from(xff.is_some())
        );
    }

    // The trusted client address: only a trusted peer's X-Forwarded-For moves it, and routes
    // can match on it. 127.0.0.1 is the peer here.
    let trusted = Corridor::start(&config(
        up.addr(),
        "forwarding: { mode: trusted, trusted_cidrs: [127.0.0.1] }",
    ))
    .await;
    let append = Corridor::start(&config(up.addr(), "")).await;
    for (proxy, xff, doc) in [
        (&trusted, "198.51.100.1, 203.0.113.9", true),
        (&trusted, "203.0.113.9, 198.51.100.1", false),
        (&append, "198.51.100.1, 203.0.113.9", false),
    ] {
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = get_with(&c, "/whoami", &[("x-forwarded-for", xff)]).await;
        assert_eq!(
            r.body == "documentation-range",
            doc,
            "{xff}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert!(
        trusted
            .wait_for_log(
                "\"client\":\"203.0.113.9\"",
                std::time::Duration::from_secs(3)
            )
            .await,
        "the access log names the trusted client:\n{}",
        trusted.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_forwarded_returned_and_logged() {
    let up = Upstream::http1("up").await;
    let proxy = Corridor::start(&config(up.addr(), "")).await;
    let c = Client::h1(proxy.addr).await.unwrap();

    let r = fetch_get(&c, "/echo").await;
    let id = r.header("x-request-id").to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(
        up.request_log().pop().unwrap().headers["x-request-id"],
        id.as_str()
    );
    assert!(
        proxy
            .wait_for_log(
                &format!("\"request_id\":\"{id}\""),
                std::time::Duration::from_secs(3)
            )
            .await
    );

    // An untrusted client's id is replaced, upstream and in the response.
    let r = get_with(&c, "/echo", &[("x-request-id", "client-chosen")]).await;
    let id = r.header("x-request-id");
    assert_ne!(id, "client-chosen");
    assert_eq!(up.request_log().pop().unwrap().headers["x-request-id"], id);

    // Corridor's own errors carry it in the header and the body.
    let r = fetch_get(&Client::h1(proxy.addr).await.unwrap(), "/admin%2f").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["request_id"], r.header("x-request-id"));
    let r = fetch_get(&Client::h1(proxy.addr).await.unwrap(), "/admin").await;
    assert_eq!(r.header("x-request-id").len(), 36, "direct responses too");

    // Kept from trusted peers, or from anyone when the listener preserves external ids.
    for http in [
        "forwarding: { trusted_cidrs: [127.0.0.0/8] }",
        "request_id: { preserve_external: true }",
    ] {
        let proxy = Corridor::start(&config(up.addr(), http)).await;
        for c in [
            Client::h1(proxy.addr).await.unwrap(),
            Client::h2c(proxy.addr).await.unwrap(),
        ] {
            let r = get_with(&c, "/echo", &[("x-request-id", "client-chosen")]).await;
            assert_eq!(r.header("x-request-id"), "client-chosen", "{http}");
            assert_eq!(
                up.request_log().pop().unwrap().headers["x-request-id"],
                "client-chosen"
            );
            // A value that is not short printable text is never kept.
            let r = get_with(&c, "/echo", &[("x-request-id", "has space")]).await;
            assert_eq!(r.header("x-request-id").len(), 36, "{http}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_error_detail_reveals_only_the_type_and_request_id() {
    let up = Upstream::http1("up").await;
    let config = config(up.addr(), "error_detail: minimal")
        .replace("domains: [\"*\"]", "domains: [\"api.example\"]");
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = get_with(&c, "/secret/path", &[("host", "internal.example")]).await;
    assert_eq!(r.status, 404);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(
        body,
        format!(
            r#"{{"error":{{"type":"no_route","request_id":"{}"}}}}"#,
            r.header("x-request-id")
        )
    );
    // The same for requests Pingora could not parse.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /secret HTTP/1.1\r\nHost : internal.example\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        !out.contains("internal") && !out.contains("secret") && !out.contains("message"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_limits_apply_to_http1_and_http2() {
    let up = Upstream::http1("up").await;
    let limits = "max_request_headers_bytes: 2048, max_request_headers_count: 10, max_request_line_bytes: 256, max_request_body_bytes: 100";
    let proxy = Corridor::start(&config(up.addr(), limits)).await;
    for c in [
        Client::h1(proxy.addr).await.unwrap(),
        Client::h2c(proxy.addr).await.unwrap(),
    ] {
        let v = c.version();
        let many: Vec<(String, String)> =
            (0..12).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = get_with(&c, "/echo", &many).await;
        assert_eq!(
            (r.status, r.header("x-corridor-error")),
            (431, "request_headers_too_large"),
            "{v:?}"
        );
        let big = "b".repeat(3000);
        let c = fresh(&c, proxy.addr).await;
        assert_eq!(
            get_with(&c, "/echo", &[("x-big", &big)]).await.status,
            431,
            "{v:?}"
        );
        let c = fresh(&c, proxy.addr).await;
        assert_eq!(
            fetch_get(&c, &format!("/echo?{}", "q".repeat(300)))
                .await
                .status,
            414,
            "{v:?}"
        );
        // A declared length over the limit is refused before anything is forwarded ...
        let before = up.requests();
        let c = fresh(&c, proxy.addr).await;
        let r = fetch(
            &c,
            Request::post("/echo")
                .body(client::full(vec![b'x'; 200]))
                .unwrap(),
        )
        .await;
        assert_eq!(
            (r.status, r.header("x-corridor-error")),
            (413, "payload_too_large"),
            "{v:?}"
        );
        assert_eq!(up.requests(), before, "{v:?}");
        // ... a streamed one is cut off when it grows past it: the chunk that crosses the
        // limit is never forwarded, and the client does not get a success.
        let c = fresh(&c, proxy.addr).await;
        let received = up.bytes_received();
        let r = c
            .send(
                Request::post("/sink")
                    .body(client::repeat_chunked(Bytes::from(vec![b'x'; 64]), 4))
                    .unwrap(),
            )
            .await;
        // The proxy may also close the upload before the client finished sending it.
        if let Ok(resp) = r {
            assert_eq!(resp.status(), 413, "{v:?}");
        }
        up.wait_wire_quiet(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(2),
        )
        .await;
        let forwarded = up.bytes_received() - received;
        assert!(
            forwarded <= 100,
            "{v:?}: the upstream got {forwarded} body bytes"
        );
        // Within the limits everything passes.
        let c2 = fresh(&c, proxy.addr).await;
        let r = fetch(
            &c2,
            Request::post("/echo")
                .body(client::full(vec![b'x'; 100]))
                .unwrap(),
        )
        .await;
        assert_eq!((r.status, r.body.len()), (200, 100), "{v:?}");
    }
}

/// The body limit counts what the client sent, not what retries replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_bodies_are_not_counted_twice_against_the_body_limit() {
    let up = Upstream::http1("up").await;
    let config = super::single_route(
        &[(up.addr(), "")],
        "retry_policy: { num_retries: 2, retry_on: [retriable-status-codes], retriable_status_codes: [503], retry_non_idempotent: true, base_interval: 1ms, max_interval: 2ms }",
        "",
    )
    .replace(
        "    route_table: t\n",
        "    route_table: t\n    http: { max_request_body_bytes: 100 }\n",
    );
    let proxy = Corridor::start(&config).await;
    let c = Client::h1(proxy.addr).await.unwrap();
    let r = fetch(
        &c,
        Request::post("/status/503")
            .body(client::repeat_chunked(Bytes::from(vec![b'x'; 20]), 4))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-upstream"),
        "up",
        "the upstream's own 503 after the last try"
    );
    assert_eq!(up.requests(), 3);
}
