//! The README's deploy recipe (`examples/deploy.sh`), run exactly as written against a real
//! server: a good build is deployed and answered `ok`; a broken one is answered `failed`, the
//! previous binary is put back, and the server serves on.

use std::path::Path;
use std::process::{Command, Output};
use uninterruptible_tests::{
    DEADLINE, Server, TempDir, copy_executable, echo, read_pidfile, wait_for,
};

const ECHO: &str = env!("CARGO_BIN_EXE_echo");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/deploy.sh");

fn deploy(new: &Path, installed: &Path, control: &Path) -> Output {
    Command::new(DEPLOY)
        .args([new, installed, control])
        .output()
        .expect("run examples/deploy.sh")
}

#[test]
fn the_deploy_script_reports_the_outcome_and_rolls_back_a_failed_build() {
    let dir = TempDir::new("deploy");
    let installed = dir.join("server");
    copy_executable(Path::new(ECHO), &installed);
    let control = dir.join("app.ctl");
    let pidfile = dir.join("server.pid");
    let server = Server::start(
        installed.to_str().unwrap(),
        &[
            ("BIND", "tcp://127.0.0.1:0"),
            ("PID_FILE", pidfile.to_str().unwrap()),
            ("CONTROL_SOCKET", control.to_str().unwrap()),
        ],
    );
    let address = server.address();
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));

    // A good build.
    let good = dir.join("build-good");
    copy_executable(Path::new(ECHO), &good);
    let out = deploy(&good, &installed, &control);
    let pid = read_pidfile(&pidfile).unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), format!("deployed: ok {pid} 2\n")),
        "{out:?}"
    );
    assert!(!dir.join("server.previous").exists());

    // A broken build: the restart fails, the previous binary is back in place.
    let broken = dir.join("build-broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = deploy(&broken, &installed, &control);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let expected_end = format!(
        " exited before ready (exit status: 3); start command: {}\n",
        installed.display()
    );
    assert!(
        stderr.starts_with("restart failed, previous binary restored: failed new process ")
            && stderr.ends_with(&expected_end),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(ECHO).unwrap(),
        "the previous binary is back"
    );
    assert_eq!(
        read_pidfile(&pidfile),
        Some(pid),
        "the old process serves on"
    );
    assert_eq!(echo(&address, "still\n").unwrap(), "still\n");

    // And the next deploy works from there.
    let out = deploy(&good, &installed, &control);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let pid = read_pidfile(&pidfile).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deployed: ok {pid} 4\n")
    );
}
