"""Driver of scripts/bench/latency (see there)."""
import argparse, json, os, signal, sqlite3, statistics, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--bindir", required=True)
ap.add_argument("--rounds", type=int, default=20)
a = ap.parse_args()
B = os.path.abspath(a.bindir)
home = tempfile.mkdtemp(prefix="bench-latency-")
script = os.path.join(home, "fake-train")
with open(script, "w") as f:
    f.write('#!/bin/sh\n# records its start, then reports a model like the real train job\n'
            'python3 -c "import time; print(time.time())" >> "$1/train_starts"\n'
            'printf \'{"output": "%s", "sha256": "bench", "samples": 1}\' "$2" > "$3"\n')
os.chmod(script, 0o755)
with open(os.path.join(home, "ringrift.toml"), "w") as f:
    f.write('heartbeat_interval_s = 60\n[event_router]\nlisten = "127.0.0.1:0"\n'
            '[training_trigger]\ncooldown_s = 0\ncycle_interval_s = 600\n'
            '[continuous_training_loop]\ncycle_interval_s = 600\n'
            f'[jobs]\ntrain = "{script} {{home}} {{output}} {{result}}"\n')
procs = []


def spawn(name, *args):
    p = subprocess.Popen([os.path.join(B, name), "--home", home, *args], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(home, name + ".log"), "w"))
    procs.append(p)
    return p


def wait(pred, limit, what):
    end = time.time() + limit
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.002)
    raise SystemExit(f"timed out waiting for {what}; logs in {home}")


def starts():
    try:
        with open(os.path.join(home, "train_starts")) as f:
            return [float(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


try:
    spawn("ringrift-event-router")
    addr_file = os.path.join(home, "run", "event_router.addr")
    addr = wait(lambda: os.path.exists(addr_file) and open(addr_file).read().strip(), 20, "router")
    spawn("ringrift-training-trigger", "--router", addr, "--configs", "hex8_2p")
    spawn("ringrift-continuous-training-loop", "--router", addr)

    def subscribed():
        out = subprocess.run([os.path.join(B, "ringrift-events"), "--router", addr, "stats", "--json"], capture_output=True, text=True).stdout
        c = {x["name"]: x["connected"] for x in json.loads(out or "{}").get("consumers", [])}
        return c.get("training_trigger") and c.get("continuous_training_loop")

    def trigger_free():
        try:
            db = sqlite3.connect(os.path.join(home, "data", "pipeline_state.db"), timeout=5)
            row = db.execute("SELECT value FROM state WHERE daemon='training_trigger' AND key='hex8_2p'").fetchone()
            db.close()
        except sqlite3.Error:
            return False
        return row is not None and json.loads(row[0]).get("in_flight") is None

    wait(subscribed, 30, "both daemons subscribed")
    lat = []
    for i in range(1, a.rounds + 1):
        before = len(starts())
        npz = os.path.join(home, f"d{i}.npz")
        open(npz, "wb").close()
        payload = f'{{"path": "{npz}", "rows": 100, "sha256": "s{i}", "games": 10, "watermark": {i * 100}}}'
        t0 = time.time()
        subprocess.run([os.path.join(B, "ringrift-events"), "--router", addr, "emit", "NPZ_EXPORT_COMPLETED",
                        "--payload", payload, "--config-key", "hex8_2p", "--id", f"bench-npz-{i}"],
                       check=True, stdout=subprocess.DEVNULL)
        t1 = wait(lambda: len(starts()) > before and starts()[before], 30, f"training start {i}")
        lat.append(t1 - t0)
        # The trigger frees the config on TRAINING_COMPLETED; wait for that before the next round.
        wait(trigger_free, 30, f"training {i} finished")
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"event-to-action latency, NPZ_EXPORT_COMPLETED published -> train job started, {len(lat)} rounds, {os.cpu_count()} cores")
    print(f"  p50 {p(0.5)*1000:.1f} ms   p95 {p(0.95)*1000:.1f} ms   max {lat[-1]*1000:.1f} ms   mean {statistics.mean(lat)*1000:.1f} ms")
    print("  (includes the ringrift-events CLI start-up and connect on the publishing side)")
    print(f"  target < 1000 ms: {'met' if lat[-1] < 1.0 else 'NOT met'}")
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
