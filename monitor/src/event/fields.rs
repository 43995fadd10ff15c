//! The closed sets of values event fields take: typed, so the engine matches on them instead of
//! comparing strings, and serialised exactly as event schema 6 spells them (docs/events.md).

use serde::{Deserialize, Serialize};

/// How a file was opened (from the file's `f_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    pub fn reads(self) -> bool {
        self != Access::Write
    }

    pub fn writes(self) -> bool {
        self != Access::Read
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "read_write",
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection's socket type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP or ICMPv6 echo (a ping socket).
    Icmp,
    Other,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Other => "other",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a DNS answer travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Udp,
    Tcp,
}

/// The syscall a tamper event reports (`monitor_common::TAMPER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperSyscall {
    Kill,
    Tkill,
    Tgkill,
    Ptrace,
    Bpf,
    ProcessVmReadv,
    ProcessVmWritev,
    /// A signal generated for the agent by any route (pidfd, process group, 32-bit syscalls).
    Signal,
    /// A signal to an earlier agent, read back from the kernel's tamper log by the agent that
    /// started after it (the earlier one was killed before it could report it).
    SignalLogged,
    /// A signal that stops or ends a guarded host service (logging, audit, security daemon).
    SignalGuarded,
    /// A kernel module load asked for (init_module, finit_module).
    ModuleLoad,
    /// Another process's descriptor taken (`pidfd_getfd`).
    PidfdGetfd,
    /// A number this agent does not know (a newer kernel program).
    Unknown,
}

impl TamperSyscall {
    pub fn from_kernel(code: u32) -> Self {
        match code {
            monitor_common::TAMPER_KILL => TamperSyscall::Kill,
            monitor_common::TAMPER_TKILL => TamperSyscall::Tkill,
            monitor_common::TAMPER_TGKILL => TamperSyscall::Tgkill,
            monitor_common::TAMPER_PTRACE => TamperSyscall::Ptrace,
            monitor_common::TAMPER_BPF => TamperSyscall::Bpf,
            monitor_common::TAMPER_VM_READV => TamperSyscall::ProcessVmReadv,
            monitor_common::TAMPER_VM_WRITEV => TamperSyscall::ProcessVmWritev,
            monitor_common::TAMPER_SIGNAL => TamperSyscall::Signal,
            monitor_common::TAMPER_SIGNAL_LOGGED => TamperSyscall::SignalLogged,
            monitor_common::TAMPER_SIGNAL_GUARDED => TamperSyscall::SignalGuarded,
            monitor_common::TAMPER_MODULE_LOAD => TamperSyscall::ModuleLoad,
            monitor_common::TAMPER_PIDFD_GETFD => TamperSyscall::PidfdGetfd,
            _ => TamperSyscall::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TamperSyscall::Kill => "kill",
            TamperSyscall::Tkill => "tkill",
            TamperSyscall::Tgkill => "tgkill",
            TamperSyscall::Ptrace => "ptrace",
            TamperSyscall::Bpf => "bpf",
            TamperSyscall::ProcessVmReadv => "process_vm_readv",
            TamperSyscall::ProcessVmWritev => "process_vm_writev",
            TamperSyscall::Signal => "signal",
            TamperSyscall::SignalLogged => "signal_logged",
            TamperSyscall::SignalGuarded => "signal_guarded",
            TamperSyscall::ModuleLoad => "module_load",
            TamperSyscall::PidfdGetfd => "pidfd_getfd",
            TamperSyscall::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for TamperSyscall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the kernel's open filter let a path through (`monitor_common::MATCH_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchReason {
    Name,
    NamePrefix,
    NameSuffix,
    ParentDir,
    /// Another process's `/proc/PID/{mem,environ,maps}`.
    ProcOtherProcess,
    All,
    /// The old name of a rename or link (a watched file given another name).
    From,
    /// The file is a watched file by identity (device and inode), whatever its name.
    Identity,
    /// The file lies under a watched directory (the runner's actions and tool cache), found by
    /// the directory's identity.
    Subtree,
    /// The file is one of the job's tracked sources (by identity), written after the checkout.
    Source,
}

/// How a name was given to a file without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameOp {
    Rename,
    Link,
    Symlink,
    /// A name removed (the event's `path`; no `from`).
    Unlink,
}

impl NameOp {
    pub fn from_raw(op: u32) -> Option<Self> {
        match op {
            monitor_common::NAME_OP_RENAME => Some(NameOp::Rename),
            monitor_common::NAME_OP_LINK => Some(NameOp::Link),
            monitor_common::NAME_OP_SYMLINK => Some(NameOp::Symlink),
            monitor_common::NAME_OP_UNLINK => Some(NameOp::Unlink),
            _ => None,
        }
    }

