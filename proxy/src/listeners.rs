//! Owns the downstream sockets and their accept loops. Listeners come and go
//! with the configuration: a new one binds its socket before the change is
//! committed (so a port in use rejects the change), a removed one stops
//! accepting and drains (idle keep-alive connections close, requests in
//! flight finish), and a changed one swaps its TLS or HTTP settings for new
//! connections while keeping its socket. Each connection is handed to the
//! listener's `Lean` application: Corridor's lean forwarding path, with a
//! Pingora `HttpProxy` running Corridor's `ProxyHttp` for what it hands over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use corridor_config::{ConfigError, FieldPath, Files, Snapshot};
use parking_lot::Mutex;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::listeners::ALPN;
use pingora_core::protocols::http::v2::server::default_h2_options;
use pingora_core::protocols::l4::stream::{L4BufferSettings, Stream as L4Stream};

/// Bytes of a downstream connection's write buffer: room for a typical
/// response header and small JSON body together.
const DOWNSTREAM_WRITE_BUFFER: usize = 8 * 1024;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use rustls::sign::CertifiedKey;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::identity::{not_after, IdentityCallback, SpiffeClientVerifier};
use crate::proxy::{Corridor, Lean};
use crate::routing::{ListenerRuntime, Routing};
use crate::shared::Shared;
use crate::tls::{load_certified_key, ReloadableCert};

/// How long a TLS handshake may take (Pingora's listener uses the same).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// `accept` error when the process is out of file descriptors.
const EMFILE: i32 = 24;
/// Pending connections a listener queues (Pingora's `LISTENER_BACKLOG`).
const LISTEN_BACKLOG: i32 = 65535;

/// What a listener's socket and connection handling depend on; a change to
/// any of these makes a new accept loop (on the same socket when the address
/// is the same).
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    address: SocketAddr,
    /// ALPN offered, when TLS is terminated.
    tls_alpn: Option<Vec<Arc<str>>>,
    /// Client certificate verification (bundles are read when the loop starts).
    client_auth: Option<corridor_config::ClientAuth>,
    h2c: bool,
    /// The HTTP/2 codec's bound on a header list.
    h2_header_list: u32,
}

impl Spec {
    fn of(l: &corridor_config::Listener) -> Spec {
        let limits = &l.http.limits;
        let list = 2 * (limits.max_headers_bytes + 32 * limits.max_headers_count);
        Spec {
            address: l.address,
            tls_alpn: l.tls.as_ref().map(|t| t.alpn.clone()),
            client_auth: l.tls.as_ref().and_then(|t| t.client_auth.clone()),
            h2c: l.tls.is_none() && l.protocols.h2c,
            h2_header_list: list.clamp(64 * 1024, 4 * 1024 * 1024) as u32,
        }
    }
}

/// A socket before and after its accept loop starts.
enum Socket {
    /// Bound, not accepting yet (the runtime has not started).
    Bound(std::net::TcpListener),
    /// Accepting in the runtime.
    Running(Arc<tokio::net::TcpListener>),
    /// Moved to the listener that replaced this one.
    Gone,
}

/// A listener being served.
struct Active {
    spec: Spec,
    socket: Socket,
    app: Arc<Lean>,
    /// The TLS acceptor new connections use (a bundle change replaces it).
    acceptor: Arc<ArcSwapOption<Acceptor>>,
    cert: Option<Arc<ReloadableCert>>,
    /// The client certificate verifier (mTLS), whose bundles a reload swaps.
    verifier: Option<Arc<SpiffeClientVerifier>>,
    /// The certificate and key files its certificate was read from.
    tls_files: TlsFiles,
    /// Flipped to stop accepting and to end keep-alive on its connections.
    stop: watch::Sender<bool>,
    /// Flipped when a drain runs out of time: open connections are closed.
    kill: watch::Sender<bool>,
    /// The listener's latest state, for its connections once it is removed.
    current: Arc<ArcSwap<ListenerRuntime>>,
}

/// The certificate and key files of a TLS listener.
type TlsFiles = Option<(Arc<str>, Arc<str>)>;

/// A new certificate for a kept listener: its name, resolver, key and files.
type NewKey = (Arc<str>, Arc<ReloadableCert>, Arc<CertifiedKey>, TlsFiles);

