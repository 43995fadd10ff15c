//! The expected behaviour profile: what a job may do. Documented in docs/profile.md.
//!
//! A profile is YAML. Every section is an allow-list; the `steps` map adds allowances for one
//! step, named by its id (`build`, `__run_2`) or its action (`actions/checkout@v4`, or without
//! the ref). Unknown keys are errors, and every error names the file, line and column, because a
//! misspelt allowance silently ignored is a hole nobody sees.

pub mod learn;
pub mod pattern;
pub mod set;

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::ci::StepIdentity;
pub use pattern::{EgressRule, EgressTarget, PathPattern, RepoPattern};
pub use set::{ProfileChoice, ProfileSet, ProfileSource};

pub const PROFILE_VERSION: u32 = 1;

/// The built-in profile used when none is given (`profiles/default.yml` in the repository).
pub const DEFAULT_PROFILE: &str = include_str!("../../../profiles/default.yml");

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawProfile", into = "RawProfile")]
pub struct Profile {
    pub version: u32,
    /// Job-level allowances.
    pub rules: Rules,
    /// Extra allowances per step, by step id or action.
    pub steps: BTreeMap<String, Rules>,
    /// How the runner's job hooks behave when the agent cannot be told.
    pub hooks: HookPolicy,
    /// What the kernel does, beyond reporting, when some rules are broken.
    pub responses: Responses,
}

/// What is done when a rule is broken: `audit` reports it (the default); `kill` also has the
/// kernel end the offending process at the syscall that reveals it, before it can use what it
/// opened. Only the rules below can kill: the kernel decides them itself (docs/profile.md, `responses`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    #[default]
    Audit,
    Kill,
}

impl Response {
    fn is_audit(&self) -> bool {
        *self == Response::Audit
    }
}

/// `responses:` in a profile (job level only: the kernel does not know steps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responses {
    /// Decide as configured, but kill nothing: findings say `would_kill` (a staged rollout).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearse: bool,
    /// Opening the memory or memory map of a process outside the job (the Worker's), or reading
    /// or writing it by ptrace or process_vm_readv/writev.
    #[serde(
        default,
        rename = "process-memory-read",
        skip_serializing_if = "Response::is_audit"
    )]
    pub process_memory_read: Response,
    /// Opening the environment of a process outside the job (process listers excepted).
    #[serde(
        default,
        rename = "process-environ-read",
        skip_serializing_if = "Response::is_audit"
    )]
    pub process_environ_read: Response,
    /// Install-time code (a dependency's lifecycle script, build script, ...) opening a
    /// credential file.
    #[serde(
        default,
        rename = "credential-read",
        skip_serializing_if = "Response::is_audit"
    )]
    pub credential_read: Response,
    /// Signalling the agent or using bpf(2): the process dies before it returns to user space
    /// (the signal and the call themselves still happen; what the process meant to do next does
    /// not).
    #[serde(
        default,
        rename = "agent-tampering",
        skip_serializing_if = "Response::is_audit"
    )]
    pub agent_tampering: Response,
    /// A dependency's lifecycle script (npm, yarn, pnpm, bun) executing a program written
    /// during the job from a temporary directory or with no name: a dropper's payload, killed
    /// before its first instruction.
    #[serde(
        default,
        rename = "exec-of-job-written-file",
        skip_serializing_if = "Response::is_audit"
    )]
    pub exec_of_job_written_file: Response,
}

impl Responses {
    fn is_default(&self) -> bool {
        *self == Responses::default()
    }

    /// The kernel's `JOB_POLICY` bits for these responses (without egress block mode).
    pub fn kernel_policy(&self) -> u32 {
        use monitor_common::{
            POLICY_KILL_INSTALL_CREDENTIAL, POLICY_KILL_INSTALL_EXEC, POLICY_KILL_PROC_ENVIRON,
            POLICY_KILL_PROC_MEMORY, POLICY_KILL_TAMPER, POLICY_REHEARSE,
        };
        let mut bits = 0;
        if self.process_memory_read == Response::Kill {
            bits |= POLICY_KILL_PROC_MEMORY;
        }
        if self.process_environ_read == Response::Kill {
            bits |= POLICY_KILL_PROC_ENVIRON;
        }
        if self.credential_read == Response::Kill {
            bits |= POLICY_KILL_INSTALL_CREDENTIAL;
        }
        if self.agent_tampering == Response::Kill {
            bits |= POLICY_KILL_TAMPER;
        }
        if self.exec_of_job_written_file == Response::Kill {
            bits |= POLICY_KILL_INSTALL_EXEC;
        }
        if bits != 0 && self.rehearse {
            bits |= POLICY_REHEARSE;
        }
        bits
    }

