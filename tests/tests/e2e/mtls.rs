//! Downstream mTLS between clouds (D7): three clouds' CAs issue SPIFFE
//! identities (rcgen, at test time); a TLS listener verifies client
//! certificates against one trust bundle per trust domain, answers 403 to
//! identities a route does not allow, and forwards the verified identity in
//! `x-forwarded-client-cert`, which clients cannot forge. Unknown CAs,
//! certificates of one domain signed by another domain's CA, expired and
//! missing certificates never reach the upstream.

use std::sync::Arc;

use corridor_tests::{Client, Corridor, Leaf, TestPki, UpstreamProtocol};
use http::Version;

use super::{fetch, upstream};

/// The three clouds and a listener certificate from the OCI CA.
struct Clouds {
    aws: TestPki,
    gcp: TestPki,
    oci: TestPki,
}

impl Clouds {
    fn new() -> Self {
        Self {
            aws: TestPki::new("aws"),
            gcp: TestPki::new("gcp"),
            oci: TestPki::new("oci"),
        }
    }

    /// A client presenting `leaf`, trusting the listener's (OCI) CA.
    async fn client(&self, proxy: &Corridor, alpn: &[u8], leaf: &Leaf) -> anyhow::Result<Client> {
        let cfg = TestPki::client_config_presenting(&self.oci, &[alpn], leaf);
        Client::tls(proxy.addr, "proxy.test", cfg).await
    }
}

