#!/usr/bin/env python3
"""A small xDS ADS server in Python (grpcio + xds-protos) for interop tests.

    ads_server.py --port PORT --control FILE [--log FILE] [--proto-dir DIR]

Binds 127.0.0.1:PORT (0 picks a free port) and prints `LISTENING <port>` on
stdout once it serves. Serves both StreamAggregatedResources (state of the
world) and DeltaAggregatedResources, every stream a wildcard subscription.
The resources come from the JSON control FILE, polled every 100 ms; a new
"version" there is pushed to every connected stream. Every request, ACK, NACK
and response is written as one JSON line to the log FILE (default stderr).
See README.md beside this file for the control format and the log events.
"""

import argparse
import hashlib
import importlib
import importlib.resources
import json
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from concurrent import futures

import grpc
from google.protobuf import any_pb2, json_format
from grpc_tools import protoc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

TYPE_PREFIX = "type.googleapis.com/corridor.v1."
# Resource kind -> the field that names it.
KINDS = {"Cluster": "name", "Endpoints": "cluster", "RouteTable": "name", "Listener": "name"}
POLL_SECONDS = 0.1
DEFAULT_PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "config", "proto")


# ---------------------------------------------------------------- logging

class EventLog:
    """JSON lines, one per event, flushed at once (tests tail the file)."""

    def __init__(self, path):
        self.out = open(path, "a", buffering=1) if path else sys.stderr
        self.lock = threading.Lock()

    def __call__(self, event, **fields):
        line = json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, sort_keys=False)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


# ---------------------------------------------------------------- corridor protos

def load_corridor_module(proto_dir):
    """Generates Python stubs for corridor/v1/config.proto into a temp dir and imports them."""
    out = tempfile.mkdtemp(prefix="corridor-pb-")
    try:
        wkt = str(importlib.resources.files("grpc_tools") / "_proto")
        args = ["protoc", f"-I{proto_dir}", f"-I{wkt}", f"--python_out={out}", "corridor/v1/config.proto"]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {proto_dir}/corridor/v1/config.proto")
        sys.path.insert(0, out)
        try:
            return importlib.import_module("corridor.v1.config_pb2")
        finally:
            sys.path.remove(out)
    finally:
        # loaded (or failed): the generated files are not needed again, and a killed
        # server leaves none behind
        shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------- control file

class Snapshot:
    """One control version: type_url -> {name: (resource_version, Any)}, in file order."""

    def __init__(self, version, by_type):
        self.version = version
        self.by_type = by_type

    def resources(self, type_url):
        return self.by_type.get(type_url, {})

    def summary(self):
        return {t[len(TYPE_PREFIX):]: list(r) for t, r in self.by_type.items()}


def parse_control(text, pb):
    doc = json.loads(text)
    version = str(doc["version"])
    by_type = {TYPE_PREFIX + k: {} for k in KINDS}
    for i, entry in enumerate(doc.get("resources", [])):
        kind = entry.get("type")
        if kind not in KINDS:
            raise ValueError(f"resources[{i}]: type must be one of {sorted(KINDS)}, got {kind!r}")
        type_url = TYPE_PREFIX + kind
        if "raw_hex" in entry:
            if "name" not in entry:
                raise ValueError(f"resources[{i}]: raw_hex needs a name")
            name, body = entry["name"], bytes.fromhex(entry["raw_hex"])
        else:
            msg = json_format.ParseDict(entry.get("json", {}), getattr(pb, kind)())
            name, body = entry.get("name", getattr(msg, KINDS[kind])), msg.SerializeToString()
        if not name:
            raise ValueError(f"resources[{i}]: empty name")
        if name in by_type[type_url]:
            raise ValueError(f"resources[{i}]: duplicate {kind} {name!r}")
        any_msg = any_pb2.Any(type_url=entry.get("type_url", type_url), value=body)
        by_type[type_url][name] = (hashlib.sha256(body).hexdigest()[:12], any_msg)
    return Snapshot(version, by_type)