    /// Whether any rule kills (or rehearses killing).
    pub fn kills(&self) -> bool {
        self.kernel_policy() != 0
    }

    /// Whether the kernel must look at each new program of the job (`exec_scan`: process
    /// listers for the environment kill, install-time code for the credential kill).
    pub fn needs_exec_scan(&self) -> bool {
        use monitor_common::{POLICY_KILL_PROC_ENVIRON, POLICY_NEEDS_INSTALL_SCAN};
        self.kernel_policy() & (POLICY_KILL_PROC_ENVIRON | POLICY_NEEDS_INSTALL_SCAN) != 0
    }

    /// Whether a finding of `rule` (raised inside install-time code when `in_hook`) is one these
    /// responses kill for: what `monitor profile diff` marks `would kill` in runs recorded
    /// before the responses were switched on. The kernel is narrower still (another process
    /// outside the job; a credential known by identity).
    pub fn kills_for(&self, rule: crate::finding::RuleId, in_hook: bool) -> bool {
        use crate::finding::RuleId;
        let response = match rule {
            RuleId::ProcessMemoryRead => self.process_memory_read,
            RuleId::ProcessEnvironRead => self.process_environ_read,
            RuleId::CredentialRead if in_hook => self.credential_read,
            RuleId::AgentTampering => self.agent_tampering,
            RuleId::ExecOfJobWrittenFile | RuleId::ExecFromTemp if in_hook => {
                self.exec_of_job_written_file
            }
            _ => Response::Audit,
        };
        response == Response::Kill
    }
}

/// `hooks:` in a profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookPolicy {
    /// Fail the job when the agent is unreachable (default: warn and let the job run unmonitored).
    #[serde(default)]
    pub fail_closed: bool,
    /// Fail the job (its job-completed hook exits 1, after writing the summary) when it raised
    /// a finding of this severity or worse (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on: Option<crate::finding::Severity>,
}

impl HookPolicy {
    fn is_default(&self) -> bool {
        *self == HookPolicy::default()
    }
}

/// The file form of a profile: the job-level sections sit at the top. (Not `#[serde(flatten)]`:
/// it buffers the document and loses the line and column of errors inside it.)
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    version: u32,
    #[serde(default, skip_serializing_if = "Egress::is_empty")]
    egress: Egress,
    #[serde(default, skip_serializing_if = "Lifecycle::is_empty")]
    lifecycle: Lifecycle,
    #[serde(default, skip_serializing_if = "Credentials::is_empty")]
    credentials: Credentials,
    #[serde(default, skip_serializing_if = "Executables::is_empty")]
    executables: Executables,
    #[serde(default, skip_serializing_if = "Persistence::is_empty")]
    persistence: Persistence,
    #[serde(default, skip_serializing_if = "Processes::is_empty")]
    processes: Processes,
    #[serde(default, skip_serializing_if = "Oidc::is_empty")]
    oidc: Oidc,
    #[serde(default, skip_serializing_if = "RuntimeServices::is_empty")]
    runtime_services: RuntimeServices,
    #[serde(default, skip_serializing_if = "Sources::is_empty")]
    sources: Sources,
    #[serde(default, skip_serializing_if = "Packaging::is_empty")]
    packaging: Packaging,
    #[serde(default, skip_serializing_if = "Containers::is_empty")]
    containers: Containers,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    steps: BTreeMap<String, Rules>,
    #[serde(default, skip_serializing_if = "HookPolicy::is_default")]
    hooks: HookPolicy,
    #[serde(default, skip_serializing_if = "Responses::is_default")]
    responses: Responses,
}

impl From<RawProfile> for Profile {
    fn from(raw: RawProfile) -> Self {
        Profile {
            version: raw.version,
            rules: Rules {
                egress: raw.egress,
                lifecycle: raw.lifecycle,
                credentials: raw.credentials,
                executables: raw.executables,
                persistence: raw.persistence,
                processes: raw.processes,
                oidc: raw.oidc,
                runtime_services: raw.runtime_services,
                sources: raw.sources,
                packaging: raw.packaging,
                containers: raw.containers,
            },
            steps: raw.steps,
            hooks: raw.hooks,
            responses: raw.responses,
        }
    }
}

