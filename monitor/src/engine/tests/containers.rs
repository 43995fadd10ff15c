//! Containers: a step's container is judged in that step, whatever order the runtime's word and
//! the container's first processes arrive in; the runner's own containers and a service
//! container are quiet; a `container:` job's `docker exec` steps are its steps; with several
//! jobs running a container is a job of its own, never nobody's.

use super::*;
use crate::{
    containers::{ContainerBind, ContainerMeta},
    event::ContainerChange,
};

const ID: &str = "68b32f19a2ebfbe4b4ff840b0893ecd6a8ef14b887e8889724463deb2bf58b1a";
const OTHER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn meta(id: &str, name: &str, binds: &[(&str, &str)]) -> ContainerMeta {
    ContainerMeta {
        id: id.into(),
        name: name.into(),
        image: "alpine:3".into(),
        runtime: "docker".into(),
        binds: binds
            .iter()
            .map(|(s, d)| ContainerBind {
                source: s.to_string(),
                destination: d.to_string(),
                read_only: false,
            })
            .collect(),
        ..Default::default()
    }
}

/// containerd-shim (800, adopted by init) starting the container's process `pid` in `id`.
fn container_process(
    sim: &mut Sim,
    id: &str,
    pid: u32,
    argv: &[&str],
    vars: BTreeMap<String, String>,
) {
    if sim.enricher.table.by_tgid(800).is_none() {
        sim.spawn(
            1,
            800,
            "/usr/bin/containerd-shim-runc-v2",
            &["containerd-shim-runc-v2", "-namespace", "moby"],
            "/",
            env(&[]),
        );
    }
    sim.in_container.insert(pid, id.to_string());
    sim.spawn(800, pid, argv[0], argv, "/", vars);
}

/// A second runner's Worker (500) on the same machine, running step `step` (510) of its job
/// (run 9002); the step's environment.
fn second_job(sim: &mut Sim, step: &str) -> BTreeMap<String, String> {
    sim.spawn(
        1,
        500,
        "/opt/r2/bin/Runner.Worker",
        &["Runner.Worker"],
        "/opt/r2",
        env(&[]),
    );
    let mut vars = github_env(step);
    vars.insert("GITHUB_RUN_ID".into(), "9002".into());
    sim.spawn(
        500,
        510,
        "/usr/bin/bash",
        &["bash", "-e", "/opt/r2/s.sh"],
        "/opt/r2",
        vars.clone(),
    );
    vars
}

#[test]
fn a_steps_container_is_judged_in_that_step_and_named() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/docker",
        &["docker", "run", "-v", "/home/runner:/h", "alpine"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.container_news(
        ContainerChange::Created,
        meta(ID, "thief", &[("/home/runner", "/h")]),
    );
    container_process(
        &mut sim,
        ID,
        900,
        &["/bin/cat", "/proc/200/environ"],
        env(&[]),
    );
    sim.read(900, "/proc/200/environ");
    sim.connect(900, "203.0.113.9", 443);
    sim.exit(900).exit(310).exit(300).exit(200).finish();

    let risk = sim.only("container-escape-risk");
    assert_eq!(risk.step.as_ref().unwrap().id, "__run");
    assert_eq!(risk.container.as_ref().unwrap().name, "thief");
    assert!(
        risk.summary.contains("/home/runner mounted writable at /h"),
        "{}",
        risk.summary
    );
    for rule in ["process-environ-read", "unexpected-egress"] {
        let f = sim.only(rule);
        assert_eq!(f.step.as_ref().unwrap().id, "__run", "{rule}");
        let c = f.container.as_ref().unwrap();
        assert_eq!(
            (c.id.as_str(), c.name.as_str(), c.image.as_str()),
            (ID, "thief", "alpine:3")
        );
    }
    // The container's process outlived nothing: containers are the runtime's to end.
    assert!(!sim.rules().contains(&"outlived-step"), "{:?}", sim.rules());
}

