# shellcheck shell=bash
# Test PKI and config generators for benches/mtls.sh (sourced, not executed;
# needs lib/configs.sh sourced first for the shared nginx settings).
#
# Three "clouds", each with its own CA and SPIFFE trust domain:
#   aws.corridor  the client:   spiffe://aws.corridor/ns/bench/sa/client
#   oci.corridor  the proxy:    spiffe://oci.corridor/corridor/proxy, DNS proxy.bench
#                 (the listener's certificate and the client certificate it
#                 presents to the upstream)
#   gcp.corridor  the upstream: spiffe://gcp.corridor/ns/inference/sa/model,
#                 DNS model.gcp.bench; it accepts only oci.corridor clients
# plus an "evil" CA (not trusted by anyone) for the refusal checks.

MTLS_CLIENT_ID=spiffe://aws.corridor/ns/bench/sa/client
MTLS_PROXY_ID=spiffe://oci.corridor/corridor/proxy
MTLS_PROXY_DNS=proxy.bench
MTLS_UPSTREAM_ID=spiffe://gcp.corridor/ns/inference/sa/model
MTLS_UPSTREAM_DNS=model.gcp.bench

# _mtls_newkey KEY_TYPE: the -newkey/-pkeyopt arguments of `openssl req`
_mtls_newkey() {
    case $1 in
    ec256) echo "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" ;;
    rsa2048) echo "-newkey rsa:2048" ;;
    *) return 1 ;;
    esac
}

# _mtls_ca DIR NAME KEY_TYPE: DIR/NAME-ca.pem and DIR/NAME-ca.key, valid 30 days (Corridor warns about certificates that expire within 14)
_mtls_ca() {
    local dir=$1 name=$2 kt=$3
    # shellcheck disable=SC2046 # word splitting of the key options is intended
    openssl req -x509 -new $(_mtls_newkey "$kt") -nodes -days 30 \
        -subj "/O=corridor bench/CN=$name bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/$name-ca.key" -out "$dir/$name-ca.pem" 2>/dev/null
}

# _mtls_leaf DIR CA STEM KEY_TYPE SPIFFE_ID [DNS]: DIR/STEM.pem (the leaf
# alone), DIR/STEM.key (PKCS#8), signed by DIR/CA-ca.*; exactly one URI SAN
# (the SPIFFE ID), plus the DNS name when given; usable as server and client.
_mtls_leaf() {
    local dir=$1 ca=$2 stem=$3 kt=$4 id=$5 dns=${6:-} san
    san="URI:$id${dns:+,DNS:$dns}"
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$san" \
        "subjectKeyIdentifier=hash" \
        "authorityKeyIdentifier=keyid" >"$dir/$stem.ext"
    # shellcheck disable=SC2046 # word splitting of the key options is intended
    openssl req -new $(_mtls_newkey "$kt") -nodes -subj "/O=corridor bench/CN=${dns:-$stem}" \
        -keyout "$dir/$stem.key" -out "$dir/$stem.csr" 2>/dev/null &&
        openssl x509 -req -in "$dir/$stem.csr" -CA "$dir/$ca-ca.pem" -CAkey "$dir/$ca-ca.key" \
            -CAcreateserial -days 30 -extfile "$dir/$stem.ext" -out "$dir/$stem.pem" 2>/dev/null &&
        rm -f "$dir/$stem.csr" "$dir/$stem.ext"
}

