"""A Python event-router client, as a trainer would write one.

Generates grpcio stubs from proto/ (grpc_tools.protoc), subscribes to the live stream,
publishes one TRAINING_COMPLETED event with a typed payload and one with a JSON payload,
and checks that both come back on the stream.
"""
import argparse
import os
import sys
import threading
import time
import uuid

from grpc_tools import protoc
import grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--gen", required=True)
    a = ap.parse_args()
    os.makedirs(a.gen, exist_ok=True)
    files = [os.path.join(a.proto, "ringrift/v1", f) for f in ("events.proto", "router.proto")]
    rc = protoc.main(["protoc", f"-I{a.proto}", f"--python_out={a.gen}", f"--grpc_python_out={a.gen}", *files])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, a.gen)
    from ringrift.v1 import events_pb2, router_pb2, router_pb2_grpc

    ch = grpc.insecure_channel(a.router)
    stub = router_pb2_grpc.EventRouterStub(ch)
    req = router_pb2.SubscribeRequest(types=[events_pb2.TRAINING_COMPLETED], latest=True)
    got = []
    errors = []
    done = threading.Event()

    def read(stream):
        try:
            for ev in stream:
                got.append(ev)
                if len(got) == 2:
                    done.set()
                    return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(f"{e.code()}: {e.details()}")

    def subscribe():
        stream = stub.Subscribe(req, timeout=120, wait_for_ready=True)
        t = threading.Thread(target=read, args=(stream,), daemon=True)
        t.start()
        return stream, t

    stream, reader = subscribe()
    typed = events_pb2.Event(
        type=events_pb2.TRAINING_COMPLETED,
        source="client.py@test",
        config_key="hex8_2p",
        training_completed=events_pb2.TrainingCompleted(model_path="/m/typed.bin", samples=42),
    )
    as_json = events_pb2.Event(type=events_pb2.TRAINING_COMPLETED, source="client.py@test", json='{"model_path": "/m/json.bin"}')
    # The subscription may still be starting: publish until it sees the events (bounded
    # by a deadline, generous because the whole suite shares 2 cores: 10 s ran out once).
    # A stream that ends with an error is reported and opened again.
    deadline = time.monotonic() + 60
    published = 0
    # Each round gets its own ids: the router drops as a duplicate an event whose id
    # (empty: a hash of type and payload) it stored in the last 5 minutes, so resending
    # the same two events would deliver only those of the first round, one of which a
    # subscription still starting can miss.
    while time.monotonic() < deadline:
        typed.id, as_json.id = f"client.py-typed-{uuid.uuid4()}", f"client.py-json-{uuid.uuid4()}"
        stub.Publish(typed, timeout=10)
        stub.Publish(as_json, timeout=10)
        published += 1
        if done.wait(0.2):
            break
        if not reader.is_alive() and not done.is_set():
            got.clear()
            stream, reader = subscribe()
    if not done.is_set():
        sys.exit(f"did not receive the published events: {published} pairs published, "
                 f"{len(got)} received, stream errors {errors}")
    paths = sorted(e.training_completed.model_path for e in got)
    assert paths == ["/m/json.bin", "/m/typed.bin"], paths
    assert got[0].training_completed.samples in (0, 42)
    print(f"OK received seq={got[0].seq},{got[1].seq} paths={paths}")
    stream.cancel()


if __name__ == "__main__":
    main()