#[test]
fn a_containers_first_process_before_the_runtimes_word_is_linked_and_judged_later() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    container_process(&mut sim, ID, 900, &["/bin/cat", "/h/x"], env(&[]));
    sim.read(900, "/proc/200/environ");
    sim.container_news(
        ContainerChange::Created,
        meta(ID, "late", &[("/", "/host")]),
    );
    sim.exit(900).exit(300).exit(200).finish();
    let read = sim.only("process-environ-read");
    assert_eq!(read.step.as_ref().unwrap().id, "__run");
    let risk = sim.only("container-escape-risk");
    assert_eq!(risk.step.as_ref().unwrap().id, "__run");
    assert!(
        risk.summary.contains("the host's / mounted"),
        "{}",
        risk.summary
    );
}

/// The runner's Worker (200) with its job declared by the hooks, and its own docker client
/// (260) asking for a container (`argv`), as in its "Initialize containers".
fn runner_docker_client(sim: &mut Sim, argv: &[&str]) {
    sim.runner();
    sim.hook(250, true).unwrap();
    sim.spawn(200, 260, "/usr/bin/docker", argv, WORKSPACE, env(&[]));
}

/// A runner with its job hooks (Worker 200) making the job's container `job` in "Initialize
/// containers": its own docker client (260), before any step.
fn runner_makes_job_container(sim: &mut Sim, job: ContainerMeta) {
    runner_docker_client(sim, &["docker", "create", "--name", "job"]);
    sim.container_news_by(ContainerChange::Created, job, &[260]);
    sim.exit(260);
}

#[test]
fn the_runners_containers_a_service_and_an_allowed_image_are_quiet() {
    let mut sim = Sim::new(profile(
        "version: 1\ncontainers:\n  allow: [\"docker:*-dind\"]\n",
    ));
    runner_makes_job_container(
        &mut sim,
        meta(
            ID,
            "job",
            &[
                ("/var/run/docker.sock", "/var/run/docker.sock"),
                ("/home/runner/work", "/__w"),
            ],
        ),
    );
    sim.run_step(300, "__run");
    let mut dind = meta(OTHER, "dind", &[]);
    dind.image = "docker:27-dind".into();
    dind.privileged = true;
    sim.container_news(ContainerChange::Created, dind);
    // A service container on the job's network, started: the job talks to it.
    let service = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    sim.container_news(ContainerChange::Created, meta(service, "postgres", &[]));
    let mut started = meta(service, "postgres", &[]);
    started.addresses = vec!["172.18.0.3".parse().unwrap()];
    sim.container_news(ContainerChange::Started, started);
    // The job container's idle process, and a step's build mounting the checkout.
    container_process(&mut sim, ID, 900, &["/bin/sleep", "600"], env(&[]));
    sim.connect(900, "172.18.0.3", 5432);
    sim.connect(300, "172.18.0.3", 5432);
    sim.exit(300);
    sim.run_step(400, "__run_2");
    let third = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    sim.container_news(
        ContainerChange::Created,
        meta(third, "build", &[(WORKSPACE, "/src")]),
    );
    sim.exit(400).exit(900).exit(200).finish();
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
    // Not a blanket pass: the same address, once its container is gone, is egress again.
    let mut sim2 = Sim::new(empty_profile());
    sim2.runner().run_step(300, "__run");
    let mut gone = meta(service, "postgres", &[]);
    gone.addresses = vec!["172.18.0.3".parse().unwrap()];
    sim2.container_news(ContainerChange::Started, gone.clone());
    sim2.container_news(ContainerChange::Removed, gone);
    sim2.connect(300, "172.18.0.3", 5432)
        .exit(300)
        .exit(200)
        .finish();
    assert_eq!(sim2.rules(), vec!["unexpected-egress"]);
}

