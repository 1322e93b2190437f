"""Driver of scripts/bench/launcher: same N daemons under ringrift-launcher and supervisord."""
import argparse, os, signal, statistics, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=50)
ap.add_argument("--bindir", required=True)
ap.add_argument("--kills", type=int, default=5)
a = ap.parse_args()
BIN = os.path.abspath(a.bindir)
DAEMON = os.path.join(BIN, "ringrift-test-daemon")


def records(home):
    try:
        with open(os.path.join(home, "test_daemon.log")) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def wait(pred, limit, what):
    end = time.time() + limit
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.005)
    sys.exit(f"timed out waiting for {what}")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    return int(l.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def pids_of_instances(home):
    """Latest pid per instance from the start records."""
    out = {}
    for ev, inst, pid, ms in records(home):
        if ev == "start":
            out[inst] = int(pid)
    return out


def daemon_args(i):
    return ["--router", "127.0.0.1:1", "--set", f"test_daemon.instance=d{i:02d}", "--set", "test_daemon.cycle_interval_s=1", "--set", "heartbeat_interval_s=60"]


def measure(name, start_cmd, home, env=None):
    t0 = time.time()
    proc = subprocess.Popen(start_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    wait(lambda: len({r[1] for r in records(home) if r[0] == "start"}) >= a.n, 120, f"{name}: {a.n} daemons ready")
    last = max(int(r[3]) for r in records(home) if r[0] == "start") / 1000.0
    start_s = last - t0
    time.sleep(1.0)  # let every child settle before measuring memory (not a synchronisation)
    pids = pids_of_instances(home)
    child_rss = [rss_kib(p) for p in pids.values()]
    sup_rss = rss_kib(proc.pid)
    restarts = []
    for k in range(a.kills):
        inst = f"d{k:02d}"
        old = pids[inst]
        before = len(records(home))
        t = time.time()
        os.kill(old, signal.SIGKILL)
        rec = wait(lambda: next((r for r in records(home)[before:] if r[0] == "start" and r[1] == inst), None), 60, f"{name}: restart of {inst}")
        restarts.append(int(rec[3]) / 1000.0 - t)
        pids[inst] = int(rec[2])
    t = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    stop_s = time.time() - t
    leftovers = [p for p in pids.values() if os.path.exists(f"/proc/{p}")]
    return {
        "start_s": start_s,
        "restart_s": statistics.median(restarts),
        "sup_rss_mib": sup_rss / 1024,
        "child_rss_mib": statistics.mean(child_rss) / 1024,
        "stop_s": stop_s,
        "leftovers": len(leftovers),
    }


def ours():
    home = tempfile.mkdtemp(prefix="bench-launcher-ours-")
    reg = os.path.join(home, "registry.toml")
    with open(reg, "w") as f:
        for i in range(a.n):
            args = ", ".join(f'"{x}"' for x in daemon_args(i))
            f.write(f'[[daemon]]\nname = "d{i:02d}"\ncategory = "bench"\nbinary = "ringrift-test-daemon"\nstandalone = true\nimplemented = true\nargs = [{args}]\n\n')
    cmd = [os.path.join(BIN, "ringrift-launcher"), "--home", home, "--registry", reg, "--all", "--control", "127.0.0.1:0",
           # Restart latency without the first backoff (supervisord has none).
           "--set", "launcher.backoff_base_s=0.001"]
    return measure("ringrift-launcher", cmd, home)


def theirs():
    home = tempfile.mkdtemp(prefix="bench-launcher-supervisord-")
    conf = os.path.join(home, "supervisord.conf")
    with open(conf, "w") as f:
        f.write(f"[supervisord]\nnodaemon=true\nlogfile={home}/supervisord.log\npidfile={home}/supervisord.pid\nchildlogdir={home}\n\n")
        f.write(f"[unix_http_server]\nfile={home}/supervisor.sock\n\n[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n")
        for i in range(a.n):
            args = " ".join(daemon_args(i))
            f.write(f"[program:d{i:02d}]\ncommand={DAEMON} --home {home} {args}\nautorestart=true\nstartsecs=0\nstartretries=100\nstopsignal=TERM\nstopasgroup=true\nkillasgroup=true\nstdout_logfile={home}/d{i:02d}.log\nredirect_stderr=true\n\n")
    return measure("supervisord", ["supervisord", "-c", conf], home)


print(f"N = {a.n} copies of ringrift-test-daemon, {os.cpu_count()} cores; {a.kills} kill -9 restarts each")
o = ours()
t = theirs()
ver = subprocess.run(["supervisord", "--version"], capture_output=True, text=True).stdout.strip()
print(f"\n{'metric':<40} {'ringrift-launcher':>18} {'supervisord ' + ver:>20} {'ours/theirs':>12}")
rows = [
    ("start to all ready (s)", "start_s"),
    ("restart after kill -9, median (s)", "restart_s"),
    ("SIGTERM to all stopped (s)", "stop_s"),
    ("supervisor RSS (MiB)", "sup_rss_mib"),
    ("per-daemon RSS, mean (MiB)", "child_rss_mib"),
]
for label, k in rows:
    ratio = o[k] / t[k] if t[k] else float("nan")
    print(f"{label:<40} {o[k]:>18.3f} {t[k]:>20.3f} {ratio:>12.2f}")
print(f"{'children left after stop':<40} {o['leftovers']:>18} {t['leftovers']:>20}")
print("\nRatios below 1.0 favour ringrift-launcher. Our restart has its first backoff set to 1 ms (default 1 s);")
print("supervisord restarts without backoff. Both read readiness from the children's own start records.")