class Store:
    """The current snapshot; a poller thread replaces it when the file's version changes."""

    def __init__(self, path, pb, log):
        self.path, self.pb, self.log = path, pb, log
        self.snapshot = Snapshot("", {})
        self.subscribers = set()
        self.lock = threading.Lock()
        self.last_text = None
        self.poll()

    def poll(self):
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            text = None
        if text == self.last_text:
            return
        self.last_text = text
        if text is None:
            return
        try:
            snap = parse_control(text, self.pb)
        except Exception as e:  # a half-written file is retried on the next poll
            self.log("control_error", error=f"{type(e).__name__}: {e}")
            return
        with self.lock:
            if snap.version == self.snapshot.version:
                return
            self.snapshot = snap
            subscribers = list(self.subscribers)
        self.log("control", version=snap.version, resources=snap.summary())
        for q in subscribers:
            q.put(("change", None))

    def run_poller(self):
        while True:
            time.sleep(POLL_SECONDS)
            try:
                self.poll()
            except Exception:
                self.log("control_error", error=traceback.format_exc())

    def current(self):
        with self.lock:
            return self.snapshot

    def subscribe(self, q):
        with self.lock:
            self.subscribers.add(q)

    def unsubscribe(self, q):
        with self.lock:
            self.subscribers.discard(q)


# ---------------------------------------------------------------- ADS service

def error_text(req):
    """The NACK's error_detail as text, or None for no error."""
    if req.HasField("error_detail") and (req.error_detail.code or req.error_detail.message):
        return req.error_detail.message or f"code {req.error_detail.code}"
    return None