/// The runtime's word can come after the container's first process (the daemon answers the
/// agent's inspect late): the clients that asked still say the runner made it.
#[test]
fn the_runners_container_stays_the_runners_when_its_process_comes_first() {
    let mut sim = Sim::new(empty_profile());
    runner_docker_client(&mut sim, &["docker", "run", "-d", "--name", "job"]);
    container_process(&mut sim, ID, 900, &["/bin/sleep", "600"], env(&[]));
    sim.container_news_by(
        ContainerChange::Created,
        meta(ID, "job", &[(HOME, "/github/home")]),
        &[260],
    );
    sim.exit(260);
    sim.run_step(300, "__run");
    sim.exit(300).exit(900).exit(200).finish();
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
    // Its twin: a step's own client making the same container is judged.
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    sim.hook(250, true).unwrap();
    sim.run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/docker",
        &["docker", "run", "-d", "--name", "job"],
        WORKSPACE,
        github_env("__run"),
    );
    container_process(&mut sim, ID, 900, &["/bin/sleep", "600"], env(&[]));
    sim.container_news_by(
        ContainerChange::Created,
        meta(
            ID,
            "job",
            &[("/var/run/docker.sock", "/var/run/docker.sock")],
        ),
        &[310],
    );
    sim.exit(310).exit(300).exit(900).exit(200).finish();
    assert_eq!(sim.rules(), vec!["container-escape-risk"]);
}

#[test]
fn a_container_jobs_docker_exec_starts_the_step_it_names() {
    let mut sim = Sim::new(empty_profile());
    runner_docker_client(&mut sim, &["docker", "create"]);
    sim.container_news(
        ContainerChange::Created,
        meta(ID, "job", &[("/home/runner/work", "/__w")]),
    );
    container_process(&mut sim, ID, 900, &["/bin/sleep", "600"], env(&[]));
    sim.run_step(300, "deploy");
    sim.spawn(
        300,
        310,
        "/usr/bin/docker",
        &["docker", "exec", "job", "sh"],
        WORKSPACE,
        github_env("deploy"),
    );
    // runc's process in the container, with the step's environment.
    container_process(
        &mut sim,
        ID,
        910,
        &["/bin/sh", "-c", "cat /proc/1/environ"],
        github_env("deploy"),
    );
    sim.read(910, "/proc/900/environ");
    sim.exit(910)
        .exit(310)
        .exit(300)
        .exit(900)
        .exit(200)
        .finish();
    let f = sim.only("process-environ-read");
    assert_eq!(f.step.as_ref().unwrap().id, "deploy");
    assert_eq!(f.job.as_ref().unwrap().key, "github/acme/app/9001/1/build");
    assert_eq!(f.container.as_ref().unwrap().name, "job");
}

#[test]
fn with_two_jobs_running_a_container_is_a_job_of_its_own() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    second_job(&mut sim, "__run");
    sim.container_news(ContainerChange::Created, meta(ID, "who", &[]));
    container_process(&mut sim, ID, 900, &["/bin/cat"], env(&[]));
    sim.read(900, "/proc/200/environ");
    sim.exit(900);
    sim.container_news(ContainerChange::Removed, meta(ID, "", &[]));
    sim.finish();
    let f = sim.only("process-environ-read");
    let job = f.job.as_ref().unwrap();
    assert_eq!(job.provider, "container");
    assert_eq!(job.key, format!("container:{ID}"));
    assert_eq!(f.container.as_ref().unwrap().name, "who");
    // It ended with its container: its report is written.
    assert!(sim
        .engine
        .take_ended_jobs()
        .iter()
        .any(|j| j.identity.key == format!("container:{ID}")));
}

