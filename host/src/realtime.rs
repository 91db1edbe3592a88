//! Real-time scheduling for the few threads whose lateness is visible
//! outside: the control plane (health checks) and the epoch ticker (guest
//! deadlines and time slices). Their work is a few microseconds per wake-up.

/// Asks for SCHED_RR priority 1 for the calling thread. Threads it starts
/// later begin at the normal policy (SCHED_RESET_ON_FORK): nothing a library
/// spawns from here inherits real time.
pub fn request_for_this_thread() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    let policy = libc::SCHED_RR | libc::SCHED_RESET_ON_FORK;
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid,
    // initialised parameter; it only reads `param`.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