impl From<Profile> for RawProfile {
    fn from(p: Profile) -> Self {
        RawProfile {
            version: p.version,
            egress: p.rules.egress,
            lifecycle: p.rules.lifecycle,
            credentials: p.rules.credentials,
            executables: p.rules.executables,
            persistence: p.rules.persistence,
            processes: p.rules.processes,
            oidc: p.rules.oidc,
            runtime_services: p.rules.runtime_services,
            sources: p.rules.sources,
            packaging: p.rules.packaging,
            containers: p.rules.containers,
            steps: p.steps,
            hooks: p.hooks,
            responses: p.responses,
        }
    }
}

/// The allow-lists, at job level or for one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default, skip_serializing_if = "Egress::is_empty")]
    pub egress: Egress,
    #[serde(default, skip_serializing_if = "Lifecycle::is_empty")]
    pub lifecycle: Lifecycle,
    #[serde(default, skip_serializing_if = "Credentials::is_empty")]
    pub credentials: Credentials,
    #[serde(default, skip_serializing_if = "Executables::is_empty")]
    pub executables: Executables,
    #[serde(default, skip_serializing_if = "Persistence::is_empty")]
    pub persistence: Persistence,
    #[serde(default, skip_serializing_if = "Processes::is_empty")]
    pub processes: Processes,
    #[serde(default, skip_serializing_if = "Oidc::is_empty")]
    pub oidc: Oidc,
    #[serde(default, skip_serializing_if = "RuntimeServices::is_empty")]
    pub runtime_services: RuntimeServices,
    #[serde(default, skip_serializing_if = "Sources::is_empty")]
    pub sources: Sources,
    #[serde(default, skip_serializing_if = "Packaging::is_empty")]
    pub packaging: Packaging,
    #[serde(default, skip_serializing_if = "Containers::is_empty")]
    pub containers: Containers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Report connections the profile does not allow.
    #[default]
    Audit,
    /// Also refuse them in the kernel (where supported).
    Block,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EgressMode>,
    /// Destinations: `registry.npmjs.org`, `*.githubusercontent.com`, `10.0.0.0/8`, `1.2.3.4:443`,
    /// `[::1]:8080`, or `{host: pypi.org, ports: [443]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<EgressRule>,
    /// DNS to the machine's resolvers is allowed unless this is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_dns: Option<bool>,
    /// Server names a connection may ask for (TLS SNI) at an address resolved from another
    /// name: aliases one CDN serves together (`sni-mismatch` otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_aliases: Vec<SniAlias>,
}

/// `{resolved: "*.cdn.example", sni: "*.example.com"}`: at an address resolved from a name
/// matching `resolved`, a TLS hello may ask for a name matching `sni` (domain patterns as in
/// `egress.allow`: a leading `*.` for subdomains).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniAlias {
    pub resolved: String,
    pub sni: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Npm,
    Pypi,
    Cargo,
}

impl Ecosystem {
    pub fn name(self) -> &'static str {
        match self {
            Ecosystem::Npm => "npm",
            Ecosystem::Pypi => "pypi",
            Ecosystem::Cargo => "cargo",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Packages allowed to run code at install time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<PackageRule>,
    /// Severity of a step's install-code finding when the code did nothing else worth a
    /// finding (default low; anything the code does raises it to critical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<crate::finding::Severity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRule {
    pub ecosystem: Ecosystem,
    /// Package name; `*` wildcards allowed (`@types/*`).
    pub package: String,
    /// Version; `*` wildcards allowed. Absent: any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// More credential files to watch, beyond the built-in list (`~/.config/mytool/token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<PathPattern>,
    /// Exceptions: who may read what.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AccessRule>,
}

/// `path` (a glob; `~/` is any home directory) may be accessed `by` these tools (`npm`, `git`,
/// `ssh`: see docs/profile.md) or executables (absolute globs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub path: PathPattern,
    pub by: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Executables {
    /// When present, executing anything not matched here is a finding (allowlist mode). Also
    /// allows executing from temporary directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<PathPattern>>,
    /// Programs the job writes (or runs from temporary directories) on purpose: exceptions to
    /// `exec-from-temp` and `exec-of-job-written-file` only. Unlike `allow`, never switches on
    /// allowlist mode: this is where `monitor profile learn` puts what it saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<PathPattern>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    /// Writes to persistence places (workflow files, shell rc files, systemd user units, ...)
    /// that are expected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AccessRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processes {
    /// Executables allowed to keep running after their step ended (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<PathPattern>,
}

/// `oidc:`: whether the step may ask the CI for an OIDC identity token (the token that lets
/// `npm publish --provenance` or a cloud login act as the repository). Give it to the publishing
/// or deploying step only, under `steps:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oidc {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow: bool,
}

