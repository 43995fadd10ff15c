//! The control socket: how a CI system tells the agent where jobs begin and end, when the
//! process layout and environment alone cannot (`monitor job start|stop`, and the GitHub
//! runner's job hooks calling `monitor hook job-started|job-completed`).
//!
//! One JSON request per connection, one JSON response. The socket is owner-only (0600) unless
//! a group is given (0660, for the runner's user); requests are bounded in size and time, and a
//! non-root caller may only anchor a job at itself or one of its own ancestors, so it cannot
//! pull unrelated processes into a job or out of judgement.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    sync::{mpsc, oneshot},
};

use crate::ci::JobIdentity;

/// Default place of the socket.
pub const DEFAULT_SOCKET: &str = "/run/monitor/control.sock";
/// Largest request accepted.
pub const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client waits for the agent's answer: longer than the agent gives a request, so
/// a loaded agent's late answer (a job end waits for the kernel ring to be drained up to it)
/// is still read rather than taken for an absent agent.
const IO_TIMEOUT: Duration = Duration::from_secs(70);
/// How long the agent waits for a request line once connected: a client that connects and
/// says nothing holds a slot for at most this long.
const REQUEST_DEADLINE: Duration = Duration::from_secs(1);
/// How long the agent gives one request in all (read, carry out, answer). A job end is answered
/// after the ring has been drained up to it; on a runner busy compiling that can take seconds.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// Connections served at once, in all and per user: a job flooding the socket cannot take the
/// agent's descriptors, and other users (root's `monitor job`) keep their share.
pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// Slots kept for the runner's own processes (a running job's hook), in all and per user: a
/// job flooding the socket as the runner's user takes the shared ones, never these.
pub const RESERVED_CONNECTIONS: usize = 16;
pub const RESERVED_CONNECTIONS_PER_UID: usize = 2;
/// A client refused for lack of a slot tries again for this long (the hooks' case: a job
/// flooding the socket as the runner's user must not make the runner's own hook fail).
const BUSY_RETRY_FOR: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A job begins; `anchor_pid` and its descendants are the job.
    JobStart {
        /// The CI identity variables (only the keys `ci::env` keeps are used).
        env: BTreeMap<String, String>,
        anchor_pid: u32,
        via: String,
    },
    /// A job ends, named by its key or by the identity variables it was started with.
    JobEnd {
        #[serde(default)]
        job: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        via: String,
    },
    /// The agent's jobs and counters.
    Status {},
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobIdentity>,
    /// Reports written for the job that ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<PathBuf>,
    /// The ended job's report in Markdown (the job-completed hook appends it to
    /// `GITHUB_STEP_SUMMARY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_markdown: Option<String>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    /// The job's profile asks the job-completed hook to fail the job (`hooks.fail_on`): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_job: Option<String>,
}

impl Response {
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Default::default()
        }
    }
}

/// Who is on the other end of the socket (from the kernel, not from the request).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

/// A request handed to the agent's processing task, which answers on `reply`.
pub struct Command {
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Response>,
}

