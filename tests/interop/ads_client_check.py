#!/usr/bin/env python3
"""Self-check of ads_server.py with a tiny Python ADS client.

    target/pyenv/bin/python tests/interop/ads_client_check.py

Starts the server on a free port, then for each variant (SotW, delta):
subscribes to Cluster, receives, ACKs; bumps the control version and NACKs
the push; and checks that the server's event log shows the ack and the nack.
Exits non-zero on the first failed check.
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import time

import grpc
from google.rpc import status_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = "type.googleapis.com/corridor.v1.Cluster"


def write_control(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)  # atomic: the server never reads half a file


def control(version, clusters):
    return {"version": version, "resources": [
        {"type": "Cluster", "json": {"name": c, "endpoints": [{"address": "127.0.0.1:1"}]}} for c in clusters]}


def events(log_path):
    with open(log_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_event(log_path, pred, what, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in events(log_path):
            if pred(e):
                return e
        time.sleep(0.05)
    raise AssertionError(f"no {what} in the server log")


class Client:
    """One bidi stream; send() queues a request, recv() waits for the next response."""

    def __init__(self, channel, delta):
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.out = queue.Queue()
        gen = iter(self.out.get, None)
        call = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
        self.responses = call(gen)

    def send(self, req):
        self.out.put(req)

    def recv(self):
        return next(self.responses)

    def close(self):
        self.out.put(None)


def check_sotw(channel, ctl, log):
    write_control(ctl, control("1", ["a", "b"]))
    time.sleep(0.3)
    c = Client(channel, delta=False)
    node = base_pb2.Node(id="check-sotw")
    c.send(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
    r = c.recv()
    assert r.version_info == "1" and len(r.resources) == 2, r
    c.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info="1", response_nonce=r.nonce))
    wait_event(log, lambda e: e["event"] == "ack" and e["variant"] == "sotw" and e["nonce"] == r.nonce
               and e["node"] == "check-sotw", "sotw ack")

    write_control(ctl, control("2", ["a"]))
    r2 = c.recv()
    assert r2.version_info == "2" and len(r2.resources) == 1, r2
    c.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info="1", response_nonce=r2.nonce,
                                          error_detail=status_pb2.Status(code=3, message="check: rejected")))
    e = wait_event(log, lambda e: e["event"] == "nack" and e["variant"] == "sotw" and e["nonce"] == r2.nonce,
                   "sotw nack")
    assert e["error"] == "check: rejected" and e["response_version"] == "2" and e["version_info"] == "1", e
    c.close()
    print("ok: sotw subscribe, ack, push, nack")


def check_delta(channel, ctl, log):
    write_control(ctl, control("3", ["a", "b"]))
    time.sleep(0.3)
    c = Client(channel, delta=True)
    c.send(discovery_pb2.DeltaDiscoveryRequest(node=base_pb2.Node(id="check-delta"), type_url=CLUSTER))
    r = c.recv()
    assert r.system_version_info == "3" and sorted(x.name for x in r.resources) == ["a", "b"], r
    c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=r.nonce))
    wait_event(log, lambda e: e["event"] == "ack" and e["variant"] == "delta" and e["nonce"] == r.nonce,
               "delta ack")

    # "b" goes away and "c" arrives as undecodable bytes.
    doc = control("4", ["a"])
    doc["resources"].append({"type": "Cluster", "name": "c", "raw_hex": "ffff"})
    write_control(ctl, doc)
    r2 = c.recv()
    assert [x.name for x in r2.resources] == ["c"] and list(r2.removed_resources) == ["b"], r2
    c.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=r2.nonce,
                                               error_detail=status_pb2.Status(code=3, message="c: bad bytes")))
    e = wait_event(log, lambda e: e["event"] == "nack" and e["variant"] == "delta" and e["nonce"] == r2.nonce,
                   "delta nack")
    assert e["error"] == "c: bad bytes" and e["response_version"] == "4", e
    c.close()
    print("ok: delta subscribe, ack, push with removal, nack")

    # A reconnect that holds "a" gets only what differs ("c"; "b" is already gone on our side).
    c = Client(channel, delta=True)
    c.send(discovery_pb2.DeltaDiscoveryRequest(node=base_pb2.Node(id="check-delta"), type_url=CLUSTER,
                                               initial_resource_versions={x.name: x.version for x in r.resources
                                                                          if x.name == "a"}))
    r3 = c.recv()
    assert [x.name for x in r3.resources] == ["c"] and not r3.removed_resources, r3
    c.close()
    print("ok: delta reconnect with initial_resource_versions")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        ctl, log = os.path.join(tmp, "control.json"), os.path.join(tmp, "events.jsonl")
        write_control(ctl, {"version": "0", "resources": []})
        server = subprocess.Popen([sys.executable, os.path.join(HERE, "ads_server.py"), "--port", "0",
                                   "--control", ctl, "--log", log], stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline().strip()
            assert line.startswith("LISTENING "), f"server said {line!r}"
            port = int(line.split()[1])
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                check_sotw(channel, ctl, log)
                check_delta(channel, ctl, log)
            bad = [e for e in events(log) if e["event"] in ("stream_error", "control_error")]
            assert not bad, bad
        except Exception:
            print("server log:\n" + (open(log).read() if os.path.exists(log) else "(none)"), file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(5)
    print("interop check: 3 passed, 0 failed")


if __name__ == "__main__":
    main()
