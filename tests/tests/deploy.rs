//! The README's deploy recipe (`examples/deploy.sh`), run exactly as written against a real
//! server: a good build is deployed and answered `ok`; a broken one is answered `failed`, the
//! previous binary is put back, and the server serves on. Among other control clients and
//! restarts it is answered all the same; told `error busy`, or hearing no answer, it asks again.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use uninterruptible_tests::{
    DEADLINE, Server, TempDir, copy_executable, echo, fd_count, read_pidfile, try_control, wait_for,
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

/// A server at `dir/server` (a copy of the echo example) with a pidfile and a control socket.
fn install(dir: &TempDir) -> (Server, PathBuf, PathBuf) {
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
    server.address();
    wait_for("the pidfile", DEADLINE, || read_pidfile(&pidfile));
    (server, installed, control)
}

/// `deployed: ok <pid> <generation>`, and its pid.
fn deployed(out: &Output) -> u32 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    match fields.as_slice() {
        ["deployed:", "ok", pid, generation] if out.status.success() => {
            generation.parse::<u64>().unwrap();
            pid.parse().unwrap()
        }
        _ => panic!("not deployed: {out:?}"),
    }
}

#[test]
fn deploys_among_other_control_clients_and_restarts_are_told_ok() {
    let dir = TempDir::new("deploy-busy-socket");
    let (server, installed, control) = install(&dir);
    let good = dir.join("build-good");
    copy_executable(Path::new(ECHO), &good);
    // Others ask status and restart all along.
    let stop = Arc::new(AtomicBool::new(false));
    let others: Vec<_> = ["status\n", "status\n", "restart\n"]
        .into_iter()
        .map(|request| {
            let (control, stop) = (control.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match try_control(&control, request) {
                        Ok(answer) if !answer.is_empty() => {}
                        outcome => failures.push(format!(
                            "{request:?} at {:?}: {outcome:?}",
                            std::time::SystemTime::now()
                        )),
                    }
                }
                failures
            })
        })
        .collect();
    for _ in 0..5 {
        let out = deploy(&good, &installed, &control);
        deployed(&out);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{out:?}");
        assert!(!dir.join("server.previous").exists());
    }
    stop.store(true, Ordering::Relaxed);
    for other in others {
        let failures = other.join().unwrap();
        assert!(
            failures.is_empty(),
            "{failures:?}; the log:\n{}",
            server.log.text()
        );
    }
}

#[test]
fn a_deploy_told_busy_asks_again() {
    let dir = TempDir::new("deploy-busy");
    let (server, installed, control) = install(&dir);
    // As many clients as the control socket serves at once, saying nothing.
    let before = fd_count(server.pid());
    let held: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(&control).unwrap())
        .collect();
    wait_for("the clients to be accepted", DEADLINE, || {
        (fd_count(server.pid()) >= before + 64).then_some(())
    });
    let good = dir.join("build-good");
    copy_executable(Path::new(ECHO), &good);
    let mut deploying = Server::start_with(
        DEPLOY,
        &[
            good.to_str().unwrap(),
            installed.to_str().unwrap(),
            control.to_str().unwrap(),
        ],
        None,
        &[],
    );
    deploying
        .log
        .wait_for("error busy: 64 clients are connected, ask again; asking again");
    drop(held);
    assert_eq!(deploying.wait_exit(DEADLINE).code(), Some(0));
    let pid = read_pidfile(&dir.join("server.pid")).unwrap();
    deploying.log.wait_for(&format!("deployed: ok {pid} 2"));
}

#[test]
fn a_deploy_that_hears_no_answer_asks_again() {
    // A control socket that reads the first request and closes without an answer (as a server
    // does when it stops), then answers the next one.
    let dir = TempDir::new("deploy-no-answer");
    let control = dir.join("app.ctl");
    let listener = std::os::unix::net::UnixListener::bind(&control).unwrap();
    let answering = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in ["", "ok 4242 7\n"] {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = String::new();
            conn.read_to_string(&mut request).unwrap();
            conn.write_all(answer.as_bytes()).unwrap();
            requests.push(request);
        }
        requests
    });
    let installed = dir.join("server");
    copy_executable(Path::new(ECHO), &installed);
    let out = deploy(Path::new(ECHO), &installed, &control);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deployed: ok 4242 7\n",
        "{out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("no answer from {}; asking again\n", control.display())
    );
    assert_eq!(answering.join().unwrap(), ["restart\n", "restart\n"]);
}