# mtls_pki DIR KEY_TYPE: the whole test PKI (see the top of this file). Also
# client.haproxy.pem (certificate + key, haproxy's `crt` format).
mtls_pki() {
    local dir=$1 kt=$2 c
    _mtls_newkey "$kt" >/dev/null || return 1
    mkdir -p "$dir" && chmod 755 "$dir" || return 1
    for c in aws gcp oci evil; do _mtls_ca "$dir" "$c" "$kt" || return 1; done
    _mtls_leaf "$dir" aws client "$kt" "$MTLS_CLIENT_ID" || return 1
    _mtls_leaf "$dir" oci proxy "$kt" "$MTLS_PROXY_ID" "$MTLS_PROXY_DNS" || return 1
    _mtls_leaf "$dir" gcp upstream "$kt" "$MTLS_UPSTREAM_ID" "$MTLS_UPSTREAM_DNS" || return 1
    # The refusal checks: a trusted domain's ID from an untrusted CA.
    _mtls_leaf "$dir" evil evil "$kt" "$MTLS_CLIENT_ID" || return 1
    cat "$dir/client.pem" "$dir/client.key" >"$dir/client.haproxy.pem"
    # nginx workers may run as another user; nothing here outlives the run.
    chmod 644 "$dir"/*
}

# The upstream (nginx, one worker) on three ports:
#   PLAIN   HTTP/1.1                                  GET / -> 200 "hello\n"
#   TLS     HTTPS, client certificate required (oci CA)  GET / -> 200 "hello\n"
#   STATUS  stub_status (its "accepts" counts new connections from the proxies)
# write_mtls_upstream_conf FILE DIR ERRLOG PLAIN TLS STATUS PKI_DIR
write_mtls_upstream_conf() {
    local file=$1 dir=$2 errlog=$3 plain=$4 tls=$5 status=$6 pki=$7
    mkdir -p "$dir/tmp"
    {
        _nginx_common_main "$dir" "$errlog"
        echo "http {"
        _nginx_common_http "$dir"
        cat <<EOF
    default_type text/plain;

    server {
        listen 127.0.0.1:$plain backlog=4096;
        location / { return 200 "hello\n"; }
    }
    server {
        listen 127.0.0.1:$tls ssl backlog=4096;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate "$pki/upstream.pem";
        ssl_certificate_key "$pki/upstream.key";
        ssl_client_certificate "$pki/oci-ca.pem";
        ssl_verify_client on;
        ssl_session_cache shared:up:1m;
        location / { return 200 "hello\n"; }
    }
    server {
        listen 127.0.0.1:$status;
        location / { stub_status; }
    }
}
EOF
    } >"$file"
}

# The front helper (haproxy, one thread, on the load generator's CPU): turns
# h2load's plaintext keep-alive connections into connections to the proxy
# under test, plaintext (mode plain) or TLS presenting the client's
# certificate and verifying the proxy's (mode mtls), reused (`http-reuse
# always`, idle server connections kept 300 s). Its stats socket tells how
# many connections it opened to each proxy.
# write_mtls_front_conf FILE SOCK PKI_DIR SPEC...  (SPEC = name:listen_port:proxy_port:plain|mtls)
write_mtls_front_conf() {
    local file=$1 sock=$2 pki=$3 spec name listen port mode opts
    shift 3
    {
        haproxy_head mtls.sh "stats socket \"$sock\" mode 600 level admin"
        for spec in "$@"; do
            IFS=: read -r name listen port mode <<<"$spec"
            opts="pool-purge-delay 300s"
            if [[ $mode == mtls ]]; then
                opts="$opts ssl crt \"$pki/client.haproxy.pem\" ca-file \"$pki/oci-ca.pem\" verify required"
                opts="$opts sni str($MTLS_PROXY_DNS) verifyhost $MTLS_PROXY_DNS alpn http/1.1"
            fi
            cat <<EOF

frontend $name
    bind 127.0.0.1:$listen
    default_backend $name

backend $name
    server proxy 127.0.0.1:$port $opts
EOF
        done
    } >"$file"
}

# Corridor: a plaintext listener to a plaintext cluster, and an mTLS listener
# (client certificate required, SPIFFE trust bundle of aws.corridor only) to a
# cluster that presents the proxy's certificate to the upstream and accepts
# only the upstream's SPIFFE ID. One worker thread.
# write_mtls_corridor_conf FILE PKI_DIR PLAIN_PORT MTLS_PORT ADMIN UP_PLAIN UP_TLS XFCC
write_mtls_corridor_conf() {
    local file=$1 pki=$2 plain=$3 mtls=$4 admin=$5 up_plain=$6 up_tls=$7 xfcc=$8
    cat >"$file" <<EOF
# Generated by benches/mtls.sh
listeners:
  - name: plain
    address: 127.0.0.1:$plain
    protocols: [http1]
    route_table: plain
  - name: mtls
    address: 127.0.0.1:$mtls
    route_table: mtls
    tls:
      cert_file: "$pki/proxy.pem"          # $MTLS_PROXY_ID
      key_file: "$pki/proxy.key"
      alpn: ["http/1.1"]
      client_auth:
        required: true
        trust_bundles:
          - { trust_domain: aws.corridor, ca_file: "$pki/aws-ca.pem" }
      forward_client_cert: $xfcc
route_tables:
  - name: plain
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - { name: all, match: { prefix: / }, route: { cluster: up_plain } }
  - name: mtls
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - { name: all, match: { prefix: / }, route: { cluster: up_mtls } }
clusters:
  - name: up_plain
    protocol: http1
    endpoints:
      - address: 127.0.0.1:$up_plain
  - name: up_mtls
    protocol: http1
    endpoints:
      - address: 127.0.0.1:$up_tls
    tls:
      sni: $MTLS_UPSTREAM_DNS
      ca_file: "$pki/gcp-ca.pem"
      cert_file: "$pki/proxy.pem"
      key_file: "$pki/proxy.key"
      expected_identities: ["$MTLS_UPSTREAM_ID"]
admin:
  address: 127.0.0.1:$admin
runtime:
  worker_threads: 1
EOF
}

# Envoy, the same two paths. Downstream: require_client_certificate and
# Envoy's SPIFFE certificate validator with one trust domain (aws.corridor ->
# its CA), the equivalent of Corridor's trust_bundles. Upstream: the proxy's
# certificate, the upstream's CA and an exact match on its SPIFFE URI SAN.
# HTTP/1.1 on both sides, keep-alive 300 s, no access log, no request ids, no
# x-envoy-* headers, breakers out of the way (as lib/configs.sh). Run with
# `--concurrency 1`.
# write_mtls_envoy_conf FILE PKI_DIR PLAIN_PORT MTLS_PORT ADMIN UP_PLAIN UP_TLS XFCC
write_mtls_envoy_conf() {
    local file=$1 pki=$2 plain=$3 mtls=$4 admin=$5 up_plain=$6 up_tls=$7 xfcc=$8 fcc
    if [[ $xfcc == sanitize_set ]]; then
        fcc='forward_client_cert_details: SANITIZE_SET
                set_current_client_cert_details: { uri: true }'
    else
        fcc='forward_client_cert_details: SANITIZE'
    fi
    {
        cat <<EOF
# Generated by benches/mtls.sh
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $admin }
static_resources:
  listeners:
EOF
        _mtls_envoy_listener plain "$plain" up_plain "$fcc"
        _mtls_envoy_listener mtls "$mtls" up_mtls "$fcc"
        cat <<EOF
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                alpn_protocols: ["http/1.1"]
                tls_certificates:
                  - certificate_chain: { filename: "$pki/proxy.pem" }   # $MTLS_PROXY_ID
                    private_key: { filename: "$pki/proxy.key" }
                validation_context:
                  custom_validator_config:
                    name: envoy.tls.cert_validator.spiffe
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig
                      trust_domains:
                        - name: aws.corridor
                          trust_bundle: { filename: "$pki/aws-ca.pem" }
  clusters:
EOF
        _mtls_envoy_cluster up_plain "$up_plain"
        _mtls_envoy_cluster up_mtls "$up_tls"
        cat <<EOF
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: $MTLS_UPSTREAM_DNS
          common_tls_context:
            tls_params: { tls_maximum_protocol_version: TLSv1_3 }   # Envoy's client default is 1.2
            tls_certificates:
              - certificate_chain: { filename: "$pki/proxy.pem" }
                private_key: { filename: "$pki/proxy.key" }
            validation_context:
              trusted_ca: { filename: "$pki/gcp-ca.pem" }
              match_typed_subject_alt_names:
                - san_type: URI
                  matcher: { exact: "$MTLS_UPSTREAM_ID" }
EOF
    } >"$file"
}

# _mtls_envoy_listener NAME PORT CLUSTER FCC: one listener with one filter
# chain (left open: the caller may append the chain's transport_socket).
_mtls_envoy_listener() {
    local name=$1 port=$2 cluster=$3 fcc=$4
    cat <<EOF
    - name: $name
      address:
        socket_address: { address: 127.0.0.1, port_value: $port }
      tcp_backlog_size: 4096
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: $name
                codec_type: HTTP1
                generate_request_id: false
                $fcc
                stream_idle_timeout: 60s
                request_headers_timeout: 10s
                common_http_protocol_options:
                  idle_timeout: 300s
                route_config:
                  name: $name
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route: { cluster: $cluster, timeout: 0s }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                      suppress_envoy_headers: true
EOF
}

# _mtls_envoy_cluster NAME PORT [MAX_REQUESTS_PER_CONNECTION]: a STATIC
# HTTP/1.1 cluster (left open: the caller may append its transport_socket).
_mtls_envoy_cluster() {
    local name=$1 port=$2 max=""
    [[ -n ${3:-} ]] && max="
            max_requests_per_connection: $3"
    cat <<EOF
    - name: $name
      type: STATIC
      connect_timeout: 5s
      circuit_breakers:
        thresholds:
          - max_connections: 100000
            max_pending_requests: 100000
            max_requests: 100000
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          common_http_protocol_options:
            idle_timeout: 300s$max
          explicit_http_config:
            http_protocol_options: {}
      load_assignment:
        cluster_name: $name
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: $port }
EOF
}

# The full-handshake client (HS_CLIENT=envoy): an Envoy on the load
# generator's CPU that h2load reaches over plaintext keep-alive connections
# and that opens a NEW connection to the proxy under test for every request
# (max_requests_per_connection: 1), with a full TLS handshake (no session
# cache: max_session_keys: 0), presenting the client's certificate and
# checking the proxy's (oci CA, exact SPIFFE URI SAN). One listener and one
# cluster per proxy under test; the cluster's ssl.handshake and
# ssl.session_reused stats count the handshakes. BoringSSL is a much cheaper
# TLS client than Python or haproxy with OpenSSL 3.0, so this client can keep
# the proxy busy from one core.
# CURVES (comma-separated, e.g. X25519,P-256) are the key exchange groups it
# offers: without X25519MLKEM768 (Envoy's first choice), Envoy and Corridor
# (rustls with ring: no ML-KEM) run the same key exchange.
# write_mtls_hs_client_conf FILE PKI_DIR ADMIN CURVES SPEC...  (SPEC = name:listen_port:proxy_port)
write_mtls_hs_client_conf() {
    local file=$1 pki=$2 admin=$3 curves=$4 spec name listen port
    shift 4
    curves="[${curves//,/, }]"
    {
        cat <<EOF
# Generated by benches/mtls.sh: the full-handshake client
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $admin }
static_resources:
  listeners:
EOF
        for spec in "$@"; do
            IFS=: read -r name listen port <<<"$spec"
            _mtls_envoy_listener "hs_$name" "$listen" "hs_$name" "forward_client_cert_details: SANITIZE"
        done
        echo "  clusters:"
        for spec in "$@"; do
            IFS=: read -r name listen port <<<"$spec"
            _mtls_envoy_cluster "hs_$name" "$port" 1
            cat <<EOF
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: $MTLS_PROXY_DNS
          max_session_keys: 0
          common_tls_context:
            tls_params:
              tls_maximum_protocol_version: TLSv1_3   # Envoy's client default is 1.2
              ecdh_curves: $curves
            alpn_protocols: ["http/1.1"]
            tls_certificates:
              - certificate_chain: { filename: "$pki/client.pem" }   # $MTLS_CLIENT_ID
                private_key: { filename: "$pki/client.key" }
            validation_context:
              trusted_ca: { filename: "$pki/oci-ca.pem" }
              match_typed_subject_alt_names:
                - san_type: URI
                  matcher: { exact: "$MTLS_PROXY_ID" }
EOF
        done
    } >"$file"
}