/// `runtime_services:`: who may call the CI's cache and artifact services (their hosts are the
/// job's `ACTIONS_CACHE_URL`, `ACTIONS_RESULTS_URL`, `ACTIONS_RUNTIME_URL`). They take the job's
/// runtime token, not the workflow's `permissions:`, so they are a channel out (and a way to
/// poison the next job's cache) that egress allowlists let through. The cache, artifact and
/// setup actions that use them (`BUILT_IN_RUNTIME_ACTIONS`) may; `actions` adds more (globs on
/// `owner/repo`), and `allow: true` under `steps:` lets one step (`docker buildx` with
/// `type=gha` caches in a `run:` step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeServices {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// `sources:`: who may write the repository's tracked files after the checkout (generators and
/// formatters): `path` (relative to the workspace, or absolute) and `by` (tools).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<SourceRule>,
}

/// One `sources.allow` entry: tracked files (a glob relative to the workspace, or absolute)
/// and the tools that may write them (names, or absolute executable globs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRule {
    pub path: RepoPattern,
    /// One tool or a list (`by: "protoc*"`, `by: [protoc, buf]`).
    #[serde(deserialize_with = "one_or_many")]
    pub by: Vec<String>,
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Sources {
    fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }
}

/// Actions that call the cache and artifact services as their work (globs on `owner/repo`).
pub const BUILT_IN_RUNTIME_ACTIONS: &[&str] = &[
    "actions/cache",
    "actions/upload-artifact",
    "actions/download-artifact",
    "actions/upload-pages-artifact",
    "actions/deploy-pages",
    "actions/attest*",
    // Setup actions cache what they download (as `action-tampered` lets them fill the tool
    // cache).
    "*/setup-*",
    "golangci/golangci-lint-action",
    "mozilla-actions/sccache-action",
    "DeterminateSystems/magic-nix-cache-action",
    "jdx/mise-action",
    "docker/build-push-action",
    "docker/bake-action",
    "Swatinem/rust-cache",
    "gradle/actions",
    "gradle/gradle-build-action",
    "pnpm/action-setup",
    "dtolnay/rust-toolchain",
];

impl RuntimeServices {
    fn is_empty(&self) -> bool {
        !self.allow && self.actions.is_empty()
    }

    /// Whether `action` (`owner/repo`, any ref) is one this section lists.
    pub fn lists_action(&self, action: &str) -> bool {
        let action = action.to_ascii_lowercase();
        self.actions
            .iter()
            .any(|p| wildcard_match(&p.to_ascii_lowercase(), &action))
    }

    /// Whether `action` is one of `BUILT_IN_RUNTIME_ACTIONS`.
    pub fn built_in_action(action: &str) -> bool {
        let action = action.to_ascii_lowercase();
        BUILT_IN_RUNTIME_ACTIONS
            .iter()
            .any(|p| wildcard_match(&p.to_ascii_lowercase(), &action))
    }
}

/// `packaging:`: files a packing command (`npm pack`/`publish`, `cargo package`, ...) may read
/// although they look like leaks (source maps, `.env` files, keys): globs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packaging {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<PathPattern>,
}

/// `containers:`: images a job's containers may run from with settings that reach the host
/// (`--privileged`, the host's PID or network namespace, the host's `/` or the Docker socket
/// mounted): `*` globs over the image as given (`docker:*-dind`, `ghcr.io/org/builder:*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Containers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

impl Containers {
    fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }

    /// Whether the image may run with host-reaching settings.
    pub fn allows_image(&self, image: &str) -> bool {
        self.allow.iter().any(|p| wildcard_match(p, image))
    }
}

impl Oidc {
    fn is_empty(&self) -> bool {
        !self.allow
    }
}
impl Packaging {
    fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }
}
impl Egress {
    fn is_empty(&self) -> bool {
        *self == Egress::default()
    }
}
impl Lifecycle {
    fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.severity.is_none()
    }
}
impl Credentials {
    fn is_empty(&self) -> bool {
        self.watch.is_empty() && self.allow.is_empty()
    }
}
impl Executables {
    fn is_empty(&self) -> bool {
        self.allow.is_none() && self.written.is_empty()
    }

    /// Whether the job may run `path`, a program it wrote or one in a temporary directory.
    pub fn allows_written(&self, path: &str) -> bool {
        self.allows(path) || self.written.iter().any(|p| p.matches(path))
    }