class Stream:
    """Per-stream bookkeeping shared by both variants."""

    counter = 0
    counter_lock = threading.Lock()

    def __init__(self, server, variant, request_iterator, context):
        with Stream.counter_lock:
            Stream.counter += 1
            self.id = Stream.counter
        self.server, self.variant, self.context = server, variant, context
        self.node = None
        self.events = queue.Queue()
        self.types = {}  # type_url -> per-type state (dict)
        threading.Thread(target=self.read, args=(request_iterator,), daemon=True).start()
        context.add_callback(lambda: self.events.put(("end", None)))

    def read(self, request_iterator):
        try:
            for req in request_iterator:
                self.events.put(("request", req))
        except Exception as e:  # cancelled or broken stream
            self.events.put(("end", f"{type(e).__name__}: {e}"))
            return
        self.events.put(("end", None))

    def log(self, event, **fields):
        self.server.log(event, variant=self.variant, stream=self.id, node=self.node, **fields)

    def classify(self, req, type_url, extra, ack_extra):
        """Logs the request and its ack / nack / unknown_nonce event. Returns the type state."""
        state = self.types.setdefault(type_url, {"sent": {}, "last_nonce": None, "fresh": True})
        err = error_text(req)
        self.log("request", type_url=type_url, nonce=req.response_nonce, error=err, **extra)
        if req.response_nonce:
            sent_version = state["sent"].get(req.response_nonce)
            info = {"type_url": type_url, "nonce": req.response_nonce, "response_version": sent_version,
                    "latest": req.response_nonce == state["last_nonce"]}
            if req.response_nonce not in state["sent"]:
                self.log("unknown_nonce", error=err, **info, **ack_extra)
            elif err is not None:
                self.log("nack", error=err, code=req.error_detail.code, **info, **ack_extra)
            else:
                self.log("ack", **info, **ack_extra)
        return state

    def run(self, on_request, on_change):
        store = self.server.store
        store.subscribe(self.events)
        self.log("stream_start", peer=self.context.peer())
        reason = None
        try:
            while True:
                kind, item = self.events.get()
                if kind == "end":
                    reason = item
                    break
                if kind == "request":
                    if self.node is None and item.HasField("node"):
                        self.node = item.node.id
                    yield from on_request(item, store.current())
                else:
                    yield from on_change(store.current())
        except Exception:
            reason = traceback.format_exc()
            self.log("stream_error", error=reason)
            self.context.set_code(grpc.StatusCode.INTERNAL)  # the client sees it and reconnects
            self.context.set_details("ads_server: " + reason.strip().splitlines()[-1])
        finally:
            store.unsubscribe(self.events)
            self.log("stream_end", reason=reason)

    def remember(self, state, nonce, version):
        state["sent"][nonce] = version
        state["last_nonce"] = nonce


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, store, log):
        self.store, self.log = store, log
        self.nonce = 0
        self.nonce_lock = threading.Lock()

    def next_nonce(self):
        with self.nonce_lock:
            self.nonce += 1
            return str(self.nonce)

    # ---- state of the world

    def StreamAggregatedResources(self, request_iterator, context):
        s = Stream(self, "sotw", request_iterator, context)

        def respond(type_url, snap):
            state = s.types[type_url]
            res = snap.resources(type_url)
            nonce = self.next_nonce()
            s.remember(state, nonce, snap.version)
            state["version"] = snap.version
            s.log("response", type_url=type_url, version_info=snap.version, nonce=nonce, resources=list(res))
            return discovery_pb2.DiscoveryResponse(
                version_info=snap.version, type_url=type_url, nonce=nonce,
                resources=[a for _, a in res.values()])

        def on_request(req, snap):
            state = s.classify(req, req.type_url,
                               {"version_info": req.version_info, "resource_names": list(req.resource_names)},
                               {"version_info": req.version_info})
            if state["fresh"]:  # first request for this type: send what there is
                state["fresh"] = False
                yield respond(req.type_url, snap)

        def on_change(snap):
            for type_url, state in s.types.items():
                if not state["fresh"] and state.get("version") != snap.version:
                    yield respond(type_url, snap)

        yield from s.run(on_request, on_change)

    # ---- delta

    def DeltaAggregatedResources(self, request_iterator, context):
        s = Stream(self, "delta", request_iterator, context)

        def respond(type_url, snap):
            """Sends what differs from what the client holds; None when nothing does."""
            state = s.types[type_url]
            res = snap.resources(type_url)
            held = state["held"]
            changed = [n for n, (v, _) in res.items() if held.get(n) != v]
            removed = [n for n in held if n not in res]
            if not changed and not removed and not state["fresh"]:
                return None
            state["fresh"] = False
            nonce = self.next_nonce()
            s.remember(state, nonce, snap.version)
            state["held"] = {n: v for n, (v, _) in res.items()}
            s.log("response", type_url=type_url, system_version_info=snap.version, nonce=nonce,
                  resources={n: res[n][0] for n in changed}, removed_resources=removed)
            return discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=snap.version, type_url=type_url, nonce=nonce,
                resources=[discovery_pb2.Resource(name=n, version=res[n][0], resource=res[n][1]) for n in changed],
                removed_resources=removed)

        def on_request(req, snap):
            fresh = req.type_url not in s.types
            state = s.classify(req, req.type_url, {
                "subscribe": list(req.resource_names_subscribe),
                "unsubscribe": list(req.resource_names_unsubscribe),
                "initial_resource_versions": dict(req.initial_resource_versions)}, {})
            if fresh:
                state["held"] = dict(req.initial_resource_versions)
                resp = respond(req.type_url, snap)
                if resp is not None:
                    yield resp

        def on_change(snap):
            for type_url in list(s.types):
                resp = respond(type_url, snap)
                if resp is not None:
                    yield resp

        yield from s.run(on_request, on_change)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="port on 127.0.0.1; 0 picks one")
    ap.add_argument("--control", required=True, help="JSON control file (polled every 100 ms)")
    ap.add_argument("--log", help="JSON-lines event log (default: stderr)")
    ap.add_argument("--proto-dir", default=DEFAULT_PROTO_DIR, help="directory holding corridor/v1/config.proto")
    args = ap.parse_args()

    log = EventLog(args.log)
    pb = load_corridor_module(os.path.abspath(args.proto_dir))
    store = Store(args.control, pb, log)
    threading.Thread(target=store.run_poller, daemon=True).start()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(store, log), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        raise SystemExit(f"could not bind 127.0.0.1:{args.port}")
    server.start()
    log("listening", port=port, pid=os.getpid())
    print(f"LISTENING {port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=0.5).wait()
    log("stopped")


if __name__ == "__main__":
    main()
