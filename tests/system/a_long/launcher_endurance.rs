//! Launcher endurance (issue 28): the test daemon crashes right after each start and the
//! launcher restarts it after a short backoff, over and over; the launcher's fd count
//! stays flat (and its RSS is printed). 50 cycles in the suite; `scripts/bench/
//! launcher-endurance` runs 1,000 (`RINGRIFT_ENDURANCE_CYCLES`) through the ignored test.

use crate::launcher::{records, start_launcher, test_daemon};
use ringrift_system_tests::{Home, fd_count, poll_until};
use std::time::{Duration, Instant};

#[test]
fn launcher_fds_stay_flat_over_50_crash_restart_cycles() {
    endurance(50);
}

#[test]
#[ignore = "minutes long: scripts/bench/launcher-endurance runs it"]
fn launcher_endurance_full() {
    let cycles = std::env::var("RINGRIFT_ENDURANCE_CYCLES")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("RINGRIFT_ENDURANCE_CYCLES = {v:?}: not a whole number"))
        })
        .unwrap_or(1_000);
    endurance(cycles);
}

/// Resident set of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The fewest fds the launcher held over one second of samples: a child being started or
/// reaped holds a few for a moment (a sample's most depends on catching one), while a
/// leak raises the floor between them, which is what this compares.
fn fds_over_a_second(pid: u32) -> usize {
    let until = Instant::now() + Duration::from_secs(1);
    let mut fewest = usize::MAX;
    while Instant::now() < until {
        fewest = fewest.min(fd_count(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    fewest
}

fn starts(home: &Home) -> usize {
    records(home).iter().filter(|r| r.0 == "start").count()
}

fn endurance(cycles: usize) {
    let home = Home::new();
    let reg = test_daemon("crasher", &[], &["test_daemon.crash_after_s=0.05"]).replace(
        "standalone = true\n",
        "standalone = true\nmax_restarts = 1000000\n",
    );
    let l = start_launcher(
        &home,
        &reg,
        &[
            "--daemon",
            "crasher",
            "--set",
            "launcher.backoff_base_s=0.05",
            "--set",
            "launcher.backoff_max_s=0.05",
        ],
    );
    let pid = l.pid() as u32;
    let warm = 10.min(cycles);
    let limit = Duration::from_secs(30 + cycles as u64);
    let t0 = Instant::now();
    let wait_starts = |n: usize| {
        poll_until(limit, || (starts(&home) >= n).then_some(())).unwrap_or_else(|| {
            panic!(
                "{n} starts not reached within {limit:?} ({} so far)",
                starts(&home)
            )
        })
    };
    wait_starts(warm);
    let (fds0, rss0) = (fds_over_a_second(pid), rss_kib(pid));
    println!("launcher endurance: after {warm} cycles fds {fds0}, RSS {rss0} KiB");
    let step = (cycles / 10).max(1);
    let mut n = warm;
    while n < cycles {
        n = (n + step).min(cycles);
        wait_starts(n);
        println!(
            "launcher endurance: {n} cycles after {:.0} s: fds {}, RSS {} KiB",
            t0.elapsed().as_secs_f64(),
            fd_count(pid),
            rss_kib(pid)
        );
    }
    let (fds1, rss1) = (fds_over_a_second(pid), rss_kib(pid));
    let exits = records(&home).iter().filter(|r| r.0 == "exit").count();
    println!(
        "launcher endurance: {cycles} crash/restart cycles ({exits} crashes recorded) in {:.0} s: \
         fds {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB",
        t0.elapsed().as_secs_f64()
    );
    assert!(exits >= cycles - 1, "the daemon crashed only {exits} times");
    assert!(fds1 <= fds0 + 1, "launcher fds grew: {fds0} -> {fds1}");
    if cycles >= 500 {
        assert!(
            rss1 <= rss0 + rss0 / 4 + 4096,
            "launcher RSS grew: {rss0} -> {rss1} KiB over {cycles} cycles"
        );
    }
}