    /// Whether `path` is on the list (false when there is no list).
    pub fn allows(&self, path: &str) -> bool {
        self.allow
            .as_ref()
            .is_some_and(|list| list.iter().any(|p| p.matches(path)))
    }
}
impl Persistence {
    fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }
}
impl Processes {
    fn is_empty(&self) -> bool {
        self.background.is_empty()
    }
}
impl Rules {
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }
}

/// Parses YAML into `T`, reporting a problem as `file:line:column: message`.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ProfileError> {
    serde_norway::from_str(text).map_err(|e: serde_norway::Error| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The message repeats the position; keep only the problem.
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        ProfileError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    })
}

/// A refused profile: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ProfileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The text of a profile, configuration or list file; a read error is located at the file.
pub fn read_located(path: &Path) -> Result<String, ProfileError> {
    std::fs::read_to_string(path).map_err(|e| ProfileError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })
}

/// The line (from 1) of `text` where `needle` first stands; 0 when nowhere: where to point a
/// problem the YAML parser did not see (a value checked after parsing).
pub fn line_containing(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

impl Profile {
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        Self::parse(&read_located(path)?, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ProfileError> {
        let error = |line: usize, column: usize, message: String| ProfileError {
            file: file.to_string(),
            line,
            column,
            message,
        };
        let profile: Profile = parse_yaml(text, file)?;
        if profile.version != PROFILE_VERSION {
            let line = text
                .lines()
                .position(|l| l.starts_with("version"))
                .map_or(1, |i| i + 1);
            return Err(error(
                line,
                1,
                format!(
                    "unsupported profile version {} (this monitor reads version {PROFILE_VERSION})",
                    profile.version
                ),
            ));
        }
        let aliases = std::iter::once(&profile.rules)
            .chain(profile.steps.values())
            .flat_map(|r| &r.egress.sni_aliases);
        for alias in aliases {
            for pattern in [&alias.resolved, &alias.sni] {
                if let Err(message) = pattern::check_domain_pattern(pattern) {
                    let line = line_containing(text, pattern);
                    return Err(error(line, 1, format!("egress.sni_aliases: {message}")));
                }
            }
        }
        Ok(profile)
    }

    pub fn default_profile() -> Self {
        Self::parse(DEFAULT_PROFILE, "<built-in default profile>")
            .expect("the built-in profile is valid (tested)")
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("profiles always serialize")
    }

    /// The job-level rules and those of every step section that names `step`.
    pub fn rules_for<'a>(
        &'a self,
        step: Option<&'a StepIdentity>,
    ) -> impl Iterator<Item = &'a Rules> {
        std::iter::once(&self.rules).chain(
            self.steps
                .iter()
                .filter(move |(selector, _)| step.is_some_and(|s| s.matches(selector)))
                .map(|(_, rules)| rules),
        )
    }

    pub fn egress_mode(&self) -> EgressMode {
        self.rules.egress.mode.unwrap_or_default()
    }

    pub fn allows_dns(&self) -> bool {
        self.rules.egress.allow_dns.unwrap_or(true)
    }
}

/// What a profile would need to allow what a finding reports; `monitor profile learn` adds
/// these to a profile, `monitor profile diff` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "section", rename_all = "snake_case")]
pub enum Allowance {
    Egress {
        address: IpAddr,
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
    },
    /// The packages whose install-time code one step ran (any version: a version pin would
    /// be stale at the next dependency update).
    Lifecycle {
        ecosystem: Ecosystem,
        packages: Vec<String>,
    },
    Credentials {
        path: String,
        by: String,
    },
    Persistence {
        path: String,
        by: String,
    },
    /// A program in allowlist mode (`executables.allow`).
    Executables {
        path: String,
    },
    /// A program the job wrote or ran from a temporary directory (`executables.written`).
    WrittenProgram {
        path: String,
    },
    Processes {
        executable: String,
    },
    /// A step that may request OIDC tokens (added under `steps:`, never at job level).
    Oidc {
        step: String,
    },
    /// A step that may call the cache and artifact services (under `steps:`).
    RuntimeServices {
        step: String,
    },
    /// A server name asked for at an address resolved from another name.
    SniAlias {
        resolved: String,
        sni: String,
    },
    /// A tool that may write a tracked file (`path` relative to the workspace).
    Sources {
        path: String,
        by: String,
    },
    Packaging {
        path: String,
    },
    /// An image whose containers may have host-reaching settings.
    Containers {
        image: String,
    },
}

