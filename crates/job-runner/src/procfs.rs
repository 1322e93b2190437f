//! Reading process state from `/proc` (Linux): liveness that ignores zombies, process
//! start times (to tell a reused PID apart), and members of a process group.

use std::path::Path;

/// Fields of `/proc/<pid>/stat` this crate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// A zombie (`Z`) or dead (`X`) process no longer runs anything.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses `/proc/<pid>/stat`; `None` if the process does not exist or cannot be read.
pub fn stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `pid` runs and, if `start_time` is given, is the same process as then.
pub fn is_alive(pid: i32, start_time: Option<u64>) -> bool {
    match stat(pid) {
        Some(s) => s.is_running() && start_time.is_none_or(|t| t == s.start_time),
        None => false,
    }
}

/// PIDs of running (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.is_running()))
        .collect()
}

/// The process group leader whose environment holds `key=value` (a job's id; its
/// children inherit it, the leader is the one leading its own group), or, failing that,
/// the oldest such process. Only this user's processes are readable, which is enough for
/// the jobs this user started.
pub fn find_env(key: &str, value: &str) -> Option<(i32, ProcStat)> {
    let needle = format!("{key}={value}");
    let entries = std::fs::read_dir(Path::new("/proc")).ok()?;
    let mut found: Vec<(i32, ProcStat)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter_map(|pid| Some((pid, stat(pid).filter(ProcStat::is_running)?)))
        .collect();
    found.sort_by_key(|(pid, s)| (s.pgrp != *pid, s.start_time));
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_parens_and_spaces() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let s = parse_stat(line).expect("parse");
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                pgrp: 1234,
                start_time: 98765
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn sees_itself() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        let s = stat(me).expect("own stat");
        assert!(is_alive(me, Some(s.start_time)));
        assert!(
            !is_alive(me, Some(s.start_time + 1)),
            "a different start time is another process"
        );
    }
}