/// Listener changes worked out and sockets bound, not yet in effect.
pub(crate) struct Prepared {
    start: Vec<(Arc<str>, Active)>,
    stop: Vec<Arc<str>>,
    /// New certificates for kept listeners.
    keys: Vec<NewKey>,
    /// New acceptors for kept mTLS listeners whose trust bundles changed.
    acceptors: Vec<(Arc<str>, Arc<Acceptor>, Arc<SpiffeClientVerifier>)>,
    /// Whether a served certificate differs from before.
    pub(crate) certs_changed: bool,
}

#[derive(Default)]
struct State {
    handle: Option<Handle>,
    shutting_down: bool,
    active: HashMap<Arc<str>, Active>,
}

/// Every listener socket of the process.
pub(crate) struct Listeners {
    conf: Arc<ServerConf>,
    /// How long a removed listener's connections may finish before they are closed.
    drain_timeout: Duration,
    state: Mutex<State>,
}

impl Listeners {
    /// No listeners yet; `conf` is what the proxies are built with.
    pub(crate) fn new(conf: Arc<ServerConf>, drain_timeout: Duration) -> Self {
        Self {
            conf,
            drain_timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// Works out what `snap` changes: loads every TLS listener's certificate and
    /// binds the sockets of new addresses. Nothing changes until `commit`.
    pub(crate) fn prepare(
        &self,
        snap: &Snapshot,
        routing: &Routing,
        shared: &Arc<Shared>,
        files: &dyn Files,
        reread_tls: bool,
    ) -> Result<Prepared, Vec<ConfigError>> {
        let state = self.state.lock();
        let mut errors = Vec::new();
        let mut out = Prepared {
            start: Vec::new(),
            stop: Vec::new(),
            keys: Vec::new(),
            acceptors: Vec::new(),
            certs_changed: false,
        };
        let path = |name: &str| FieldPath::resource("Listener", name);
        // Addresses that listeners being replaced or removed give up.
        let wanted: HashMap<&str, Spec> = snap
            .listeners
            .iter()
            .map(|l| (l.name.as_ref(), Spec::of(l)))
            .collect();
        for name in state.active.keys() {
            match wanted.get(name.as_ref()) {
                Some(spec) if *spec == state.active[name].spec => {}
                _ => out.stop.push(name.clone()),
            }
        }
        for l in &snap.listeners {
            let spec = &wanted[l.name.as_ref()];
            let tls_files = l
                .tls
                .as_ref()
                .map(|t| (t.cert_file.clone(), t.key_file.clone()));
            let kept = state.active.get(&l.name).filter(|a| a.spec == *spec);
            if kept.is_some_and(|a| !reread_tls && a.tls_files == tls_files) {
                // Same socket, protocols and certificate files: nothing to read.
                continue;
            }
            let key = match &l.tls {
                Some(t) => match load_certified_key(files, &t.cert_file, &t.key_file) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        let field = if e.file == t.key_file.as_ref() {
                            "key_file"
                        } else {
                            "cert_file"
                        };
                        errors.push(ConfigError::new(
                            path(&l.name).field("tls").field(field).to_string(),
                            e.to_string(),
                        ));
                        continue;
                    }
                },
                None => None,
            };
            if let Some(a) = kept {
                if let (Some(v), Some(auth), Some(alpn), Some(cert)) =
                    (&a.verifier, &spec.client_auth, &spec.tls_alpn, &a.cert)
                {
                    let fresh = SpiffeClientVerifier::new(auth, files).map_err(|e| e.to_string());
                    let fresh = fresh.and_then(|f| {
                        if !f.differs(v) {
                            return Ok(None);
                        }
                        let f = Arc::new(f);
                        let acceptor = tls_acceptor(&l.name, alpn, cert, Some(Arc::clone(&f)))?;
                        Ok(Some((Arc::new(acceptor), f)))
                    });
                    match fresh {
                        Ok(None) => {}
                        Ok(Some((acceptor, f))) => {
                            out.certs_changed = true;
                            out.acceptors.push((l.name.clone(), acceptor, f));
                        }
                        Err(e) => {
                            errors.push(ConfigError::new(
                                path(&l.name).field("tls").field("client_auth").to_string(),
                                e,
                            ));
                            continue;
                        }
                    }
                }
                if let (Some(cert), Some(key)) = (&a.cert, key) {
                    out.certs_changed |= cert.current().cert != key.cert;
                    out.keys
                        .push((l.name.clone(), Arc::clone(cert), key, tls_files));
                }
                continue;
            }
            // A new listener, or one whose socket or protocols changed.
            let reuse = state
                .active
                .iter()
                .any(|(n, a)| a.spec.address == spec.address && out.stop.contains(n));
            let socket = if reuse {
                Socket::Gone
            } else {
                match bind(spec.address) {
                    Ok(s) => Socket::Bound(s),
                    Err(e) => {
                        errors.push(ConfigError::new(
                            path(&l.name).field("address").to_string(),
                            format!("cannot listen on {}: {e}", spec.address),
                        ));
                        continue;
                    }
                }
            };
            let Some(runtime) = routing.listeners.get(&l.name) else {
                continue;
            };
            let cert = key.map(|k| Arc::new(ReloadableCert::new(k)));
            match self.make(
                l,
                spec.clone(),
                socket,
                cert,
                tls_files,
                runtime,
                shared,
                files,
            ) {
                Ok(active) => out.start.push((l.name.clone(), active)),
                Err(e) => errors.push(ConfigError::new(path(&l.name).field("tls").to_string(), e)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        l: &corridor_config::Listener,
        spec: Spec,
        socket: Socket,
        cert: Option<Arc<ReloadableCert>>,
        tls_files: TlsFiles,
        runtime: &Arc<ListenerRuntime>,
        shared: &Arc<Shared>,
        files: &dyn Files,
    ) -> Result<Active, String> {
        let current = Arc::new(ArcSwap::new(Arc::clone(runtime)));
        let mut app = HttpProxy::new(
            Corridor::new(Arc::clone(shared), Arc::clone(&current)),
            Arc::clone(&self.conf),
        );
        app.handle_init_modules();
        let mut options = HttpServerOptions::default();
        options.h2c = spec.h2c;
        // Illegal bytes in a request-target are rejected, not percent-encoded and
        // forwarded; CONNECT reaches Corridor's checks, which answer 405 themselves.
        options.reject_illegal_request_target = true;
        options.allow_connect_method_proxying = true;
        // HTTP/2 authority conflicts reach Corridor's checks and get its own 400.
        options.h2_defer_authority_validation = true;
        app.server_options = Some(options);
        // The listener's limits are checked per request (and follow reloads); the
        // codec's bound, set per accept loop with room to spare, caps what it decodes first.
        let mut h2 = default_h2_options();
        h2.max_header_list_size(spec.h2_header_list);
        app.h2_options = Some(h2);
        let (acceptor, verifier) = match (&spec.tls_alpn, &cert) {
            (Some(alpn), Some(resolver)) => {
                let verifier = match &spec.client_auth {
                    Some(auth) => Some(Arc::new(
                        SpiffeClientVerifier::new(auth, files)
                            .map_err(|e| format!("client_auth: {e}"))?,
                    )),
                    None => None,
                };
                let a = tls_acceptor(&l.name, alpn, resolver, verifier.clone())?;
                (Some(Arc::new(a)), verifier)
            }
            _ => (None, None),
        };
        Ok(Active {
            spec,
            socket,
            app: Arc::new(Lean::new(
                app,
                Corridor::new(Arc::clone(shared), Arc::clone(&current)),
            )),
            acceptor: Arc::new(ArcSwapOption::new(acceptor)),
            cert,
            verifier,
            tls_files,
            stop: watch::channel(false).0,
            kill: watch::channel(false).0,
            current,
        })
    }

    /// When each certificate in use expires: every TLS listener's certificate
    /// and the earliest CA of each of its trust bundles (Unix seconds).
    pub(crate) fn cert_expiries(&self) -> Vec<(String, i64)> {
        let state = self.state.lock();
        let mut out = Vec::new();
        for (name, a) in &state.active {
            let leaf = a.cert.as_ref().map(|c| c.current());
            if let Some(t) = leaf
                .as_ref()
                .and_then(|k| k.cert.first())
                .and_then(|c| not_after(c))
            {
                out.push((format!("listener/{name}"), t));
            }
            for (domain, t) in a.verifier.iter().flat_map(|v| v.expiry.iter()) {
                out.push((format!("bundle/{name}/{domain}"), *t));
            }
        }
        out.sort();
        out
    }

    /// Puts prepared changes into effect: new certificates, new accept loops,
    /// and stopped (draining) listeners.
    pub(crate) fn commit(&self, p: Prepared, routing: &Routing) {
        let mut state = self.state.lock();
        for (name, a) in state.active.iter() {
            if let Some(rt) = routing.listeners.get(name) {
                a.current.store(Arc::clone(rt));
            }
        }
        for (name, acceptor, verifier) in p.acceptors {
            if let Some(a) = state.active.get_mut(&name) {
                a.acceptor.store(Some(acceptor));
                a.verifier = Some(verifier);
            }
        }
        for (name, cert, key, files) in p.keys {
            cert.store(key);
            if let Some(a) = state.active.get_mut(&name) {
                a.tls_files = files;
            }
        }
        let mut stopped = Vec::new();
        for name in p.stop {
            if let Some(a) = state.active.remove(&name) {
                stopped.push(a);
            }
        }
        for (name, mut active) in p.start {
            if matches!(active.socket, Socket::Gone) {
                // Same address as a listener stopped above: take over its socket.
                if let Some(old) = stopped
                    .iter_mut()
                    .find(|o| o.spec.address == active.spec.address)
                {
                    active.socket = std::mem::replace(&mut old.socket, Socket::Gone);
                }
            }
            if let Some(handle) = &state.handle {
                if !state.shutting_down {
                    start(handle, &name, &mut active);
                }
            }
            tracing::info!(listener = %name, address = %active.spec.address, "listener serving");
            state.active.insert(name, active);
        }
        let handle = state.handle.clone();
        drop(state);
        for old in stopped {
            drain(handle.as_ref(), old, self.drain_timeout);
        }
    }

    /// Starts every accept loop in the runtime of the calling service, and stops
    /// them all when `shutdown` turns true.
    pub(crate) async fn run(&self, mut shutdown: ShutdownWatch) {
        {
            let mut state = self.state.lock();
            let handle = Handle::current();
            let names: Vec<Arc<str>> = state.active.keys().cloned().collect();
            for name in names {
                if let Some(a) = state.active.get_mut(&name) {
                    start(&handle, &name, a);
                }
            }
            state.handle = Some(handle);
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        let all: Vec<Active> = {
            let mut state = self.state.lock();
            state.shutting_down = true;
            state.active.drain().map(|(_, a)| a).collect()
        };
        let handle = Handle::current();
        for a in all {
            // The process drain (lifecycle) bounds these; no deadline of their own.
            drain(Some(&handle), a, Duration::MAX);
        }
    }

    /// Names and addresses of the listeners being served.
    pub(crate) fn serving(&self) -> Vec<(Arc<str>, SocketAddr)> {
        let state = self.state.lock();
        let mut out: Vec<_> = state
            .active
            .iter()
            .map(|(n, a)| (n.clone(), a.spec.address))
            .collect();
        out.sort();
        out
    }
}

/// Binds a listening socket as Pingora's listeners do (SO_REUSEADDR, a
/// backlog of 65535). A listener stopped just before may still hold the
/// address for a moment, so `EADDRINUSE` is retried briefly.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let mut tries = 0;
    loop {
        match try_bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn try_bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts the accept loop of `a` in `handle`'s runtime.
fn start(handle: &Handle, name: &str, a: &mut Active) {
    let socket = match std::mem::replace(&mut a.socket, Socket::Gone) {
        Socket::Bound(std) => {
            let _guard = handle.enter();
            match tokio::net::TcpListener::from_std(std) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    tracing::error!(listener = name, "cannot register the listener socket: {e}");
                    return;
                }
            }
        }
        Socket::Running(l) => l,
        Socket::Gone => return,
    };
    a.socket = Socket::Running(Arc::clone(&socket));
    let app = Arc::clone(&a.app);
    let acceptor = a.acceptor.clone();
    let stop = a.stop.subscribe();
    let kill = a.kill.subscribe();
    handle.spawn(accept_loop(socket, app, acceptor, stop, kill));
}

/// Stops accepting on `a` and ends keep-alive on its connections; requests in
/// flight finish, and whatever is still open after `timeout` is closed. The
/// socket closes once no accept loop holds it.
fn drain(handle: Option<&Handle>, a: Active, timeout: Duration) {
    let _ = a.stop.send(true);
    tracing::info!(address = %a.spec.address, "listener stopped accepting; draining");
    let Some(h) = handle else { return };
    let app = a.app;
    let kill = a.kill;
    h.spawn(async move {
        app.cleanup().await;
        if timeout < Duration::MAX {
            tokio::time::sleep(timeout).await;
            let _ = kill.send(true);
        }
    });
}

async fn accept_loop(
    socket: Arc<tokio::net::TcpListener>,
    app: Arc<Lean>,
    acceptor: Arc<ArcSwapOption<Acceptor>>,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = socket.accept() => r,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("accept failed: {e}");
                if e.raw_os_error() == Some(EMFILE) {
                    // Out of file descriptors: accept would fail again at once.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let app = Arc::clone(&app);
        let acceptor = acceptor.load_full();
        let shutdown = stop.clone();
        let mut kill = kill.clone();
        let connection = async move {
            let mut stream: L4Stream = tcp.into();
            // A write buffer: Pingora's HTTP/1 sessions (patch 0011) flush at
            // the end of every write batch, so a small response's header and
            // body leave in one send and every streamed event still leaves
            // at once. Larger writes bypass it.
            stream.set_buffer(L4BufferSettings::new(0, DOWNSTREAM_WRITE_BUFFER));
            if let Err(e) = stream.set_nodelay() {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
            let _ = digest.peer_addr.set(Some(peer.into()));
            stream.set_socket_digest(digest);
            let io: pingora_core::protocols::Stream = match acceptor {
                Some(a) => {
                    // Boxed: the handshake's state (about 7 KiB) would otherwise stay in
                    // this connection's task for its whole life (twice, with the select
                    // below), which is most of the memory an idle stream costs.
                    let handshake = Box::pin(a.tls_handshake(stream));
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => Box::new(stream),
            };
            let mut next = app.process_new(io, &shutdown).await;
            while let Some(io) = next {
                next = app.process_new(io, &shutdown).await;
            }
        };
        tokio::spawn(async move {
            // Pinned in place: `select!` then holds a reference, not a second copy.
            let connection = std::pin::pin!(connection);
            tokio::select! {
                () = connection => {}
                // The listener's drain ran out of time: dropping the future closes
                // it. (A sender dropped without killing means no deadline.)
                () = async {
                    if kill.wait_for(|k| *k).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
            }
        });
    }
}

/// A TLS acceptor for listener `name`: its certificate from `resolver` (a
/// reload swaps it), ALPN `alpn`, and with `verifier` client certificates
/// (mTLS) whose identity is read once per connection after the handshake.
fn tls_acceptor(
    name: &str,
    alpn: &[Arc<str>],
    resolver: &Arc<ReloadableCert>,
    verifier: Option<Arc<SpiffeClientVerifier>>,
) -> Result<Acceptor, String> {
    // Paths stay empty: the resolver serves the certificate.
    let mut settings = match verifier {
        Some(v) => {
            let callback = IdentityCallback {
                cert: Arc::clone(resolver),
            };
            let mut s = TlsSettings::with_callbacks(Box::new(callback))
                .map_err(|e| format!("listener {name}: TLS setup: {e}"))?;
            s.set_client_cert_verifier(v as _);
            s
        }
        None => TlsSettings::intermediate("", "")
            .map_err(|e| format!("listener {name}: TLS setup: {e}"))?,
    };
    settings.set_cert_resolver(Arc::clone(resolver) as _);
    let h2 = alpn.iter().any(|a| a.as_ref() == "h2");
    let h1 = alpn.iter().any(|a| a.as_ref() == "http/1.1");
    settings.set_alpn(match (h2, h1) {
        (true, true) => ALPN::H2H1,
        (true, false) => ALPN::H2,
        _ => ALPN::H1,
    });
    Ok(settings.build())
}