impl Profile {
    /// Adds an allowance at job level (idempotent); whether it added anything.
    pub fn allow(&mut self, allowance: &Allowance) -> bool {
        let rules = &mut self.rules;
        // Token minting is a step's right, not the job's: its allowance goes under `steps:`.
        match allowance {
            Allowance::Egress {
                address,
                port,
                domain,
            } => {
                let rule = match domain {
                    Some(d) => EgressRule::domain_port(d, *port),
                    None => EgressRule::address_port(*address, *port),
                };
                push_new(&mut rules.egress.allow, rule)
            }
            Allowance::Lifecycle {
                ecosystem,
                packages,
            } => packages.iter().fold(false, |added, package| {
                let rule = PackageRule {
                    ecosystem: *ecosystem,
                    package: package.clone(),
                    version: None,
                };
                push_new(&mut rules.lifecycle.allow, rule) || added
            }),
            Allowance::Credentials { path, by } => {
                add_access(&mut rules.credentials.allow, path, by)
            }
            Allowance::Persistence { path, by } => {
                add_access(&mut rules.persistence.allow, path, by)
            }
            Allowance::SniAlias { resolved, sni } => {
                let alias = SniAlias {
                    resolved: resolved.to_ascii_lowercase(),
                    sni: sni.to_ascii_lowercase(),
                };
                push_new(&mut rules.egress.sni_aliases, alias)
            }
            Allowance::Sources { path, by } => {
                let pattern = RepoPattern::literal(path);
                match rules.sources.allow.iter_mut().find(|r| r.path == pattern) {
                    Some(rule) if rule.by.contains(by) => false,
                    Some(rule) => {
                        rule.by.push(by.clone());
                        true
                    }
                    None => {
                        rules.sources.allow.push(SourceRule {
                            path: pattern,
                            by: vec![by.clone()],
                        });
                        true
                    }
                }
            }
            Allowance::Executables { path } => push_new(
                rules.executables.allow.get_or_insert_with(Vec::new),
                PathPattern::literal(path),
            ),
            Allowance::WrittenProgram { path } => {
                push_new(&mut rules.executables.written, PathPattern::literal(path))
            }
            Allowance::Processes { executable } => push_new(
                &mut rules.processes.background,
                PathPattern::literal(executable),
            ),
            Allowance::Packaging { path } => {
                push_new(&mut rules.packaging.allow, PathPattern::literal(path))
            }
            Allowance::Oidc { step } => {
                let oidc = &mut self.steps.entry(step.clone()).or_default().oidc.allow;
                !std::mem::replace(oidc, true)
            }
            Allowance::RuntimeServices { step } => {
                let allow = &mut self
                    .steps
                    .entry(step.clone())
                    .or_default()
                    .runtime_services
                    .allow;
                !std::mem::replace(allow, true)
            }
            Allowance::Containers { image } => push_new(&mut rules.containers.allow, image.clone()),
        }
    }
}

fn add_access(list: &mut Vec<AccessRule>, path: &str, by: &str) -> bool {
    // `/proc/*/environ`-style allowances are patterns by construction; other paths are literal.
    let pattern = match path.strip_prefix("/proc/*/") {
        Some(file) if !file.contains(['*', '?', '[', '{']) => {
            PathPattern::new(path).unwrap_or_else(|_| PathPattern::literal(path))
        }
        _ => PathPattern::literal(path),
    };
    add_access_pattern(list, pattern, by)
}

/// Appends `item` unless the list has it already; whether it did.
fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) -> bool {
    if list.contains(&item) {
        return false;
    }
    list.push(item);
    true
}

/// Adds `by` to the rule for `pattern` (made if missing); false when it was already there.
pub(crate) fn add_access_pattern(
    list: &mut Vec<AccessRule>,
    pattern: PathPattern,
    by: &str,
) -> bool {
    if let Some(rule) = list.iter_mut().find(|r| r.path == pattern) {
        if rule.by.iter().any(|b| b == by) {
            return false;
        }
        rule.by.push(by.to_string());
        return true;
    }
    list.push(AccessRule {
        path: pattern,
        by: vec![by.to_string()],
    });
    true
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl PackageRule {
    pub fn matches(&self, ecosystem: Ecosystem, package: &str, version: Option<&str>) -> bool {
        self.ecosystem == ecosystem
            && wildcard_match(&self.package, package)
            && match (&self.version, version) {
                (None, _) => true,
                (Some(want), Some(have)) => wildcard_match(want, have),
                (Some(_), None) => false,
            }
    }
}

#[cfg(test)]
mod tests;