#[test]
fn a_containers_own_files_are_not_the_hosts_but_its_mounts_are() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    // An image build's RUN writing start-up files into the image: not the runner's.
    sim.container_news(ContainerChange::Created, meta(ID, "build", &[]));
    container_process(
        &mut sim,
        ID,
        900,
        &["/bin/sh", "-c", "apt-get install"],
        env(&[]),
    );
    sim.write(900, "/etc/cron.d/image-job");
    sim.write(900, "/root/.bashrc");
    sim.exit(900);
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
    // The host's root mounted: the same writes are the host's.
    sim.container_news(
        ContainerChange::Created,
        meta(OTHER, "escape", &[("/", "/host")]),
    );
    container_process(&mut sim, OTHER, 910, &["/bin/sh"], env(&[]));
    sim.write(910, "/host/etc/cron.d/evil");
    sim.exit(910).exit(300).exit(200).finish();
    let p = sim.only("persistence-write");
    assert_eq!(p.evidence["path"], "/etc/cron.d/evil");
    assert_eq!(p.container.as_ref().unwrap().name, "escape");
}

#[test]
fn the_client_that_asked_names_the_job_among_several() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    // A second runner's job on the same machine, whose step runs `docker run`.
    let other = second_job(&mut sim, "publish");
    // The runtime's socket had three clients then: the first job's `docker run` still attached
    // to its container, a host tool, and the second job's docker that just started.
    sim.spawn(
        300,
        310,
        "/usr/bin/docker",
        &["docker", "run", "alpine", "sleep", "9"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.spawn(1, 600, "/usr/bin/cadvisor", &["cadvisor"], "/", env(&[]));
    sim.ts += 2_000_000_000;
    sim.spawn(
        510,
        520,
        "/usr/bin/docker",
        &["docker", "run", "-v", "/:/host", "alpine"],
        "/opt/r2",
        other,
    );
    sim.container_news_by(
        ContainerChange::Created,
        meta(ID, "asked", &[("/", "/host")]),
        &[310, 520, 600],
    );
    container_process(&mut sim, ID, 900, &["/bin/cat"], env(&[]));
    sim.read(900, "/proc/200/environ");
    sim.exit(900)
        .exit(520)
        .exit(510)
        .exit(500)
        .exit(310)
        .exit(300)
        .exit(200)
        .finish();
    for rule in ["container-escape-risk", "process-environ-read"] {
        let f = sim.only(rule);
        assert_eq!(
            f.job.as_ref().unwrap().run_id.as_deref(),
            Some("9002"),
            "{rule}"
        );
        assert_eq!(f.step.as_ref().unwrap().id, "publish", "{rule}");
    }
}

#[test]
fn a_host_process_moved_into_a_containers_cgroup_is_still_the_hosts() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    // The step makes a harmless container, then puts a shell of its own into its cgroup.
    sim.container_news(ContainerChange::Created, meta(ID, "decoy", &[]));
    container_process(&mut sim, ID, 900, &["/bin/sleep", "600"], env(&[]));
    sim.fork(300, 310);
    sim.in_container.insert(310, ID.to_string());
    sim.write(310, "/home/runner/.bashrc");
    sim.exit(310).exit(900).exit(300).exit(200).finish();
    let p = sim.only("persistence-write");
    assert_eq!(p.evidence["path"], "/home/runner/.bashrc");
    assert!(p.container.is_none(), "{p:?}");
}

/// Its twin: a runtime a step runs itself (`podman run`: conmon and runc are the step's
/// descendants) starts the container's program in the container's own view of the file system:
/// that process is the container's, its paths the container's (a mount names the host's file).
#[test]
fn a_program_a_steps_own_runtime_starts_in_its_containers_view_is_the_containers() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.container_news(
        ContainerChange::Created,
        meta(ID, "pod", &[("/home/runner", "/h")]),
    );
    sim.spawn(
        300,
        310,
        "/usr/bin/podman",
        &["podman", "run"],
        "/",
        env(&[]),
    );
    sim.spawn(310, 320, "/usr/bin/conmon", &["conmon"], "/", env(&[]));
    sim.in_container.insert(330, ID.to_string());
    sim.in_container_view.insert(330);
    sim.spawn(320, 330, "/bin/sh", &["sh"], "/", env(&[]));
    // The image's own start-up file: not the runner's (the home mount itself is a risk).
    sim.write(330, "/root/.bashrc");
    assert_eq!(
        sim.rules(),
        ["container-escape-risk"],
        "{:#?}",
        sim.findings
    );
    sim.read(330, "/h/.npmrc");
    sim.exit(330)
        .exit(320)
        .exit(310)
        .exit(300)
        .exit(200)
        .finish();
    let read = sim.only("credential-read");
    assert_eq!(
        read.evidence["host_path"], "/home/runner/.npmrc",
        "{read:#?}"
    );
    assert_eq!(read.container.as_ref().unwrap().name, "pod");
    assert_eq!(read.step.as_ref().unwrap().id, "__run");
}