/// Binds the socket (replacing a stale one) with the right owner and mode.
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .with_context(|| format!("looking up group {name}"))?
                .with_context(|| format!("no group named {name}"))?
                .gid,
        ),
        None => None,
    };
    if let Some(dir) = path.parent() {
        socket_directory(dir, gid)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    let mode = match gid {
        Some(gid) => {
            nix::unistd::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to the control group", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Makes the socket's directory, or fixes one the agent made before: owner-only, or with the
/// control group allowed in (0750, the group's) when there is one. Without that the agent's
/// umask (077) would leave the group unable to reach a socket it may use. A directory that
/// already lets the group through (`/run`, systemd's `RuntimeDirectory`) is left as it is.
fn socket_directory(dir: &Path, gid: Option<nix::unistd::Gid>) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let Some(gid) = gid else {
        return Ok(());
    };
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if group_may_enter(&meta, gid.as_raw()) {
        return Ok(());
    }
    if meta.uid() != 0 {
        anyhow::bail!(
            "{} is not root's and does not let the control group in: give it to the group (0750) or choose another --control-socket",
            dir.display()
        );
    }
    nix::unistd::chown(dir, None, Some(gid))
        .with_context(|| format!("giving {} to the control group", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    Ok(())
}

/// Whether members of group `gid` may pass through the directory `meta` describes (others may,
/// or it is the group's and the group may).
pub fn group_may_enter(meta: &std::fs::Metadata, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    meta.mode() & 0o001 != 0 || (meta.gid() == gid && meta.mode() & 0o010 != 0)
}

/// The running jobs' anchors and step roots, as the pipeline last published them: a process
/// whose ancestry reaches an anchor without passing a step root is the runner's own (its hook,
/// the anchor shell of a job declared by hand). A step's processes, and daemons they left
/// (adopted by init), never are.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunnerProcesses {
    pub anchors: std::collections::HashSet<u32>,
    pub step_roots: std::collections::HashSet<u32>,
}

/// How far up a process's ancestry the check looks (a hook is a few levels below its Worker).
const RUNNER_DEPTH: usize = 16;

impl RunnerProcesses {
    /// Whether `pid` is a running job's runner's own process (see the type).
    pub fn owns(&self, proc_root: &Path, pid: u32) -> bool {
        let mut current = pid;
        for _ in 0..RUNNER_DEPTH {
            if self.step_roots.contains(&current) {
                return false;
            }
            if self.anchors.contains(&current) {
                return true;
            }
            match parent_of(proc_root, current) {
                Some(parent) if parent > 1 => current = parent,
                _ => return false,
            }
        }
        false
    }
}

/// A process's parent, from `/proc/PID/stat`.
fn parent_of(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok()?;
    crate::process_tree::parse_stat(&stat).map(|(_, ppid, _)| ppid)
}

pub type SharedRunnerProcesses = std::sync::Arc<std::sync::RwLock<RunnerProcesses>>;

/// Accepts connections until the agent stops, forwarding each request to the processing task.
/// Connections are capped in all and per user (a refused client is told so at once), an idle
/// one is dropped after `REQUEST_DEADLINE`, and accept errors (the descriptor limit) back off
/// instead of spinning, with warnings rate-limited.
/// Past the shared slots, the runner's own processes (`RunnerProcesses`) get the reserved ones.
pub async fn serve(
    listener: tokio::net::UnixListener,
    commands: mpsc::Sender<Command>,
    runner: SharedRunnerProcesses,
) {
    let open = std::sync::Arc::new(std::sync::Mutex::new(Slots::default()));
    let mut backoff = Duration::from_millis(10);
    let mut warnings = RateLimitedLog::new("control socket");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(e) => {
                warnings.warn(format!("accept failed ({e}); backing off {backoff:?}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (uid, pid) = stream
            .peer_cred()
            .map(|c| (c.uid(), c.pid().unwrap_or(0).max(0) as u32))
            .unwrap_or((u32::MAX, 0));
        // The shared slots first; when they are taken, the runner's own hook still gets one
        // of those kept for it, which a job flooding the socket as the same user cannot take.
        let pool = if lock(&open).take(uid, Pool::Shared) {
            Pool::Shared
        } else if runner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .owns(Path::new("/proc"), pid)
            && lock(&open).take(uid, Pool::Reserved)
        {
            Pool::Reserved
        } else {
            warnings.warn(format!(
                "connection of uid {uid} refused: too many open (at most {MAX_CONNECTIONS}, {MAX_CONNECTIONS_PER_UID} per user; {RESERVED_CONNECTIONS_PER_UID} more for the runner's own hooks)"
            ));
            // Best effort and without waiting: the client is told to come back.
            let _ = stream.try_write(BUSY_ANSWER.as_bytes());
            continue;
        };
        tokio::spawn(serve_one(stream, commands.clone(), open.clone(), uid, pool));
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves one connection in its slot, and gives the slot back.
async fn serve_one(
    stream: tokio::net::UnixStream,
    commands: mpsc::Sender<Command>,
    open: std::sync::Arc<std::sync::Mutex<Slots>>,
    uid: u32,
    pool: Pool,
) {
    if tokio::time::timeout(ANSWER_DEADLINE, answer(stream, commands))
        .await
        .is_err()
    {
        log::warn!("control request from uid {uid} not answered within {ANSWER_DEADLINE:?}");
    }
    lock(&open).give_back(uid, pool);
}

const BUSY_ANSWER: &str = "{\"ok\":false,\"error\":\"busy: too many connections, try again\"}\n";

/// Which slots a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pool {
    /// Anyone's, first come.
    Shared,
    /// Kept for the runner's own processes.
    Reserved,
}

/// Connections being served, in all and by user, per pool.
#[derive(Default)]
struct Slots {
    total: std::collections::HashMap<Pool, usize>,
    by_uid: std::collections::HashMap<(Pool, u32), usize>,
}

impl Slots {
    fn take(&mut self, uid: u32, pool: Pool) -> bool {
        let (all, per_uid) = match pool {
            Pool::Shared => (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID),
            Pool::Reserved => (RESERVED_CONNECTIONS, RESERVED_CONNECTIONS_PER_UID),
        };
        let total = self.total.entry(pool).or_default();
        let mine = self.by_uid.entry((pool, uid)).or_default();
        if *total >= all || *mine >= per_uid {
            return false;
        }
        *total += 1;
        *mine += 1;
        true
    }

    fn give_back(&mut self, uid: u32, pool: Pool) {
        if let Some(n) = self.total.get_mut(&pool) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.by_uid.get_mut(&(pool, uid)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_uid.remove(&(pool, uid));
            }
        }
    }
}

/// At most one warning a second; the ones in between are counted in the next.
pub struct RateLimitedLog {
    what: &'static str,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            suppressed: 0,
        }
    }

    pub fn warn(&mut self, message: String) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        let also = std::mem::take(&mut self.suppressed);
        if also > 0 {
            log::warn!("{}: {message} (and {also} more like it)", self.what);
        } else {
            log::warn!("{}: {message}", self.what);
        }
        self.last = Some(now);
    }
}

async fn answer(stream: tokio::net::UnixStream, commands: mpsc::Sender<Command>) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            pid: cred.pid().unwrap_or(0).max(0) as u32,
            uid: cred.uid(),
        },
        Err(e) => {
            log::warn!("control connection without peer credentials: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let read = tokio::time::timeout(REQUEST_DEADLINE, reader.read_line(&mut line)).await;
    let Ok(read) = read else {
        return;
    };
    let response = match read {
        Ok(_) if !line.ends_with('\n') => Response::error(format!(
            "request not terminated by a newline within {MAX_REQUEST} bytes"
        )),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                let sent = commands
                    .send(Command {
                        request,
                        peer,
                        reply,
                    })
                    .await;
                match sent {
                    Ok(()) => answer
                        .await
                        .unwrap_or_else(|_| Response::error("the agent is stopping")),
                    Err(_) => Response::error("the agent is stopping"),
                }
            }
            Err(e) => Response::error(format!("bad request: {e}")),
        },
        Err(e) => Response::error(format!("reading the request: {e}")),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// What a request asks of the agent once checked against who sent it (the pipeline carries it
/// out in order with the kernel's events).
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// Declare `job`, anchored at `anchor_pid`.
    StartJob {
        job: JobIdentity,
        anchor_pid: u32,
        via: String,
    },
    /// End the job with this key (the caller's own process is the event's subject).
    EndJob {
        key: String,
        via: String,
    },
    Status,
}

/// Checks a request against its sender and says what it means: a non-root caller may only
/// anchor a job at itself or an ancestor; a job is named by an identity the agent recognises.
pub fn interpret(request: Request, peer: Peer, proc_root: &Path) -> Result<Order, String> {
    match request {
        Request::JobStart {
            env,
            anchor_pid,
            via,
        } => {
            if peer.uid != 0 && !is_self_or_ancestor(proc_root, peer.pid, anchor_pid) {
                return Err(format!(
                    "refused: process {anchor_pid} is not the caller or one of its ancestors; only root may anchor a job elsewhere"
                ));
            }
            let Some((job, _)) = crate::ci::identity_from_env(&filter_env(&env)) else {
                return Err(
                    "no job identity: need GITHUB_RUN_ID and GITHUB_JOB, CI_JOB_ID, or MONITOR_JOB_ID"
                        .into(),
                );
            };
            Ok(Order::StartJob {
                job,
                anchor_pid,
                via,
            })
        }
        Request::JobEnd { job, env, via } => {
            let key = match job {
                Some(key) => key,
                None => match crate::ci::identity_from_env(&filter_env(&env)) {
                    Some((job, _)) => job.key,
                    None => {
                        return Err("name the job (its key) or pass its identity variables".into())
                    }
                },
            };
            Ok(Order::EndJob { key, via })
        }
        Request::Status {} => Ok(Order::Status),
    }
}

/// Whether `anchor` is `pid` itself or one of its ancestors (read from /proc).
pub fn is_self_or_ancestor(proc_root: &Path, pid: u32, anchor: u32) -> bool {
    let mut current = pid;
    for _ in 0..crate::process_tree::MAX_ANCESTRY {
        if current == anchor {
            return true;
        }
        match parent_of(proc_root, current) {
            Some(ppid) if ppid != 0 => current = ppid,
            _ => return false,
        }
    }
    false
}

/// Sends one request and waits for the answer (the client side of `monitor job`/`hook`).
pub fn request(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let deadline = std::time::Instant::now() + BUSY_RETRY_FOR;
    let mut pause = Duration::from_millis(20);
    loop {
        let answer = request_once(socket, request);
        let busy = match &answer {
            Ok(response) => {
                !response.ok
                    && response
                        .error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("busy:"))
            }
            // Refused for lack of a slot before the request was read: as busy.
            Err(e) => e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    )
                })
            }),
        };
        if !busy || std::time::Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

