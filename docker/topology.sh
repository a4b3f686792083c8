#!/usr/bin/env bash
# Usage: docker/topology.sh [--no-wait]
#
# Brings up a three-cloud Corridor topology on this one machine and prints curl commands
# to paste; Ctrl-C (or SIGTERM) tears it all down. Every piece is the real `corridor`
# binary, run as a native process bound to 127.0.0.1 (no containers: no compose engine is
# available where this was written; `docker/build.sh` builds the image for those who want
# them). Processes:
#
#   control plane   corridor control-plane over mTLS, serving resource files this script
#                   writes (and checks with `corridor validate --resources`) into a temp dir
#   edge ingress    corridor run --xds ... --role ingress (oci/us-ashburn-1): the entry
#                   point you curl, plain HTTP/1.1 and h2c
#   3 sidecars      corridor run --xds ... --role sidecar --cloud oci|aws|azure --region ...,
#                   each a mTLS listener in front of its cloud's model server
#   model servers   `corridor demo --upstreams O,A,Z`: the demo's built-in OpenAI-compatible
#                   upstreams (OCI us-ashburn-1, AWS us-east-1, Azure westeurope), which
#                   answer /v1/models and /v1/chat/completions naming the cloud that served
#                   (its own proxy listener is started too and not used)
#
# PKI (openssl, in the temp dir): one CA per trust domain (oci|aws|azure.corridor.test)
# and X.509-SVIDs (ECDSA P-256, one SPIFFE URI SAN). The edge calls each sidecar over
# mTLS presenting spiffe://oci.corridor.test/corridor/edge and pins the sidecar's SPIFFE ID
# and its cloud's CA; each sidecar accepts only the OCI bundle and only the edge's ID.
#
# Routing (header x-model at the edge): llama-* -> OCI, claude-* -> AWS, gpt-* -> AWS or
# Azure (a 50/50 split), mistral-* and phi-* -> Azure. Residency: `x-data-class: pii`
# (trusted from 127.0.0.1 only) may be served only in the EU (Azure westeurope, attested by
# its certificate's trust domain too); a model with no EU endpoint answers 451
# residency_denied.
#
# Options and environment:
#   --no-wait, TOPOLOGY_EXIT_AFTER_READY=1   tear down and exit 0 once ready and printed
#   CORRIDOR_BIN=PATH        the binary (default target/release/corridor, built with
#                            `cargo build --release --locked -p corridor-proxy` if missing)
#   TOPOLOGY_BASE_PORT=N     use ports N..N+14 (default: free ports picked at start)
#   TOPOLOGY_EDGE_PORT=P     the edge listener's port (default: from the above)
#   TOPOLOGY_READY_TIMEOUT=S seconds to wait for readiness (default 60)
# Prints `topology: ready` once everything answers; the ports are also written to
# $work/ports.env (KEY=VALUE) in the work dir it prints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

exit_after_ready="${TOPOLOGY_EXIT_AFTER_READY:-}"
for arg in "$@"; do
  case "$arg" in
    --no-wait) exit_after_ready=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "topology: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done
ready_timeout="${TOPOLOGY_READY_TIMEOUT:-60}"

log() { echo "topology: $*" >&2; }
die() {
  log "$*"
  exit 1
}