/// A loaded agent can look after the runner's `docker run -d` has hung up: with none of the
/// job's steps run yet, only the runner can have asked (its twin, a client not seen between
/// steps, is judged: below).
#[test]
fn a_container_asked_for_before_any_step_by_a_client_not_seen_is_the_runners() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    sim.hook(250, true).unwrap();
    sim.container_news(
        ContainerChange::Created,
        meta(ID, "job", &[(HOME, "/github/home")]),
    );
    container_process(&mut sim, ID, 900, &["/bin/sleep", "600"], env(&[]));
    sim.run_step(300, "__run");
    sim.exit(300).exit(900).exit(200).finish();
    assert!(sim.findings.is_empty(), "{:#?}", sim.findings);
}

#[test]
fn a_container_asked_for_between_steps_by_a_client_not_seen_is_judged() {
    let mut sim = Sim::new(empty_profile());
    sim.runner();
    sim.hook(250, true).unwrap();
    sim.run_step(300, "__run");
    // The step leaves a daemon behind and ends; between steps the daemon asks for the host and
    // hangs up before anyone looks.
    sim.spawn(
        300,
        310,
        "/usr/bin/python3",
        &["python3", "daemon.py"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.exit(300);
    sim.container_news(
        ContainerChange::Created,
        meta(ID, "late", &[("/", "/host")]),
    );
    sim.exit(310).exit(200).finish();
    assert_eq!(
        sim.only("container-escape-risk")
            .container
            .as_ref()
            .unwrap()
            .name,
        "late"
    );
}

#[test]
fn a_docker_exec_into_a_hosts_container_is_the_steps_that_asked() {
    let mut sim = Sim::new(empty_profile());
    // A database the host runs, there before the agent: nobody's job.
    sim.container_news(ContainerChange::Present, meta(ID, "hostdb", &[]));
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/docker",
        &["docker", "exec", "hostdb", "cat", "/proc/1/environ"],
        WORKSPACE,
        github_env("__run"),
    );
    // runc's child joins the container and runs the command, the step's docker still attached.
    let clients = vec![crate::event::ProcessRef {
        pid: 310,
        start_ticks: sim.enricher.table.by_tgid(310).unwrap().key.start_ticks,
    }];
    sim.spawn(1, 800, "/usr/bin/runc", &["runc", "exec"], "/", env(&[]));
    // runc's child is in the container's cgroup from its fork on: seen there first.
    sim.in_container.insert(900, ID.to_string());
    sim.fork(800, 900);
    let h = sim.header(EventKind::ProcessExec, 900);
    sim.feed_with(
        KernelEvent::Exec {
            header: h,
            exe: "/bin/cat".into(),
            argv: vec!["cat".into(), "/proc/1/environ".into()],
            filename: "/bin/cat".into(),
            argv_total_len: 10,
            cwd: "/".into(),
            exe_ctime_ns: 0,
        },
        |e| {
            if let Detail::Exec {
                runtime_clients, ..
            } = &mut e.detail
            {
                *runtime_clients = clients;
            }
        },
    );
    sim.read(900, "/proc/777/environ");
    sim.exit(900).exit(310).exit(300).exit(200).finish();
    let f = sim.only("process-environ-read");
    assert_eq!(f.step.as_ref().unwrap().id, "__run");
    assert_eq!(f.job.as_ref().unwrap().provider, "github");
    assert_eq!(f.container.as_ref().unwrap().name, "hostdb");
}

#[test]
fn a_service_on_the_job_containers_network_is_the_jobs_even_unlinked() {
    let mut sim = Sim::new(empty_profile());
    // Started before any job (nobody to link it to), on the network the job's container joins.
    let service = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut db = meta(service, "db", &[]);
    db.addresses = vec!["172.18.0.3".parse().unwrap()];
    db.networks = vec!["github_network_1".into()];
    sim.container_news(ContainerChange::Started, db);
    // Elsewhere: a container on a network of nobody's job.
    let mut stranger = meta(OTHER, "stranger", &[]);
    stranger.addresses = vec!["172.19.0.3".parse().unwrap()];
    stranger.networks = vec!["someone_elses".into()];
    sim.container_news(ContainerChange::Started, stranger);

    let mut job = meta(ID, "job", &[]);
    job.networks = vec!["github_network_1".into()];
    runner_makes_job_container(&mut sim, job);
    sim.run_step(300, "__run");
    sim.connect(300, "172.18.0.3", 5432);
    sim.connect(300, "172.19.0.3", 5432);
    sim.exit(300).exit(200).finish();
    let egress = sim.only("unexpected-egress");
    assert_eq!(egress.evidence["address"], "172.19.0.3", "{egress:#?}");
}

#[test]
fn a_containers_proc_file_is_judged_by_whose_it_is_not_by_its_number() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    sim.spawn(
        300,
        310,
        "/usr/bin/docker",
        &["docker", "run", "alpine"],
        WORKSPACE,
        github_env("__run"),
    );
    sim.container_news(ContainerChange::Created, meta(ID, "box", &[]));
    container_process(&mut sim, ID, 900, &["/bin/sh"], env(&[]));
    container_process(
        &mut sim,
        ID,
        901,
        &["/bin/cat", "/proc/1/environ"],
        env(&[]),
    );
    // In the container's namespace its init (host pid 900) is /proc/1: the kernel names it.
    sim.read_proc_owned_by(901, "/proc/1/environ", 900);
    sim.exit(901).exit(900).exit(310).exit(300).finish();
    let f = sim.only("process-environ-read");
    assert_eq!(f.evidence["target_pid"], 900, "{:?}", f.evidence);
    assert!(f.summary.contains("of process 900"), "{}", f.summary);
    assert_eq!(f.container.as_ref().unwrap().name, "box");
}

