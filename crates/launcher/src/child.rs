//! Process set-up that needs `unsafe`: the parent-death signal of each child.
#![allow(unsafe_code)]

/// Makes the child get SIGKILL when the launcher dies, even by SIGKILL: no orphans.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked exits; children are spawned
/// from tokio worker threads, which live as long as the launcher's runtime.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The launcher may have died before prctl took effect.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}