work="$(mktemp -d /tmp/corridor-topology.XXXXXX)"
pids=()
names=()
cleaned=""
cleanup() {
  [ -n "$cleaned" ] && return
  cleaned=1
  local i
  for i in "${!pids[@]}"; do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  # Corridor drains on SIGTERM (runtime.drain_timeout, 1 s here); give it 5 s in all.
  for _ in $(seq 50); do
    local alive=""
    for i in "${!pids[@]}"; do
      if kill -0 "${pids[$i]}" 2>/dev/null; then alive=1; fi
    done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      log "${names[$i]} (pid ${pids[$i]}) did not stop on SIGTERM; killing it"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The binary.
if [ -n "${CORRIDOR_BIN:-}" ]; then
  bin="$CORRIDOR_BIN"
else
  bin="$root/target/release/corridor"
  if [ ! -x "$bin" ]; then
    log "building $bin"
    cargo build --release --locked -p corridor-proxy --bin corridor
  fi
fi
[ -x "$bin" ] || die "$bin is not an executable"
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (apt-get install $tool)"
done

# 2. Ports: N..N+14, or free ones (held together while picked, then released).
port_keys=(EDGE EDGE_ADMIN CP CP_ADMIN OCI_SIDECAR OCI_SIDECAR_ADMIN AWS_SIDECAR
  AWS_SIDECAR_ADMIN AZURE_SIDECAR AZURE_SIDECAR_ADMIN OCI_MODEL AWS_MODEL AZURE_MODEL
  MODELS_DEMO MODELS_ADMIN)
if [ -n "${TOPOLOGY_BASE_PORT:-}" ]; then
  ports=()
  for i in "${!port_keys[@]}"; do ports+=("$((TOPOLOGY_BASE_PORT + i))"); done
else
  read -r -a ports < <(python3 - "$((${#port_keys[@]} + 1))" <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
  )
fi
if [ -n "${TOPOLOGY_EDGE_PORT:-}" ]; then
  rest=()
  for p in "${ports[@]:1}"; do [ "$p" != "$TOPOLOGY_EDGE_PORT" ] && rest+=("$p"); done
  ports=("$TOPOLOGY_EDGE_PORT" "${rest[@]}")
fi
declare -A port
for i in "${!port_keys[@]}"; do port[${port_keys[$i]}]="${ports[$i]}"; done
for k in "${port_keys[@]}"; do echo "$k=127.0.0.1:${port[$k]}"; done >"$work/ports.env"
a() { echo "127.0.0.1:${port[$1]}"; }

# 3. The PKI: one CA per cloud trust domain, an X.509-SVID per workload.
pki="$work/pki"
mkdir -p "$pki/bundles" "$pki/ca"
for cloud in oci aws azure; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/ca/$cloud.key.sec1" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$pki/ca/$cloud.key.sec1" -out "$pki/ca/$cloud.key"
  openssl req -x509 -new -key "$pki/ca/$cloud.key" -days 7 -sha256 \
    -subj "/O=Corridor topology/CN=$cloud.corridor.test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectAltName=URI:spiffe://$cloud.corridor.test" \
    -out "$pki/bundles/$cloud.pem" 2>/dev/null
done
# svid NAME CLOUD SPIFFE_PATH DNS: $pki/NAME/svid.pem (leaf, then CA) and svid.key.
svid() {
  local dir="$pki/$1" cloud="$2" id="spiffe://$2.corridor.test$3" dns="$4"
  mkdir -p "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/key.sec1" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$dir/key.sec1" -out "$dir/svid.key"
  rm -f "$dir/key.sec1"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=URI:$id,DNS:$dns" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$dir/ext.cnf"
  openssl req -new -key "$dir/svid.key" -subj "/O=Corridor topology/CN=$dns" -out "$dir/csr.pem"
  openssl x509 -req -in "$dir/csr.pem" -CA "$pki/bundles/$cloud.pem" -CAkey "$pki/ca/$cloud.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 7 -sha256 -extfile "$dir/ext.cnf" \
    -out "$dir/leaf.pem" 2>/dev/null
  cat "$dir/leaf.pem" "$pki/bundles/$cloud.pem" >"$dir/svid.pem"
  rm -f "$dir/csr.pem" "$dir/ext.cnf" "$dir/leaf.pem"
  echo "$id"
}
rm -f "$pki"/ca/*.sec1
cp_id="$(svid control-plane oci /corridor/control-plane control-plane.oci.corridor.test)"
edge_id="$(svid edge oci /corridor/edge edge.oci.corridor.test)"
declare -A sidecar_id
for cloud in oci aws azure; do
  sidecar_id[$cloud]="$(svid "$cloud-sidecar" "$cloud" /corridor/sidecar "sidecar.$cloud.corridor.test")"
done

# 4. What the control plane serves, and each proxy's bootstrap (what is never pushed).
declare -A region=([oci]=us-ashburn-1 [aws]=us-east-1 [azure]=westeurope)
declare -A jurisdiction=([oci]=US [aws]=US [azure]=EU)
declare -A upper=([oci]=OCI [aws]=AWS [azure]=AZURE)
staging="$work/staging"
mkdir -p "$staging" "$work/cp" "$work/logs"

cluster() { # cluster CLOUD: the edge's mTLS cluster to that cloud's sidecar
  local c="$1"
  cat <<EOF
  - name: models-$c
    connect_timeout: 2s
    endpoints:
      - address: "$(a "${upper[$c]}_SIDECAR")"
        locality: { cloud: $c, region: ${region[$c]} }
        labels: { jurisdiction: ${jurisdiction[$c]} }
    tls:
      sni: sidecar.$c.corridor.test
      ca_file: $pki/bundles/$c.pem                # only this cloud's CA
      cert_file: $pki/edge/svid.pem               # $edge_id
      key_file: $pki/edge/svid.key
      expected_identities: ["${sidecar_id[$c]}"]
EOF
}

route() { # route NAME MODEL_PREFIX TARGET: chat and models for one model family
  cat <<EOF
          - name: $1
            match: { prefix: /v1/, headers: [{ name: x-model, prefix: "$2" }] }
            route: { $3, timeout: 30s, retry_policy: { num_retries: 1, retry_on: [connect-failure, refused-stream], retry_non_idempotent: true } }
EOF
}

cat >"$staging/edge.yaml" <<EOF
# The edge ingress (role ingress, oci/us-ashburn-1): plain HTTP in, mTLS to the sidecars.
nodes: { roles: [ingress] }
listeners:
  - name: edge
    address: "$(a EDGE)"
    protocols: [http1, h2c]
    route_table: edge
residency_policies:
  - name: eu-data
    data_class_header: { header: x-data-class, trusted_from: ["127.0.0.1/32"] }
    rules:
      - { data_classes: [pii], allowed_jurisdictions: [EU] }
      - { data_classes: [public], allowed_jurisdictions: [EU, US] }
    unclassified: allow
route_tables:
  - name: edge
    virtual_hosts:
      - name: models
        domains: ["*"]
        residency_policy: eu-data
        routes:
$(route llama llama- "cluster: models-oci")
$(route claude claude- "cluster: models-aws")
$(route gpt gpt- "weighted_clusters: { clusters: [{ name: models-aws, weight: 1 }, { name: models-azure, weight: 1 }] }")
$(route mistral mistral- "cluster: models-azure")
$(route phi phi- "cluster: models-azure")
          - name: catalog
            match: { path: /v1/models }
            route: { cluster: models-oci }
          - name: unknown-model
            match: { prefix: / }
            direct_response:
              status: 404
              body: "{\"error\":{\"type\":\"unknown_model\",\"message\":\"set x-model to llama-*, claude-*, gpt-*, mistral-* or phi-*\"}}\n"
clusters:
$(cluster oci)
$(cluster aws)
$(cluster azure)
EOF

for c in oci aws azure; do
  cat >"$staging/sidecar-$c.yaml" <<EOF
# The $c sidecar (role sidecar, $c/${region[$c]}) in front of its model server: mTLS in,
# only the edge's identity allowed; the model sees who called (x-forwarded-client-cert).
nodes: { clouds: [$c], roles: [sidecar] }
listeners:
  - name: inbound
    address: "$(a "${upper[$c]}_SIDECAR")"
    route_table: inbound
    tls:
      cert_file: $pki/$c-sidecar/svid.pem        # ${sidecar_id[$c]}
      key_file: $pki/$c-sidecar/svid.key
      client_auth:
        required: true
        trust_bundles: [{ trust_domain: oci.corridor.test, ca_file: $pki/bundles/oci.pem }]
      forward_client_cert: sanitize_set
route_tables:
  - name: inbound
    virtual_hosts:
      - name: model
        domains: ["*"]
        authorization: { allow: [{ spiffe_id: "$edge_id" }] }
        response_headers:
          set: [{ name: x-corridor-sidecar, value: "${sidecar_id[$c]}" }]
        routes: [{ name: model, match: { prefix: / }, route: { cluster: model } }]
clusters:
  - name: model
    connect_timeout: 1s
    endpoints:
      - address: "$(a "${upper[$c]}_MODEL")"
        locality: { cloud: $c, region: ${region[$c]} }
EOF
done

bootstrap() { # bootstrap NODE_ID [EXTRA_YAML]: a proxy's own file (what is never pushed)
  cat >"$work/boot/$1.yaml" <<EOF
# Never pushed: the control stream, the process settings${2:+ and the geo tables}.
# The command line's --xds flags override xds (and add the node's metadata and TLS).
xds: { server: "https://$(a CP)", node_id: $1, initial_fetch_timeout: 15s }
runtime: { worker_threads: 1, drain_timeout: 1s }
${2:-}
EOF
}
mkdir -p "$work/boot"
bootstrap edge "geo:
  jurisdictions: [EU, US]
  identity_jurisdictions:                        # residency attested by the sidecar's SVID
    - { trust_domain: oci.corridor.test, jurisdiction: US }
    - { trust_domain: aws.corridor.test, jurisdiction: US }
    - { trust_domain: azure.corridor.test, jurisdiction: EU }"
for c in oci aws azure; do bootstrap "$c-sidecar"; done

"$bin" validate --resources "$staging"/*.yaml >"$work/validate.log" 2>&1 || {
  cat "$work/validate.log" >&2
  die "the resource files are invalid (above); nothing started"
}
"$bin" validate "$work"/boot/*.yaml >>"$work/validate.log" 2>&1 || {
  cat "$work/validate.log" >&2
  die "the bootstrap files are invalid (above); nothing started"
}
mv "$staging"/*.yaml "$work/cp/"
rmdir "$staging"

# 5. Start everything.
start() { # start NAME ARGS...: runs corridor ARGS in the background, logging to logs/NAME.log
  local name="$1"
  shift
  RUST_LOG="${RUST_LOG:-info}" "$bin" "$@" </dev/null >"$work/logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}
start models demo --listen "$(a MODELS_DEMO)" --admin "$(a MODELS_ADMIN)" \
  --upstreams "$(a OCI_MODEL),$(a AWS_MODEL),$(a AZURE_MODEL)"
start control-plane control-plane --dir "$work/cp" --listen "$(a CP)" --admin "$(a CP_ADMIN)" \
  --tls-cert "$pki/control-plane/svid.pem" --tls-key "$pki/control-plane/svid.key" \
  --client-trust-bundle "oci.corridor.test=$pki/bundles/oci.pem" \
  --client-trust-bundle "aws.corridor.test=$pki/bundles/aws.pem" \
  --client-trust-bundle "azure.corridor.test=$pki/bundles/azure.pem"
proxy() { # proxy NODE_ID ROLE CLOUD REGION ADMIN: corridor run on the control stream, over mTLS
  start "$1" run -c "$work/boot/$1.yaml" --xds "https://$(a CP)" --node-id "$1" \
    --role "$2" --cloud "$3" --region "$4" --admin "$5" \
    --xds-ca-file "$pki/bundles/oci.pem" --xds-identity "$cp_id" \
    --xds-cert-file "$pki/$1/svid.pem" --xds-key-file "$pki/$1/svid.key"
}
proxy edge ingress oci us-ashburn-1 "$(a EDGE_ADMIN)"
for c in oci aws azure; do
  proxy "$c-sidecar" sidecar "$c" "${region[$c]}" "$(a "${upper[$c]}_SIDECAR_ADMIN")"
done

# 6. Wait: every admin /ready, then one request per cloud through the edge.
deadline=$((SECONDS + ready_timeout))
alive_or_die() {
  local i
  for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    tail -n 30 "$work/logs/${names[$i]}.log" >&2 || true
    die "${names[$i]} exited (its log is above)"
  done
}
wait_for() { # wait_for WHAT CURL_ARGS...: until curl succeeds, or fail
  local what="$1"
  shift
  until curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null; do
    alive_or_die
    if [ "$SECONDS" -ge "$deadline" ]; then
      for f in "$work"/logs/*.log; do
        echo "--- $f" >&2
        tail -n 15 "$f" >&2
      done
      die "$what is not ready after ${ready_timeout}s (logs above)"
    fi
    sleep 0.2
  done
}
for k in MODELS_ADMIN CP_ADMIN EDGE_ADMIN OCI_SIDECAR_ADMIN AWS_SIDECAR_ADMIN AZURE_SIDECAR_ADMIN; do
  wait_for "$k /ready" "http://$(a "$k")/ready"
done
for m in llama-3-70b claude-3-5-sonnet mistral-large; do
  wait_for "the edge's route for $m" -H "x-model: $m" "http://$(a EDGE)/v1/models"
done

# 7. What to try.
E="http://$(a EDGE)"
chat() { echo "curl -s $E/v1/chat/completions -H 'x-model: $1'$2 -d '{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"; }
direct() { echo "curl -s --cacert $pki/bundles/azure.pem --cert $pki/$1/svid.pem --key $pki/$1/svid.key --resolve sidecar.azure.corridor.test:${port[AZURE_SIDECAR]}:127.0.0.1 https://sidecar.azure.corridor.test:${port[AZURE_SIDECAR]}/v1/models"; }
cat <<EOF

Corridor three-cloud topology ($bin)
  control plane   https://$(a CP) (mTLS)   admin http://$(a CP_ADMIN)   $cp_id
  edge ingress    http://$(a EDGE)          admin http://$(a EDGE_ADMIN)   $edge_id (oci/us-ashburn-1)
  oci sidecar     https://$(a OCI_SIDECAR) (mTLS)   admin http://$(a OCI_SIDECAR_ADMIN)   ${sidecar_id[oci]} -> model $(a OCI_MODEL) (us-ashburn-1, US)
  aws sidecar     https://$(a AWS_SIDECAR) (mTLS)   admin http://$(a AWS_SIDECAR_ADMIN)   ${sidecar_id[aws]} -> model $(a AWS_MODEL) (us-east-1, US)
  azure sidecar   https://$(a AZURE_SIDECAR) (mTLS)   admin http://$(a AZURE_SIDECAR_ADMIN)   ${sidecar_id[azure]} -> model $(a AZURE_MODEL) (westeurope, EU)
  model servers   corridor demo --upstreams (admin http://$(a MODELS_ADMIN); its proxy $(a MODELS_DEMO) is unused)
  work dir        $work (resource files in cp/, PKI in pki/, logs in logs/, ports.env; removed on exit)

Routing by x-model: llama-* -> OCI, claude-* -> AWS, gpt-* -> AWS or Azure (50/50), mistral-*/phi-* -> Azure.
Residency: x-data-class: pii (trusted from 127.0.0.1) is served only in the EU (Azure westeurope).

Try (each answer's served_by and x-upstream-cloud say which cloud served it):
  $(chat llama-3-70b "")          # oci/us-ashburn-1
  $(chat claude-3-5-sonnet "")    # aws/us-east-1
  $(chat gpt-4o "")               # aws/us-east-1 or azure/westeurope
  $(chat mistral-large "")        # azure/westeurope
  $(chat gpt-4o " -H 'x-data-class: pii'")   # always azure/westeurope
  $(chat llama-3-70b " -H 'x-data-class: pii'")   # 451 residency_denied: no EU endpoint serves llama
  curl -s $E/v1/chat/completions -H 'x-model: gpt-4o' -d '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"stream please"}]}'
  curl -si $E/v1/models -H 'x-model: phi-3' | grep -i x-corridor-sidecar   # the sidecar that answered
  $(direct edge)               # the edge's SVID: served
  $(direct control-plane)      # another OCI identity: 403 forbidden
  $(direct aws-sidecar)        # the AWS domain is not trusted here: handshake refused
  curl -s http://$(a EDGE_ADMIN)/metrics | grep -E 'corridor_residency_denied_total|corridor_requests_total'
  curl -s http://$(a CP_ADMIN)/nodes

EOF
echo "topology: ready"
if [ -n "$exit_after_ready" ]; then
  log "exiting (--no-wait)"
  exit 0
fi
echo "Press Ctrl-C to stop."
# Wait for SIGTERM (the trap above tears down) or for a process to end. Ctrl-C sends SIGINT
# to every process of the terminal's group: the proxies stop cleanly on it and bash then
# leaves its own INT trap unrun, so a clean exit is taken as the stop it is.
set +e
wait -n "${pids[@]}"
status=$?
set -e
if [ "$status" -eq 0 ]; then
  log "stopping"
  exit 0
fi
alive_or_die
