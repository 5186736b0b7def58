//! Every command runs without core dumps: `serve` (which also locks memory where it can)
//! and the command-line tools that load keys, such as `restore`, which reads the master
//! key and then every wrapped data key of a backup.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The "Max core file size" limits of a running process, once it has set them.
fn core_limit(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or_default()
            .split_whitespace()
            .skip(4)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        if line == "0 0" || Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `keygate ARGS`, started with a core limit of 1024 (soft) so that "0 0" can only come
/// from keygate itself, whatever the limit the tests run under.
fn keygate_with_core_limit() -> Command {
    let mut c = Command::new("/bin/sh");
    c.env_clear().args([
        "-c",
        "ulimit -Sc 1024 || exit 3; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_keygate"),
    ]);
    c
}

#[test]
fn commands_run_without_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    // restore waits on a named pipe: the process is alive, past its start
    let fifo = dir.path().join("backup.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let mut restore = keygate_with_core_limit()
        .env("KEYGATE_DATA_DIR", dir.path().join("restore"))
        .env("KEYGATE_LOG", "warn")
        .args(["restore", "--from", fifo.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let limit = core_limit(restore.id());
    // let restore read an empty file and end
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let _ = restore.wait();
    assert_eq!(limit, "0 0", "restore may write a core file");

    let mut serve = keygate_with_core_limit()
        .env("KEYGATE_DATA_DIR", dir.path().join("serve"))
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_LOG", "warn")
        .args(["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let limit = core_limit(serve.id());
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(limit, "0 0", "serve may write a core file");
}