/// GET `path` with `headers`; the status, or `None` when the connection or
/// request failed (a refused client certificate surfaces either way in TLS 1.3).
async fn get(
    c: anyhow::Result<Client>,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let c = c.ok()?;
    let mut b = http::Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .send(b.body(corridor_tests::client::empty()).unwrap())
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = corridor_tests::client::read_all(resp.into_body())
        .await
        .ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn start(clouds: &Clouds, up: std::net::SocketAddr) -> Corridor {
    let server = clouds.oci.spiffe_leaf(
        "spiffe://oci.corridor/corridor/ingress",
        &["proxy.test"],
        false,
    );
    let files = clouds.oci.write_leaf(&server, "listener");
    let yaml = format!(
        r#"
listeners:
  - name: mtls
    address: "{{{{LISTEN}}}}"
    route_table: t
    tls:
      cert_file: "{cert}"
      key_file: "{key}"
      client_auth:
        required: true
        trust_bundles:
          - {{ trust_domain: aws.corridor, ca_file: "{aws}" }}
          - {{ trust_domain: gcp.corridor, ca_file: "{gcp}" }}
      forward_client_cert: sanitize_set
admin: {{ address: "{{{{ADMIN}}}}" }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        authorization: {{ allow: [{{ trust_domain: aws.corridor }}, {{ spiffe_id_prefix: "spiffe://gcp.corridor/ns/inference/" }}] }}
        routes:
          - match: {{ prefix: /admin-only/ }}
            authorization: {{ allow: [{{ spiffe_id: "spiffe://gcp.corridor/ns/ops/sa/admin" }}] }}
            route: {{ cluster: c, prefix_rewrite: / }}
          - match: {{ prefix: / }}
            route: {{ cluster: c }}
clusters: [{{ name: c, endpoints: [{{ address: "{up}" }}] }}]
"#,
        cert = files.chain.display(),
        key = files.key.display(),
        aws = clouds.aws.ca_path().display(),
        gcp = clouds.gcp.ca_path().display(),
    );
    Corridor::start(&yaml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_cloud_clients_are_verified_authorized_and_forwarded_over_h1_and_h2() {
    let clouds = Clouds::new();
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let proxy = start(&clouds, up.addr()).await;
    let aws = clouds
        .aws
        .spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/client", &[], false);
    let gcp = clouds
        .gcp
        .spiffe_leaf("spiffe://gcp.corridor/ns/inference/sa/worker", &[], false);
    for (alpn, version) in [
        (&b"h2"[..], Version::HTTP_2),
        (&b"http/1.1"[..], Version::HTTP_11),
    ] {
        for leaf in [&aws, &gcp] {
            let c = clouds.client(&proxy, alpn, leaf).await.unwrap();
            assert_eq!(c.version(), version);
            // A client's own copy is never forwarded.
            let forged = (
                "x-forwarded-client-cert",
                "By=spiffe://evil/x;URI=spiffe://aws.corridor/ns/ops/sa/admin",
            );
            let r = get(Ok(c), "/status/200", &[forged]).await;
            assert_eq!(r.map(|r| r.0), Some(200), "{alpn:?}");
        }
    }
    // What the upstream received: the verified identity, set by Corridor.
    let wire = up.wire_text().to_ascii_lowercase();
    let xfcc: Vec<&str> = wire
        .lines()
        .map(|l| l.trim_end().trim_end_matches("\\r\\n"))
        .filter(|l| l.starts_with("x-forwarded-client-cert:"))
        .collect();
    assert_eq!(xfcc.len(), 4, "{wire}");
    for (line, id) in xfcc.iter().zip([
        "spiffe://aws.corridor/ns/inference/sa/client",
        "spiffe://gcp.corridor/ns/inference/sa/worker",
        "spiffe://aws.corridor/ns/inference/sa/client",
        "spiffe://gcp.corridor/ns/inference/sa/worker",
    ]) {
        assert!(
            line.contains("by=spiffe://oci.corridor/corridor/ingress;hash="),
            "{line}"
        );
        assert!(line.ends_with(&format!(";uri={id}")), "{line}");
    }
    assert!(
        !wire.contains("spiffe://evil"),
        "the client's copy was removed"
    );

    // Each certificate in use publishes its expiry (rcgen's default: far away).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for name in [
        "listener/mtls",
        "bundle/mtls/aws.corridor",
        "bundle/mtls/gcp.corridor",
    ] {
        let at = proxy
            .metric("corridor_cert_expiry_seconds", &[("name", name)])
            .await;
        assert!(at > now + 365.0 * 86400.0, "{name}: {at}");
    }

    // Identities the route does not allow: 403, nothing forwarded.
    let before = up.requests();
    let r = get(
        clouds.client(&proxy, b"h2", &aws).await,
        "/admin-only/status/200",
        &[],
    )
    .await;
    let (status, body) = r.expect("an answer");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("forbidden") && body.contains("spiffe://aws.corridor/ns/inference/sa/client"),
        "{body}"
    );
    let outsider = clouds
        .gcp
        .spiffe_leaf("spiffe://gcp.corridor/ns/batch/sa/x", &[], false);
    let (status, _) = get(
        clouds.client(&proxy, b"http/1.1", &outsider).await,
        "/status/200",
        &[],
    )
    .await
    .expect("an answer");
    assert_eq!(
        status, 403,
        "gcp IDs outside ns/inference are not allowed on the host"
    );
    let admin = clouds
        .gcp
        .spiffe_leaf("spiffe://gcp.corridor/ns/ops/sa/admin", &[], false);
    let (status, _) = get(
        clouds.client(&proxy, b"h2", &admin).await,
        "/admin-only/status/200",
        &[],
    )
    .await
    .expect("an answer");
    assert_eq!(status, 200);
    assert_eq!(
        up.requests(),
        before + 1,
        "only the allowed request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_foreign_expired_and_missing_certificates_never_reach_the_upstream() {
    let clouds = Clouds::new();
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let proxy = start(&clouds, up.addr()).await;
    let evil = TestPki::new("evil");
    let cases: Vec<(&str, Option<Leaf>)> = vec![
        // A CA nobody trusts, issuing an ID of a trusted domain.
        (
            "unknown CA",
            Some(evil.spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/x", &[], false)),
        ),
        // The GCP CA issuing an AWS ID: each domain's bundle vouches for its own IDs only.
        (
            "another domain's CA",
            Some(
                clouds
                    .gcp
                    .spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/x", &[], false),
            ),
        ),
        // A domain this listener does not federate with.
        (
            "untrusted domain",
            Some(
                clouds
                    .oci
                    .spiffe_leaf("spiffe://oci.corridor/ns/inference/sa/x", &[], false),
            ),
        ),
        (
            "expired",
            Some(
                clouds
                    .aws
                    .spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/x", &[], true),
            ),
        ),
        // A certificate without a SPIFFE ID.
        ("no SPIFFE ID", Some(clouds.aws.leaf(&["client.test"]))),
        ("no certificate", None),
    ];
    for (what, leaf) in cases {
        for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
            let client = match &leaf {
                Some(l) => clouds.client(&proxy, alpn, l).await,
                None => {
                    Client::tls(proxy.addr, "proxy.test", clouds.oci.client_config(&[alpn])).await
                }
            };
            let r = get(client, "/status/200", &[]).await;
            assert!(r.is_none(), "{what}: {r:?}");
        }
    }
    assert_eq!(up.requests(), 0, "nothing reached the upstream");
    // A valid client still gets through after all that.
    let ok = clouds
        .aws
        .spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/client", &[], false);
    let (status, _) = get(clouds.client(&proxy, b"h2", &ok).await, "/status/200", &[])
        .await
        .expect("an answer");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_forge_the_forwarded_identity_on_a_plaintext_listener() {
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let yaml = format!(
        "{}route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\nclusters: [{{ name: c, endpoints: [{{ address: \"{}\" }}] }}]\n",
        super::HEAD,
        up.addr()
    );
    let proxy = Corridor::start(&yaml).await;
    let forged = (
        "x-forwarded-client-cert",
        "URI=spiffe://aws.corridor/ns/ops/sa/admin",
    );
    let r = get(Client::h1(proxy.addr).await, "/status/200", &[forged]).await;
    assert_eq!(r.map(|r| r.0), Some(200));
    let wire = up.wire_text().to_ascii_lowercase();
    assert!(wire.contains("get /status/200"), "{wire}");
    assert!(!wire.contains("x-forwarded-client-cert"), "{wire}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_bundle_rotates_on_reload_without_failing_a_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _x = super::exclusive().await;
    let clouds = Clouds::new();
    let aws2 = TestPki::new("aws-next");
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let server = clouds.oci.spiffe_leaf(
        "spiffe://oci.corridor/corridor/ingress",
        &["proxy.test"],
        false,
    );
    let files = clouds.oci.write_leaf(&server, "listener");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("aws-bundle.pem");
    let write_bundle = |cas: &[&TestPki]| {
        let pem: String = cas.iter().map(|c| c.ca_pem()).collect();
        let tmp = bundle.with_extension("tmp");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, &bundle).unwrap();
    };
    write_bundle(&[&clouds.aws]);
    let yaml = format!(
        r#"
listeners:
  - name: mtls
    address: "{{{{LISTEN}}}}"
    route_table: t
    tls:
      cert_file: "{cert}"
      key_file: "{key}"
      client_auth: {{ required: true, trust_bundles: [{{ trust_domain: aws.corridor, ca_file: "{bundle}" }}] }}
admin: {{ address: "{{{{ADMIN}}}}" }}
route_tables: [{{ name: t, virtual_hosts: [{{ domains: ["*"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]
clusters: [{{ name: c, endpoints: [{{ address: "{up}" }}] }}]
"#,
        cert = files.chain.display(),
        key = files.key.display(),
        bundle = bundle.display(),
        up = up.addr(),
    );
    let proxy = Arc::new(Corridor::start_with_dir(&yaml, dir).await);
    let old_leaf =
        clouds
            .aws
            .spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/client", &[], false);
    let new_leaf = aws2.spiffe_leaf("spiffe://aws.corridor/ns/inference/sa/client", &[], false);
    let old_cfg = TestPki::client_config_presenting(&clouds.oci, &[b"h2"], &old_leaf);
    let new_cfg = TestPki::client_config_presenting(&clouds.oci, &[b"h2"], &new_leaf);
    let ok = |cfg: Arc<rustls::ClientConfig>| {
        let proxy = Arc::clone(&proxy);
        async move {
            let c = Client::tls(proxy.addr, "proxy.test", cfg).await;
            matches!(get(c, "/status/200", &[]).await, Some((200, _)))
        }
    };
    // An established connection made with the old bundle.
    let kept = Client::tls(proxy.addr, "proxy.test", Arc::clone(&old_cfg))
        .await
        .unwrap();
    assert!(ok(Arc::clone(&old_cfg)).await);
    assert!(
        !ok(Arc::clone(&new_cfg)).await,
        "the new CA is not trusted yet"
    );

    // Steady load on new connections, each with the certificate its phase
    // uses; not one request may fail.
    let use_new = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (use_new, stop, sent, failed) =
            (use_new.clone(), stop.clone(), sent.clone(), failed.clone());
        let (old_cfg, new_cfg) = (Arc::clone(&old_cfg), Arc::clone(&new_cfg));
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let cfg = if use_new.load(Ordering::Relaxed) {
                    &new_cfg
                } else {
                    &old_cfg
                };
                let c = Client::tls(proxy.addr, "proxy.test", Arc::clone(cfg)).await;
                if !matches!(get(c, "/status/200", &[]).await, Some((200, _))) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Rotation step 1: both CAs; the clients move to the new certificate.
    write_bundle(&[&clouds.aws, &aws2]);
    proxy.signal(libc::SIGHUP);
    super::eventually("the new CA to be trusted", || ok(Arc::clone(&new_cfg))).await;
    use_new.store(true, Ordering::Relaxed);
    // Step 2: the old CA goes.
    write_bundle(&[&aws2]);
    proxy.signal(libc::SIGHUP);
    super::eventually("the old CA to be refused", || {
        let cfg = Arc::clone(&old_cfg);
        async move { !ok(cfg).await }
    })
    .await;
    let before = sent.load(Ordering::Relaxed);
    super::eventually("more load after the rotation", || {
        let sent = sent.clone();
        async move { sent.load(Ordering::Relaxed) > before + 5 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} requests",
        sent.load(Ordering::Relaxed)
    );
    // The connection made before the rotation finishes undisturbed.
    assert!(matches!(
        get(Ok(kept), "/status/200", &[]).await,
        Some((200, _))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_the_wrong_identity_receives_no_request_byte() {
    let aws = TestPki::new("aws");
    let model_id = "spiffe://aws.corridor/ns/inference/sa/model";
    // The right upstream requires Corridor's client certificate (mTLS).
    let right_leaf = aws.spiffe_leaf(model_id, &["model.aws.test"], false);
    let mut opts = corridor_tests::UpstreamOptions::new("right", UpstreamProtocol::TlsHttp1);
    opts.tls_config = Some(aws.server_config_mtls(&right_leaf, &[b"http/1.1"]));
    let right = corridor_tests::Upstream::start(opts).await;
    // The impostor: a valid chain and the right DNS name, the wrong SPIFFE ID.
    let mut opts = corridor_tests::UpstreamOptions::new("impostor", UpstreamProtocol::TlsHttp1);
    opts.tls = Some(aws.spiffe_leaf(
        "spiffe://aws.corridor/ns/other/sa/impostor",
        &["model.aws.test"],
        false,
    ));
    let impostor = corridor_tests::Upstream::start(opts).await;
    let client = aws.spiffe_leaf("spiffe://aws.corridor/corridor/egress", &[], false);
    let files = aws.write_leaf(&client, "egress");
    let tls = format!(
        "tls: {{ sni: model.aws.test, ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\", expected_identities: [\"{model_id}\"] }}",
        ca = aws.ca_path().display(),
        cert = files.chain.display(),
        key = files.key.display(),
    );
    let yaml = format!(
        r#"{head}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /right/ }}, route: {{ cluster: right, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /impostor/ }}, route: {{ cluster: impostor, prefix_rewrite: / }} }}
          - match: {{ prefix: /mixed/ }}
            route: {{ cluster: mixed, prefix_rewrite: /, retry_policy: {{ num_retries: 1, retry_on: [connect-failure] }} }}
clusters:
  - {{ name: right, endpoints: [{{ address: "{r}" }}], {tls}, health_checks: [{{ interval: 50ms, healthy_threshold: 1, http_health_check: {{ path: /healthz }} }}] }}
  - {{ name: impostor, endpoints: [{{ address: "{i}" }}], {tls} }}
  - {{ name: mixed, endpoints: [{{ address: "{i}" }}, {{ address: "{r}" }}], {tls} }}
"#,
        head = super::HEAD,
        r = right.addr(),
        i = impostor.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    // Health probes present the client certificate too: the endpoint
    // passes its checks (a new endpoint counts as failing until it does).
    super::eventually("a passing mTLS health check", || async {
        super::cluster_state(&proxy, "right").await["endpoints"][0]["health"] == "healthy"
    })
    .await;
    // The upstream client certificate's and CA's expiry are exported.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for name in ["cluster/right/client", "cluster/right/ca"] {
        let at = proxy
            .metric("corridor_cert_expiry_seconds", &[("name", name)])
            .await;
        assert!(at > now + 86400.0, "{name}: {at}");
    }
    let c = Client::h1(proxy.addr).await.unwrap();
    for _ in 0..3 {
        let r = super::fetch_get(&c, "/right/status/200").await;
        assert_eq!((r.status, r.header("x-upstream")), (200, "right"));
    }
    for _ in 0..3 {
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = super::fetch_get(&c, "/impostor/status/200").await;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 502, "{body}");
        assert!(
            body.contains("upstream_identity")
                && body.contains("spiffe://aws.corridor/ns/other/sa/impostor")
                && body.contains(model_id),
            "{body}"
        );
    }
    // With the impostor among the endpoints, a mismatch is a connect failure:
    // the retry goes to the right endpoint.
    for _ in 0..6 {
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = super::fetch_get(&c, "/mixed/status/200").await;
        assert_eq!((r.status, r.header("x-upstream")), (200, "right"));
    }
    assert_eq!(impostor.requests(), 0);
    // Each attempt connected (the handshake ran) and wrote nothing.
    let wire = impostor.wire_text();
    let conns: Vec<&str> = wire
        .lines()
        .filter(|l| l.starts_with("--- connection"))
        .collect();
    assert!(!conns.is_empty(), "{wire}");
    assert!(
        conns.iter().all(|l| l.ends_with("(0 bytes) ---")) && !wire.contains("GET"),
        "not one request byte may reach the impostor: {wire}"
    );
}

/// YAML for Secrets: `(name, Some(leaf))` is a `tls_certificate` with the
/// leaf's chain and key; `(name, None)` a `validation_context` of `ca`.
fn secrets_yaml(certs: &[(&str, &Leaf)], cas: &[(&str, &TestPki)]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut out = String::from("secrets:\n");
    for (name, leaf) in certs {
        out += &format!(
            "  - {{ name: {name}, tls_certificate: {{ certificate_chain: {}, private_key: {} }} }}\n",
            q(&leaf.chain_pem()),
            q(&leaf.key_pem)
        );
    }
    for (name, ca) in cas {
        out += &format!(
            "  - {{ name: {name}, validation_context: {{ trusted_ca: {} }} }}\n",
            q(ca.ca_pem())
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_pushed_on_the_control_stream_serve_mtls_both_ways_and_rotate_without_restart() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _x = super::exclusive().await;
    let clouds = Clouds::new();
    // The model upstream (AWS) requires a client certificate from the AWS CA.
    let model_id = "spiffe://aws.corridor/ns/inference/sa/model";
    let model_leaf = clouds.aws.spiffe_leaf(model_id, &["model.aws.test"], false);
    let mut opts = corridor_tests::UpstreamOptions::new("model", UpstreamProtocol::TlsHttp1);
    opts.tls_config = Some(clouds.aws.server_config_mtls(&model_leaf, &[b"http/1.1"]));
    let model = corridor_tests::Upstream::start(opts).await;
    let ingress_id = "spiffe://oci.corridor/corridor/ingress";
    let ingress = [
        clouds.oci.spiffe_leaf(ingress_id, &["proxy.test"], false),
        clouds.oci.spiffe_leaf(ingress_id, &["proxy.test"], false),
    ];
    let egress_id = "spiffe://aws.corridor/corridor/egress";
    let egress = [
        clouds.aws.spiffe_leaf(egress_id, &[], false),
        clouds.aws.spiffe_leaf(egress_id, &[], false),
    ];
    let secrets = |i: usize, e: usize| {
        secrets_yaml(
            &[("ingress", &ingress[i]), ("egress", &egress[e])],
            &[("aws-bundle", &clouds.aws)],
        )
    };
    let clusters = format!(
        "clusters:\n  - name: model\n    endpoints: [{{ address: \"{}\" }}]\n    tls: {{ sni: model.aws.test, ca_secret: aws-bundle, client_secret: egress, expected_identities: [\"{model_id}\"] }}\n",
        model.addr()
    );
    let routes = "route_tables: [{ name: t, virtual_hosts: [{ domains: [\"*\"], routes: [{ route: { cluster: model } }] }] }]\n";
    let cp = corridor_tests::ControlPlane::start(&[
        ("secrets.yaml", &secrets(0, 0)),
        ("clusters.yaml", &clusters),
        ("routes.yaml", routes),
    ])
    .await;
    // The listener comes from the file; its certificate and trust bundle
    // are Secrets it waits for.
    let bootstrap = format!(
        r#"
listeners:
  - name: mtls
    address: "{{{{LISTEN}}}}"
    route_table: t
    tls:
      secret: ingress
      client_auth: {{ required: true, trust_bundles: [{{ trust_domain: aws.corridor, secret: aws-bundle }}] }}
      forward_client_cert: sanitize_set
admin: {{ address: "{{{{ADMIN}}}}" }}
xds: {{ server: "{}", node_id: n1, initial_fetch_timeout: 3s }}
"#,
        cp.url()
    );
    let proxy = Arc::new(Corridor::start(&bootstrap).await);
    let client_leaf = clouds
        .aws
        .spiffe_leaf("spiffe://aws.corridor/ns/app/sa/client", &[], false);
    let cfg = TestPki::client_config_presenting(&clouds.oci, &[b"h2"], &client_leaf);
    // A resumed session shows the certificate of the session it resumes.
    let mut fresh = (*cfg).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let fresh = Arc::new(fresh);
    let served_cert = || {
        let cfg = Arc::clone(&fresh);
        let addr = proxy.addr;
        async move {
            Client::tls_peer_certificate(addr, "proxy.test", cfg)
                .await
                .ok()
        }
    };
    super::eventually("the listener to serve the pushed certificate", || async {
        served_cert().await.as_ref() == Some(&ingress[0].cert_der)
    })
    .await;
    let c = Client::tls(proxy.addr, "proxy.test", Arc::clone(&cfg)).await;
    assert_eq!(get(c, "/status/200", &[]).await.map(|r| r.0), Some(200));
    // Upstream mTLS with the pushed client certificate and roots; the
    // verified client identity is forwarded.
    assert_eq!(model.requests(), 1);
    let wire = model.wire_text();
    assert!(
        wire.contains("URI=spiffe://aws.corridor/ns/app/sa/client"),
        "{wire}"
    );

    // Rotation of both certificates under steady load on new connections.
    let kept = Client::tls(proxy.addr, "proxy.test", Arc::clone(&cfg))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let (cfg, addr) = (Arc::clone(&cfg), proxy.addr);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let c = Client::tls(addr, "proxy.test", Arc::clone(&cfg)).await;
                if !matches!(get(c, "/status/200", &[]).await, Some((200, _))) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    super::eventually("load to flow", || async {
        sent.load(Ordering::Relaxed) > 3
    })
    .await;
    cp.write("secrets.yaml", &secrets(1, 1));
    super::eventually("new connections to see the new certificate", || async {
        served_cert().await.as_ref() == Some(&ingress[1].cert_der)
    })
    .await;
    let before = sent.load(Ordering::Relaxed);
    super::eventually("more load after the rotation", || async {
        sent.load(Ordering::Relaxed) > before + 5
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} requests",
        sent.load(Ordering::Relaxed)
    );
    // The connection made before the rotation finishes undisturbed.
    assert_eq!(
        get(Ok(kept), "/status/200", &[]).await.map(|r| r.0),
        Some(200)
    );

    // A key that does not match its certificate passes the control plane's
    // checks (PEM that parses) and is NACKed by the proxy, naming the Secret;
    // the last good one keeps serving.
    let mut mismatched = ingress[1].clone();
    mismatched.key_pem.clone_from(&ingress[0].key_pem);
    let bad = secrets_yaml(
        &[("ingress", &mismatched), ("egress", &egress[1])],
        &[("aws-bundle", &clouds.aws)],
    );
    cp.write("secrets.yaml", &bad);
    let want = "secret:ingress#private_key: does not match the certificate in secret:ingress#certificate_chain";
    super::eventually("the NACK to reach the control plane", || async {
        cp.last_nacks().await.iter().any(|(_, m)| m.contains(want))
    })
    .await;
    assert!(
        proxy
            .metric(
                "corridor_xds_updates_total",
                &[("type", "Secret"), ("result", "nack")],
            )
            .await
            >= 1.0
    );
    // A Secret that is not PEM at all is refused by the control plane
    // itself (with its file and field) and never pushed.
    cp.write(
        "secrets.yaml",
        "secrets: [{ name: ingress, validation_context: { trusted_ca: nonsense } }]\n",
    );
    super::eventually("the control plane to report secrets.yaml", || async {
        cp.files()
            .await
            .contains("secrets[0].validation_context.trusted_ca: no PEM certificate")
    })
    .await;
    let c = Client::tls(proxy.addr, "proxy.test", Arc::clone(&cfg)).await;
    assert_eq!(get(c, "/status/200", &[]).await.map(|r| r.0), Some(200));
    assert_eq!(served_cert().await.as_ref(), Some(&ingress[1].cert_der));
    // The admin dump never shows a private key.
    let (_, dump) = proxy.admin_get("/config_dump").await;
    assert!(dump.contains("[redacted]"), "{dump}");
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a key leaked into /config_dump"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_stream_runs_over_mtls_and_both_ends_refuse_the_wrong_peer() {
    let _x = super::exclusive().await;
    let clouds = Clouds::new();
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let cp_id = "spiffe://oci.corridor/corridor/control-plane";
    let cp_leaf = clouds.oci.spiffe_leaf(cp_id, &[], false);
    let cp_files = clouds.oci.write_leaf(&cp_leaf, "control-plane");
    let resources = format!(
        "route_tables: [{{ name: t, virtual_hosts: [{{ domains: [\"*\"], routes: [{{ route: {{ cluster: c }} }}] }}] }}]\nclusters: [{{ name: c, endpoints: [{{ address: \"{}\" }}] }}]\n",
        up.addr()
    );
    let bundle = format!("aws.corridor={}", clouds.aws.ca_path().display());
    let cp = corridor_tests::ControlPlane::start_with_args(
        &[("all.yaml", &resources)],
        &[
            "--tls-cert",
            cp_files.chain.to_str().unwrap(),
            "--tls-key",
            cp_files.key.to_str().unwrap(),
            "--client-trust-bundle",
            &bundle,
        ],
    )
    .await;
    let url = format!("https://{}", cp.addr);
    // Sidecars with an AWS identity (trusted by the control plane), the GCP
    // one (not trusted), and one expecting another control-plane identity.
    let aws_leaf = clouds
        .aws
        .spiffe_leaf("spiffe://aws.corridor/corridor/sidecar", &[], false);
    let aws = clouds.aws.write_leaf(&aws_leaf, "sidecar");
    let gcp_leaf = clouds
        .gcp
        .spiffe_leaf("spiffe://gcp.corridor/corridor/sidecar", &[], false);
    let gcp = clouds.gcp.write_leaf(&gcp_leaf, "sidecar");
    let bootstrap = |node: &str, files: &corridor_tests::LeafFiles, expect: &str| {
        format!(
            "{head}xds:\n  server: \"{url}\"\n  node_id: {node}\n  initial_fetch_timeout: 1s\n  tls: {{ ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\", expected_identities: [\"{expect}\"] }}\n",
            head = super::HEAD,
            ca = clouds.oci.ca_path().display(),
            cert = files.chain.display(),
            key = files.key.display(),
        )
    };
    let good = Corridor::start(&bootstrap("good", &aws, cp_id)).await;
    let untrusted = Corridor::start(&bootstrap("untrusted", &gcp, cp_id)).await;
    let impostor_check = Corridor::start(&bootstrap(
        "picky",
        &aws,
        "spiffe://oci.corridor/corridor/other",
    ))
    .await;
    super::eventually("the trusted sidecar to be configured", || async {
        let c = Client::h1(good.addr).await.unwrap();
        super::fetch_get(&c, "/status/200").await.status == 200
    })
    .await;
    assert_eq!(
        good.metric("corridor_xds_connected", &[]).await,
        1.0,
        "{}",
        good.logs()
    );
    // The control plane knows the trusted node only.
    let nodes = cp.nodes().await;
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["good"], "{nodes}");
    // The control stream's certificates have their expiry exported too.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for name in ["xds/client", "xds/ca"] {
        let at = good
            .metric("corridor_cert_expiry_seconds", &[("name", name)])
            .await;
        assert!(at > now + 86400.0, "{name}: {at}");
    }
    // It shows who connected: the verified SPIFFE ID.
    assert_eq!(
        nodes["nodes"][0]["identity"], "spiffe://aws.corridor/corridor/sidecar",
        "{nodes}"
    );
    // The others retry and never get a configuration.
    super::eventually("both refusals to be logged", || async {
        cp.logs().contains("control plane TLS handshake failed")
            && impostor_check
                .logs()
                .contains("control plane identity: the upstream presented spiffe://oci.corridor/corridor/control-plane")
    })
    .await;
    for p in [&untrusted, &impostor_check] {
        assert_eq!(p.metric("corridor_xds_connected", &[]).await, 0.0);
        // Its listener still waits for its route table.
        assert!(Client::h1(p.addr).await.is_err());
        let (_, warming) = p.admin_get("/config_dump").await;
        assert!(warming.contains("route table t"), "{warming}");
    }
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residency_is_attested_by_the_upstream_certificate_identity() {
    let _x = super::exclusive().await;
    let aws = TestPki::new("aws");
    let mtls_upstream = |name: &'static str, id: &str| {
        let leaf = aws.spiffe_leaf(id, &["model.aws.test"], false);
        let mut opts = corridor_tests::UpstreamOptions::new(name, UpstreamProtocol::TlsHttp1);
        opts.tls_config = Some(aws.server_config_mtls(&leaf, &[b"http/1.1"]));
        corridor_tests::Upstream::start(opts)
    };
    let eu = mtls_upstream("eu", "spiffe://aws.corridor/eu/model").await;
    // Labelled EU, but its certificate says it runs in the US.
    let liar = mtls_upstream("liar", "spiffe://aws.corridor/us-east/model").await;
    let client = aws.spiffe_leaf("spiffe://aws.corridor/corridor/egress", &[], false);
    let files = aws.write_leaf(&client, "egress");
    let tls = format!(
        "tls: {{ sni: model.aws.test, ca_file: \"{ca}\", cert_file: \"{cert}\", key_file: \"{key}\" }}",
        ca = aws.ca_path().display(),
        cert = files.chain.display(),
        key = files.key.display(),
    );
    let yaml = format!(
        r#"{head}geo:
  jurisdictions: [EU, US]
  identity_jurisdictions:
    - {{ spiffe_id_prefix: "spiffe://aws.corridor/eu/", jurisdiction: EU }}
    - {{ trust_domain: aws.corridor, jurisdiction: US }}
residency_policies:
  - name: gdpr
    data_class_header: {{ header: x-data-class, trusted_from: [127.0.0.1] }}
    rules: [{{ data_classes: [pii], allowed_jurisdictions: [EU] }}, {{ data_classes: [public], allowed_jurisdictions: [EU, US] }}]
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        residency_policy: gdpr
        routes:
          - {{ match: {{ prefix: /liar/ }}, route: {{ cluster: liar, prefix_rewrite: / }} }}
          - match: {{ prefix: / }}
            route: {{ cluster: both, retry_policy: {{ num_retries: 2, retry_on: [connect-failure] }} }}
clusters:
  - {{ name: both, endpoints: [{{ address: "{l}", labels: {{ jurisdiction: EU }} }}, {{ address: "{e}", labels: {{ jurisdiction: EU }} }}], {tls} }}
  - {{ name: liar, endpoints: [{{ address: "{l}", labels: {{ jurisdiction: EU }} }}], {tls} }}
"#,
        head = super::HEAD,
        l = liar.addr(),
        e = eu.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    let get_as = |path: &'static str, class: &'static str| {
        let addr = proxy.addr;
        async move {
            let c = Client::h1(addr).await.unwrap();
            let req = http::Request::get(path)
                .header("x-data-class", class)
                .body(corridor_tests::client::empty())
                .unwrap();
            fetch(&c, req).await
        }
    };
    // Personal data reaches only the endpoint whose identity is in the EU;
    // the one whose label lies fails the attempt and the retry goes on.
    for _ in 0..6 {
        let r = get_as("/status/200", "pii").await;
        assert_eq!((r.status, r.header("x-upstream")), (200, "eu"));
    }
    let denied = proxy
        .metric(
            "corridor_residency_denied_total",
            &[("policy", "gdpr"), ("data_class", "pii")],
        )
        .await;
    assert!(denied >= 1.0, "round robin tried the liar at least once");
    let deny_lines = proxy
        .logs()
        .lines()
        .filter(|l| {
            l.contains("corridor::residency")
                && l.contains("decision=\"deny\"")
                && l.contains("endpoint_jurisdiction=\"US\"")
        })
        .count();
    assert_eq!(deny_lines as f64, denied, "{}", proxy.logs());
    // With nowhere else to go: 451, naming the identity and its jurisdiction.
    let r = get_as("/liar/status/200", "pii").await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 451, "{body}");
    assert!(
        body.contains("residency_attestation")
            && body.contains("spiffe://aws.corridor/us-east/model, which belongs to US"),
        "{body}"
    );
    assert_eq!(liar.requests(), 0, "no personal data reached the liar");
    // Public data may go to the US: the same endpoint serves it.
    let r = get_as("/liar/status/200", "public").await;
    assert_eq!((r.status, r.header("x-upstream")), (200, "liar"));
    assert_eq!(liar.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_and_a_forwarded_identity_from_a_trusted_hop() {
    let clouds = Clouds::new();
    let up = upstream("up", UpstreamProtocol::Http1).await;
    let server = clouds.oci.spiffe_leaf(
        "spiffe://oci.corridor/corridor/ingress",
        &["proxy.test"],
        false,
    );
    let files = clouds.oci.write_leaf(&server, "listener");
    let yaml = format!(
        r#"
listeners:
  - name: edge
    address: "{{{{LISTEN}}}}"
    route_table: t
    tls:
      cert_file: "{cert}"
      key_file: "{key}"
      client_auth: {{ required: false, trust_bundles: [{{ trust_domain: aws.corridor, ca_file: "{aws}" }}] }}
      forward_client_cert: forward_only
admin: {{ address: "{{{{ADMIN}}}}" }}
route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - match: {{ prefix: /secure/ }}
            authorization: {{ allow: [{{ trust_domain: aws.corridor }}] }}
            route: {{ cluster: c, prefix_rewrite: / }}
          - {{ match: {{ prefix: / }}, route: {{ cluster: c }} }}
clusters: [{{ name: c, endpoints: [{{ address: "{up}" }}] }}]
"#,
        cert = files.chain.display(),
        key = files.key.display(),
        aws = clouds.aws.ca_path().display(),
        up = up.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    const HOP: &str = "By=spiffe://aws.corridor/front;URI=spiffe://aws.corridor/ns/app/sa/user";
    let xfcc = &[("x-forwarded-client-cert", HOP)];
    // Without a certificate: served, but no identity (403 where one is
    // required) and a client-supplied header is not believed.
    let anonymous = || async {
        Client::tls(proxy.addr, "proxy.test", clouds.oci.client_config(&[b"h2"])).await
    };
    assert_eq!(
        get(anonymous().await, "/status/200", xfcc)
            .await
            .map(|r| r.0),
        Some(200)
    );
    let (status, body) = get(anonymous().await, "/secure/status/200", &[])
        .await
        .expect("an answer");
    assert_eq!(status, 403, "{body}");
    // A presented certificate must still verify.
    let stranger = TestPki::new("stranger").spiffe_leaf("spiffe://aws.corridor/x", &[], false);
    assert_eq!(
        get(
            clouds.client(&proxy, b"h2", &stranger).await,
            "/status/200",
            &[]
        )
        .await,
        None
    );
    // A verified hop (the trusted front proxy) passes its header on as is.
    let front = clouds
        .aws
        .spiffe_leaf("spiffe://aws.corridor/front", &[], false);
    assert_eq!(
        get(
            clouds.client(&proxy, b"h2", &front).await,
            "/secure/status/200",
            xfcc
        )
        .await
        .map(|r| r.0),
        Some(200)
    );
    let wire = up.wire_text().to_ascii_lowercase();
    let forwarded: Vec<&str> = wire
        .lines()
        .filter(|l| l.starts_with("x-forwarded-client-cert:"))
        .collect();
    assert_eq!(forwarded.len(), 1, "only the verified hop's copy: {wire}");
    assert!(forwarded[0].contains(&HOP.to_ascii_lowercase()), "{wire}");
    assert_eq!(up.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_with_the_wrong_identity_receives_no_request_byte() {
    let aws = TestPki::new("aws");
    let model_id = "spiffe://aws.corridor/ns/inference/sa/model";
    let mut opts = corridor_tests::UpstreamOptions::new("right", UpstreamProtocol::TlsH2);
    opts.tls = Some(aws.spiffe_leaf(model_id, &["model.aws.test"], false));
    let right = corridor_tests::Upstream::start(opts).await;
    let mut opts = corridor_tests::UpstreamOptions::new("impostor", UpstreamProtocol::TlsH2);
    opts.tls = Some(aws.spiffe_leaf(
        "spiffe://aws.corridor/ns/other/sa/impostor",
        &["model.aws.test"],
        false,
    ));
    let impostor = corridor_tests::Upstream::start(opts).await;
    let tls = format!(
        "protocol: h2, tls: {{ sni: model.aws.test, ca_file: \"{}\", expected_identities: [\"{model_id}\"] }}",
        aws.ca_path().display()
    );
    let yaml = format!(
        r#"{head}route_tables:
  - name: t
    virtual_hosts:
      - domains: ["*"]
        routes:
          - {{ match: {{ prefix: /right/ }}, route: {{ cluster: right, prefix_rewrite: / }} }}
          - {{ match: {{ prefix: /impostor/ }}, route: {{ cluster: impostor, prefix_rewrite: / }} }}
clusters:
  - {{ name: right, endpoints: [{{ address: "{r}" }}], {tls} }}
  - {{ name: impostor, endpoints: [{{ address: "{i}" }}], {tls} }}
"#,
        head = super::HEAD,
        r = right.addr(),
        i = impostor.addr(),
    );
    let proxy = Corridor::start(&yaml).await;
    for _ in 0..2 {
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = super::fetch_get(&c, "/right/status/200").await;
        assert_eq!((r.status, r.header("x-upstream")), (200, "right"));
        let c = Client::h1(proxy.addr).await.unwrap();
        let r = super::fetch_get(&c, "/impostor/status/200").await;
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 502, "{body}");
        assert!(body.contains("upstream_identity"), "{body}");
    }
    // The connection (TLS and the HTTP/2 preface) was made; no stream was
    // opened on it.
    assert_eq!(impostor.requests(), 0);
}

/// A TLS client for the three-cloud example: trusts `ca`, presents
/// `<dir>/svid.pem` (none when `dir` is `None`).
fn example_client(pki: &std::path::Path, ca: &str, dir: Option<&str>) -> Arc<rustls::ClientConfig> {
    let read = |p: std::path::PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &read(pki.join("bundles").join(ca))[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(corridor_tests::pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match dir {
        Some(d) => {
            let chain = rustls_pemfile::certs(&mut &read(pki.join(d).join("svid.pem"))[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &read(pki.join(d).join("svid.key"))[..])
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_three_cloud_example_routes_across_clouds_over_mtls() {
    let _x = super::exclusive().await;
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    corridor_tests::pki::write_three_clouds(pki).unwrap();
    let aws_model = upstream("aws-model", UpstreamProtocol::Http1).await;
    let azure_model = upstream("azure-model", UpstreamProtocol::Http1).await;
    let [ingress, aws_sidecar, azure_sidecar] = corridor_tests::proxy::free_addrs();
    // The example as checked in, with this test's PKI directory and ports.
    let swaps = [
        ("/tmp/corridor-pki".to_string(), pki.display().to_string()),
        ("127.0.0.1:8443".into(), ingress.to_string()),
        ("127.0.0.1:9443".into(), aws_sidecar.to_string()),
        ("127.0.0.1:9444".into(), azure_sidecar.to_string()),
        ("127.0.0.1:8000".into(), aws_model.addr().to_string()),
        ("127.0.0.1:8001".into(), azure_model.addr().to_string()),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/three-cloud");
    let files: Vec<(&str, String)> = ["oci-ingress.yaml", "aws-sidecar.yaml", "azure-sidecar.yaml"]
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            (
                f,
                swaps.iter().fold(text, |t, (from, to)| t.replace(from, to)),
            )
        })
        .collect();
    let file_refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let path = |p: &str| pki.join(p).display().to_string();
    let bundles: Vec<String> = ["oci", "aws", "azure"]
        .iter()
        .map(|c| format!("{c}.corridor={}", path(&format!("bundles/{c}.pem"))))
        .collect();
    let mut cp_args = vec![
        "--tls-cert".to_string(),
        path("control-plane/svid.pem"),
        "--tls-key".into(),
        path("control-plane/svid.key"),
    ];
    for b in &bundles {
        cp_args.extend(["--client-trust-bundle".to_string(), b.clone()]);
    }
    let cp_args: Vec<&str> = cp_args.iter().map(String::as_str).collect();
    let cp = corridor_tests::ControlPlane::start_with_args(&file_refs, &cp_args).await;
    let url = format!("https://{}", cp.addr);
    let node = |id: &'static str, svid: &'static str| {
        let args = [
            "--xds".to_string(),
            url.clone(),
            "--node-id".into(),
            id.into(),
            "--xds-ca-file".into(),
            path("bundles/oci.pem"),
            "--xds-cert-file".into(),
            path(&format!("{svid}/svid.pem")),
            "--xds-key-file".into(),
            path(&format!("{svid}/svid.key")),
            "--xds-identity".into(),
            "spiffe://oci.corridor/corridor/control-plane".into(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Corridor::start_with_args(
                "admin: { address: \"{{ADMIN}}\" }\n",
                tempfile::tempdir().unwrap(),
                &args,
            )
            .await
        }
    };
    let _oci = node("oci-ingress", "oci").await;
    let _aws = node("aws-sidecar", "aws").await;
    let _azure = node("azure-sidecar", "azure").await;

    let app = example_client(pki, "oci.pem", Some("client"));
    let call = |cfg: Arc<rustls::ClientConfig>,
                addr,
                name: &'static str,
                model: Option<&'static str>| async move {
        let c = Client::tls(addr, name, cfg).await.ok()?;
        let mut b = http::Request::get("/status/200");
        if let Some(m) = model {
            b = b.header("x-model", m);
        }
        let resp = c
            .send(b.body(corridor_tests::client::empty()).unwrap())
            .await
            .ok()?;
        let from = resp
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok());
        Some((resp.status().as_u16(), from.unwrap_or_default().to_string()))
    };
    super::eventually("the ingress to route to AWS", || async {
        call(
            Arc::clone(&app),
            ingress,
            "ingress.oci.corridor",
            Some("llama"),
        )
        .await
            == Some((200, "aws-model".into()))
    })
    .await;
    super::eventually("the ingress to route to Azure", || async {
        call(Arc::clone(&app), ingress, "ingress.oci.corridor", None).await
            == Some((200, "azure-model".into()))
    })
    .await;
    // The model sees the application's identity, passed on by its sidecar.
    let wire = aws_model.wire_text().to_ascii_lowercase();
    let xfcc = wire
        .lines()
        .find(|l| l.starts_with("x-forwarded-client-cert:"))
        .unwrap_or_else(|| panic!("no x-forwarded-client-cert: {wire}"));
    assert!(
        xfcc.contains("by=spiffe://oci.corridor/corridor/ingress;")
            && xfcc.contains("uri=spiffe://aws.corridor/ns/app/sa/chat"),
        "{xfcc}"
    );
    // No client certificate: refused by the ingress.
    let anonymous = example_client(pki, "oci.pem", None);
    assert_eq!(
        call(anonymous, ingress, "ingress.oci.corridor", None).await,
        None
    );
    // Past the ingress: an application cannot reach a sidecar (its domain
    // is not trusted there), and an OCI identity other than the ingress's is
    // refused (403).
    let direct = example_client(pki, "aws.pem", Some("client"));
    assert_eq!(
        call(direct, aws_sidecar, "sidecar.aws.corridor", None).await,
        None
    );
    let other_oci = example_client(pki, "aws.pem", Some("control-plane"));
    assert_eq!(
        call(other_oci, aws_sidecar, "sidecar.aws.corridor", None).await,
        Some((403, String::new()))
    );
    assert_eq!(aws_model.requests() + azure_model.requests(), 2);
}