    /// The verb a finding uses: "renamed a file to", ...
    pub fn verb(self) -> &'static str {
        match self {
            NameOp::Rename => "renamed a file onto",
            NameOp::Link => "hard-linked a file as",
            NameOp::Symlink => "made a symlink at",
            NameOp::Unlink => "deleted",
        }
    }
}

/// Which route opened (or named) a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenVia {
    /// open, openat, openat2, creat, open_by_handle_at (rename, link, symlink and their `at`
    /// forms, for names).
    #[default]
    Syscall,
    IoUring,
    /// The BPF-LSM hooks (`file_open`; `path_rename`, `path_link`, `path_symlink`): any route
    /// (an open's record has no descriptor yet; a name's is seen before the filesystem acts).
    Lsm,
    /// fentry on `security_file_open` (`security_path_*` for names): any route.
    Fentry,
}

/// What the kernel did, on its own, to the process that acted (a profile's `responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelResponse {
    /// The kernel refused the call (BPF-LSM, `EPERM`) and killed the process: it never got
    /// what it asked for.
    Blocked,
    /// Killed (SIGKILL) before it returned from the syscall.
    Killed,
    /// The profile rehearses: it would have been killed.
    WouldKill,
    /// A kill was due, but the kernel refused to send the signal.
    KillFailed,
}

impl KernelResponse {
    /// From a record's `RESPONSE_*` header flags.
    pub fn from_flags(flags: u32) -> Option<Self> {
        use monitor_common::{
            RESPONSE_KILLED, RESPONSE_KILL_FAILED, RESPONSE_REFUSED, RESPONSE_WOULD_KILL,
        };
        if flags & RESPONSE_REFUSED != 0 {
            Some(KernelResponse::Blocked)
        } else if flags & RESPONSE_KILLED != 0 {
            Some(KernelResponse::Killed)
        } else if flags & RESPONSE_KILL_FAILED != 0 {
            Some(KernelResponse::KillFailed)
        } else if flags & RESPONSE_WOULD_KILL != 0 {
            Some(KernelResponse::WouldKill)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KernelResponse::Blocked => "blocked",
            KernelResponse::Killed => "killed",
            KernelResponse::WouldKill => "would_kill",
            KernelResponse::KillFailed => "kill_failed",
        }
    }
}

/// Which route gave a connection or datagram its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectVia {
    /// `connect(2)`, with its result.
    #[default]
    Connect,
    /// A connect made another way: io_uring, a 32-bit syscall, TCP Fast Open.
    OtherConnect,
    /// A datagram sent with a destination (`sendto`, `sendmsg`, `sendmmsg`, io_uring).
    Send,
    /// A raw IPv4/IPv6 or packet socket was created: no address or port to judge (`port` is
    /// the protocol number).
    RawSocket,
    /// An ICMP echo request sent on a ping socket (seen as the packet leaves; `port` is 0).
    Ping,
}

impl ConnectVia {
    /// From the kernel record's `via` (`CONNECT_VIA_*`).
    pub fn from_kernel(via: u8) -> Self {
        match via {
            monitor_common::CONNECT_VIA_OTHER => ConnectVia::OtherConnect,
            monitor_common::CONNECT_VIA_SEND => ConnectVia::Send,
            monitor_common::CONNECT_VIA_RAW_SOCKET => ConnectVia::RawSocket,
            monitor_common::CONNECT_VIA_PING => ConnectVia::Ping,
            _ => ConnectVia::Connect,
        }
    }

    /// How a finding says it: "connection to" / "datagram to".
    pub fn noun(self) -> &'static str {
        match self {
            ConnectVia::Connect | ConnectVia::OtherConnect => "connection",
            ConnectVia::Send => "datagram",
            ConnectVia::RawSocket => "raw socket",
            ConnectVia::Ping => "ping",
        }
    }
}