fn request_once(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the agent at {} (is `monitor run` running, and may this user use its socket?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the agent's answer")?;
    serde_json::from_str(&line).with_context(|| format!("bad answer from the agent: {line:?}"))
}

/// The CI identity variables of this process's own environment, as the agent would keep them
/// (secrets are never sent: only the identity keys, redacted).
pub fn own_identity_env() -> BTreeMap<String, String> {
    use std::os::unix::ffi::OsStringExt as _;
    select(std::env::vars_os().map(|(k, v)| (k.into_vec(), v.into_vec())))
}

/// Re-filters identity variables received over the socket exactly as the kernel's are.
pub fn filter_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    select(env)
}

/// Keeps what `ci::env::select_env` keeps of these variables (it reads an environment block).
fn select(
    vars: impl IntoIterator<Item = (impl AsRef<[u8]>, impl AsRef<[u8]>)>,
) -> BTreeMap<String, String> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(k.as_ref());
        block.push(b'=');
        block.extend_from_slice(v.as_ref());
        block.push(0);
    }
    crate::ci::env::select_env(&block)
}

/// The nearest ancestor of this process named `Runner.Worker` (the GitHub runner's per-job
/// process, which starts the job hooks and every step), or the parent when there is none.
pub fn runner_worker_or_parent(proc_root: &Path) -> u32 {
    let me = std::process::id();
    let mut current = me;
    let mut parent_of_me = None;
    for _ in 0..crate::process_tree::MAX_ANCESTRY {
        let Ok(stat) = std::fs::read_to_string(proc_root.join(format!("{current}/stat"))) else {
            break;
        };
        let Some((comm, ppid, _)) = crate::process_tree::parse_stat(&stat) else {
            break;
        };
        if current != me && comm == "Runner.Worker" {
            return current;
        }
        if current == me {
            parent_of_me = Some(ppid);
        }
        if ppid == 0 {
            break;
        }
        current = ppid;
    }
    parent_of_me.unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_strict_json() {
        let r: Request = serde_json::from_str(
            r#"{"op":"job_start","env":{"MONITOR_JOB_ID":"x"},"anchor_pid":3,"via":"job start"}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::JobStart { anchor_pid: 3, .. }));
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn secrets_are_not_sent_over_the_socket() {
        let env: BTreeMap<String, String> = [
            ("GITHUB_RUN_ID", "1"),
            ("GITHUB_TOKEN", "ghs_secret"),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "eyJ"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = filter_env(&env);
        assert_eq!(kept.get("GITHUB_RUN_ID").map(String::as_str), Some("1"));
        assert!(!kept.contains_key("GITHUB_TOKEN"));
        assert_eq!(kept["ACTIONS_ID_TOKEN_REQUEST_TOKEN"], "[present]");
    }

    #[test]
    fn ancestry_check_follows_proc() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(is_self_or_ancestor(Path::new("/proc"), me, me));
        assert!(is_self_or_ancestor(Path::new("/proc"), me, parent));
        assert!(is_self_or_ancestor(Path::new("/proc"), me, 1));
        assert!(!is_self_or_ancestor(Path::new("/proc"), parent, me));
    }

    #[test]
    fn the_runners_own_processes_reach_an_anchor_without_a_step_between() {
        // A fake /proc: Worker 10 (anchor) -> hook shell 20 -> hook 21; Worker -> step 30
        // -> its child 31; a daemon 40 a step left, adopted by init.
        let root = tempfile::tempdir().unwrap();
        for (pid, parent) in [(10, 1), (20, 10), (21, 20), (30, 10), (31, 30), (40, 1)] {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!(
                    "{pid} (a (tricky) name) S {parent} 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0"
                ),
            )
            .unwrap();
        }
        let runner = RunnerProcesses {
            anchors: [10].into(),
            step_roots: [30].into(),
        };
        assert!(runner.owns(root.path(), 21), "the hook");
        assert!(runner.owns(root.path(), 10), "the anchor itself");
        assert!(!runner.owns(root.path(), 31), "a step's process");
        assert!(!runner.owns(root.path(), 30), "a step's root");
        assert!(!runner.owns(root.path(), 40), "a daemon adopted by init");
        assert!(!runner.owns(root.path(), 99), "a process that is gone");
        assert!(
            !RunnerProcesses::default().owns(root.path(), 21),
            "no job runs"
        );
    }
}