/// A container no API describes (`ctr run`): its first program runs, with two jobs live and no
/// client named at its exec, before the agent's word on it (from the kernel's view) names the
/// client that asked; the program, still running, is that client's step's from then on.
#[test]
fn a_containers_running_program_follows_the_word_on_who_asked() {
    let mut sim = Sim::new(empty_profile());
    sim.runner().run_step(300, "__run");
    let other = second_job(&mut sim, "publish");
    sim.ts += 2_000_000_000;
    sim.spawn(
        510,
        520,
        "/usr/bin/ctr",
        &["ctr", "run", "--rootfs", "/srv/r", "x1"],
        "/opt/r2",
        other,
    );
    let id = "x1@4242";
    container_process(&mut sim, id, 900, &["/bin/cat"], env(&[]));
    sim.container_news_by(
        ContainerChange::Created,
        ContainerMeta {
            id: id.into(),
            name: "x1".into(),
            runtime: "containerd".into(),
            ..Default::default()
        },
        &[520],
    );
    sim.read(900, "/proc/200/environ");
    sim.exit(900)
        .exit(520)
        .exit(510)
        .exit(500)
        .exit(300)
        .exit(200)
        .finish();
    let f = sim.only("process-environ-read");
    assert_eq!(f.job.as_ref().unwrap().run_id.as_deref(), Some("9002"));
    assert_eq!(f.step.as_ref().unwrap().id, "publish");
    assert_eq!(f.container.as_ref().unwrap().name, "x1");
}
