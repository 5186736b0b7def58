//! Process hardening applied when `keygate serve` starts, before any key is loaded (the
//! other commands take only the first two measures: [`no_core_dumps`]).
//!
//! - `RLIMIT_CORE` = 0 (soft and hard) and `PR_SET_DUMPABLE` = 0: a crash writes no core
//!   file holding the master key or DEKs, and other processes of the same user cannot
//!   ptrace keygate or read its `/proc/<pid>/mem` or `environ`.
//! - Memory locking: `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, so key material
//!   never reaches swap. keygate does not know in advance which pages will hold keys
//!   (DEKs are cached, request buffers hold decrypted secrets), so it locks the whole
//!   process rather than individual buffers; `MCL_ONFAULT` locks pages only once they are
//!   touched, so resident memory does not balloon. With `MCL_FUTURE`, every later
//!   allocation counts against `RLIMIT_MEMLOCK`; past the limit allocations fail, which
//!   would crash the server. So keygate locks only when that cannot happen: the limit is
//!   unlimited (systemd `LimitMEMLOCK=infinity`, as in `packaging/keygate.service`) or
//!   the process holds `CAP_IPC_LOCK`. Otherwise it warns and runs unlocked.
//!
//! Everything here is best effort and Linux only; each outcome is reported, none is fatal.

/// What [`harden`] achieved, one line per measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardeningReport {
    pub core_dumps_disabled: bool,
    pub not_dumpable: bool,
    pub memory_locked: bool,
    /// Human-readable notes (why a measure did not apply).
    pub notes: Vec<String>,
}

/// For the command-line tools that load keys or the database (every command but `serve`,
/// which calls [`harden`]): no core file, not dumpable. No memory locking and no log
/// lines; a failure only loses the defense.
pub fn no_core_dumps() {
    imp::no_core_dumps();
}

/// Applies the measures and logs each result.
pub fn harden() -> HardeningReport {
    let report = imp::harden();
    if report.core_dumps_disabled && report.not_dumpable {
        tracing::info!("core dumps disabled, process not dumpable");
    }
    if report.memory_locked {
        tracing::info!("process memory locked (mlockall); key material cannot be swapped out");
    }
    for n in &report.notes {
        tracing::warn!("{n}");
    }
    report
}

#[cfg(target_os = "linux")]
mod imp {
    use rustix::mm::{mlockall, MlockAllFlags};
    use rustix::process::{
        getrlimit, set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit,
    };

    use super::HardeningReport;

    /// Bit 14 of the effective capability set (`CapEff` in /proc/self/status).
    const CAP_IPC_LOCK: u32 = 14;

    fn has_cap_ipc_lock() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
    }

    pub(super) fn no_core_dumps() {
        let _ = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        );
        let _ = set_dumpable_behavior(DumpableBehavior::NotDumpable);
    }

    pub(super) fn harden() -> HardeningReport {
        let mut notes = Vec::new();
        let core = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        );
        if let Err(e) = &core {
            notes.push(format!("could not set RLIMIT_CORE to 0: {e}"));
        }
        let dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable);
        if let Err(e) = &dumpable {
            notes.push(format!("could not mark the process not dumpable: {e}"));
        }
        let memlock = getrlimit(Resource::Memlock);
        let unlimited = memlock.current.is_none();
        let memory_locked = if unlimited || has_cap_ipc_lock() {
            match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
            {
                Ok(()) => true,
                Err(e) => {
                    notes.push(format!(
                        "key material is NOT locked in memory and may be swapped: mlockall failed: {e}"
                    ));
                    false
                }
            }
        } else {
            notes.push(format!(
                "key material is NOT locked in memory and may be swapped: RLIMIT_MEMLOCK is {} bytes; set LimitMEMLOCK=infinity (systemd) or `ulimit -l unlimited`, or disable swap",
                memlock.current.unwrap_or_default()
            ));
            false
        };
        HardeningReport {
            core_dumps_disabled: core.is_ok(),
            not_dumpable: dumpable.is_ok(),
            memory_locked,
            notes,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::HardeningReport;

    pub(super) fn no_core_dumps() {}

    pub(super) fn harden() -> HardeningReport {
        HardeningReport {
            core_dumps_disabled: false,
            not_dumpable: false,
            memory_locked: false,
            notes: vec![
                "process hardening (no core dumps, not dumpable, mlock) is implemented for Linux only".into(),
            ],
        }
    }
}
