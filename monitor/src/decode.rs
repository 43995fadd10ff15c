//! Decoding ring-buffer records into typed kernel events, with every size checked.
//!
//! A record that is too short, names an unknown kind, or whose variable lengths run past its end is
//! an error the caller counts; nothing here can panic on bad input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::collections::BTreeMap;

use monitor_common::{
    ConnectEvent, DnsEvent, EnvEvent, EventHeader, EventKind, ExecEvent, ExitEvent, FileNameEvent,
    FileOpenEvent, ForkEvent, TamperEvent, TlsHelloEvent, AF_INET, AF_INET6, COMM_LEN,
    DNS_TRUNCATED,
};

use crate::ci::env::select_env;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {needed}-byte {what}")]
    TooShort {
        what: &'static str,
        len: usize,
        needed: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown address family {0}")]
    UnknownFamily(u16),
}

impl DecodeError {
    /// A bounded label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } => "too_short",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::UnknownFamily(_) => "unknown_family",
        }
    }
}

/// The identity and context every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kind: EventKind,
    pub flags: u32,
    pub ts_ns: u64,
    pub tgid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub start_ns: u64,
    pub parent_start_ns: u64,
    pub cgroup_id: u64,
    /// The mount namespace's inode (`EventHeader::mnt_ns`; 0 unknown).
    pub mnt_ns: u32,
    /// Its id for the boot, never reused (`EventHeader::mnt_ns_id`; 0 unknown).
    pub mnt_ns_id: u64,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    Exec {
        header: Header,
        exe: String,
        argv: Vec<String>,
        filename: String,
        argv_total_len: u32,
        cwd: String,
        /// The executable's change time as the kernel saw it at exec (Unix ns; 0: unknown).
        exe_ctime_ns: i128,
    },
    /// Only the environment keys the agent needs (see `ci::env`); the rest never leaves decode.
    Env {
        header: Header,
        vars: BTreeMap<String, String>,
        total_len: u32,
    },
    Fork {
        header: Header,
    },
    Exit {
        header: Header,
        exit_status: u32,
    },
    Connect {
        header: Header,
        fd: i32,
        result: i32,
        sock_type: u16,
        address: IpAddr,
        port: u16,
        /// `CONNECT_VIA_*`.
        via: u8,
        /// The socket's family (`AF_INET`, `AF_INET6`, `AF_PACKET`).
        family: u16,
        /// The kernel refused it (block mode).
        blocked: bool,
    },
    Tamper {
        header: Header,
        syscall: u32,
        target: i32,
        arg: u64,
    },
    /// A DNS message seen as a packet: a question leaving, or a response reaching a socket that
    /// asked (not yet parsed).
    Dns {
        header: Header,
        fd: i32,
        sock_type: u16,
        payload: Vec<u8>,
        received_len: u32,
        truncated: bool,
        /// A question on its way out (`DNS_QUESTION`), not an answer read.
        question: bool,
        /// An answer seen arriving from where its question went (`DNS_FROM_ASKED`).
        from_asked: bool,
    },
    /// A unix socket connected to a watched container runtime socket (`socket`: the agent's
    /// number for it).
    RuntimeClient {
        header: Header,
        fd: i32,
        socket: u32,
    },
    /// The first TLS ClientHello of a TCP socket (`payload`: its first bytes).
    TlsHello {
        header: Header,
        address: IpAddr,
        port: u16,
        payload: Vec<u8>,
    },
    Open {
        header: Header,
        path: String,
        f_flags: u32,
        f_mode: u32,
        ino: u64,
        dev: u32,
        matched: u32,
        fd: i32,
        /// Whose `/proc/<pid>/...` file it is (initial-namespace pid), 0 when none.
        proc_owner: u32,
        /// The inode's generation (0: unknown).
        generation: u32,
    },
    /// A rename, link or symlink whose names passed the watch filter.
    Name {
        header: Header,
        op: u32,
        matched: u32,
        /// The directory a relative name is relative to (`NAME_DIR_FOR_*` in the flags say which).
        dir: String,
        name: String,
        from: String,
    },
}

impl KernelEvent {
    pub fn header(&self) -> &Header {
        match self {
            KernelEvent::Exec { header, .. }
            | KernelEvent::Env { header, .. }
            | KernelEvent::Fork { header }
            | KernelEvent::Exit { header, .. }
            | KernelEvent::Connect { header, .. }
            | KernelEvent::Dns { header, .. }
            | KernelEvent::TlsHello { header, .. }
            | KernelEvent::RuntimeClient { header, .. }
            | KernelEvent::Tamper { header, .. }
            | KernelEvent::Open { header, .. }
            | KernelEvent::Name { header, .. } => header,
        }
    }

    pub fn header_mut(&mut self) -> &mut Header {
        match self {
            KernelEvent::Exec { header, .. }
            | KernelEvent::Env { header, .. }
            | KernelEvent::Fork { header }
            | KernelEvent::Exit { header, .. }
            | KernelEvent::Connect { header, .. }
            | KernelEvent::Dns { header, .. }
            | KernelEvent::TlsHello { header, .. }
            | KernelEvent::RuntimeClient { header, .. }
            | KernelEvent::Tamper { header, .. }
            | KernelEvent::Open { header, .. }
            | KernelEvent::Name { header, .. } => header,
        }
    }

    /// Roughly what the decoded record holds in memory: a record of 4 KiB of one-letter
    /// arguments decodes to some 100 KiB of strings (joined only once redacted, in the process
    /// table), so the queue to the pipeline is bounded by this, not by its count of records.
    pub fn memory_bytes(&self) -> usize {
        let text = |t: &String| t.len() + STRING_OVERHEAD;
        std::mem::size_of::<Self>()
            + match self {
                KernelEvent::Exec {
                    exe,
                    argv,
                    filename,
                    cwd,
                    ..
                } => text(exe) + text(filename) + text(cwd) + argv_memory(argv),
                KernelEvent::Env { vars, .. } => vars.iter().map(|(k, v)| text(k) + text(v)).sum(),
                KernelEvent::Dns { payload, .. } | KernelEvent::TlsHello { payload, .. } => {
                    payload.len()
                }
                KernelEvent::Open { path, .. } => text(path),
                KernelEvent::Name {
                    dir, name, from, ..
                } => text(dir) + text(name) + text(from),
                KernelEvent::Fork { .. }
                | KernelEvent::RuntimeClient { .. }
                | KernelEvent::Exit { .. }
                | KernelEvent::Connect { .. }
                | KernelEvent::Tamper { .. } => 0,
            }
    }
}

/// Reads a `#[repr(C)]` POD struct from the start of `bytes`.
fn read_struct<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let needed = std::mem::size_of::<T>();
    if bytes.len() < needed {
        return Err(DecodeError::TooShort {
            what,
            len: bytes.len(),
            needed,
        });
    }
    // SAFETY: length checked; T is a plain repr(C) struct of integers (any bit pattern is valid);
    // read_unaligned does not require the ring buffer's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Splits `lens` consecutive sections off the bytes after a fixed part.
fn sections<const N: usize>(
    bytes: &[u8],
    fixed: usize,
    lens: [usize; N],
) -> Result<[&[u8]; N], DecodeError> {
    let needed = fixed + lens.iter().sum::<usize>();
    if bytes.len() < needed {
        return Err(DecodeError::TooShort {
            what: "variable data",
            len: bytes.len(),
            needed,
        });
    }
    let mut out = [&bytes[0..0]; N];
    let mut at = fixed;
    for (slot, len) in out.iter_mut().zip(lens) {
        *slot = &bytes[at..at + len];
        at += len;
    }
    Ok(out)
}

/// Kernel strings are bytes; paths and argv are shown lossily (invalid UTF-8 becomes U+FFFD).
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Arguments kept apart; from the 128th on they are joined (with spaces) into one. A 4 KiB
/// command line of one-letter arguments would otherwise cost some 100 KiB of strings in every
/// record of the process. Applied after redaction (which reads arguments by position: the
/// value after `--password`), so the joined text is already clean.
pub const MAX_ARGS_APART: usize = 128;

/// What a string costs beyond its bytes: its header and its allocation's least size.
const STRING_OVERHEAD: usize = 48;

/// Roughly what a command line holds in memory.
pub fn argv_memory(argv: &[String]) -> usize {
    argv.iter().map(|a| a.len() + STRING_OVERHEAD).sum()
}

/// `argv` with its arguments past `MAX_ARGS_APART - 1` joined into the last one.
pub fn join_past_bound(mut argv: Vec<String>) -> Vec<String> {
    if argv.len() > MAX_ARGS_APART {
        let rest = argv[MAX_ARGS_APART - 1..].join(" ");
        argv.truncate(MAX_ARGS_APART - 1);
        argv.push(rest);
        argv.shrink_to_fit();
    }
    argv
}

pub fn split_nul(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn header(raw: &EventHeader) -> Result<Header, DecodeError> {
    let kind = EventKind::from_u32(raw.kind).ok_or(DecodeError::UnknownKind(raw.kind))?;
    let comm: [u8; COMM_LEN] = raw.comm;
    Ok(Header {
        kind,
        flags: raw.flags,
        ts_ns: raw.ts_ns,
        tgid: raw.tgid,
        pid: raw.pid,
        ppid: raw.ppid,
        uid: raw.uid,
        gid: raw.gid,
        start_ns: raw.start_ns,
        parent_start_ns: raw.parent_start_ns,
        cgroup_id: raw.cgroup_id,
        mnt_ns: raw.mnt_ns,
        mnt_ns_id: raw.mnt_ns_id,
        comm: text(&comm),
    })
}

/// A tamper record kept in the kernel's tamper log (not read from the ring).
pub fn decode_tamper(raw: &TamperEvent) -> Result<KernelEvent, DecodeError> {
    Ok(KernelEvent::Tamper {
        header: header(&raw.header)?,
        syscall: raw.syscall,
        target: raw.target,
        arg: raw.arg,
    })
}

/// An address as the kernel's records carry it: IPv4 in the first 4 of 16 bytes.
fn ip_of(family: u16, addr: &[u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*addr))),
        other => Err(DecodeError::UnknownFamily(other)),
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    let raw_header: EventHeader = read_struct(bytes, "header")?;
    let header = header(&raw_header)?;
    Ok(match header.kind {
        EventKind::ProcessExec => {
            let raw: ExecEvent = read_struct(bytes, "exec record")?;
            let [filename, exe, argv, cwd] = sections(
                bytes,
                std::mem::size_of::<ExecEvent>(),
                [
                    raw.filename_len as usize,
                    raw.exe_len as usize,
                    raw.argv_len as usize,
                    raw.cwd_len as usize,
                ],
            )?;
            KernelEvent::Exec {
                header,
                exe: text(exe),
                argv: split_nul(argv),
                filename: text(filename),
                argv_total_len: raw.argv_total_len,
                cwd: text(cwd),
                exe_ctime_ns: raw.exe_ctime_sec as i128 * 1_000_000_000
                    + raw.exe_ctime_nsec as i128,
            }
        }
        EventKind::ProcessEnv => {
            let raw: EnvEvent = read_struct(bytes, "env record")?;
            let [block] = sections(
                bytes,
                std::mem::size_of::<EnvEvent>(),
                [raw.env_len as usize],
            )?;
            KernelEvent::Env {
                header,
                vars: select_env(block),
                total_len: raw.env_total_len,
            }
        }
        EventKind::ProcessFork => {
            let _: ForkEvent = read_struct(bytes, "fork record")?;
            KernelEvent::Fork { header }
        }
        EventKind::ProcessExit => {
            let raw: ExitEvent = read_struct(bytes, "exit record")?;
            KernelEvent::Exit {
                header,
                exit_status: raw.exit_code,
            }
        }
        EventKind::NetConnect => {
            let raw: ConnectEvent = read_struct(bytes, "connect record")?;
            let address = match raw.family {
                // A packet socket has no address (`via` says raw socket).
                monitor_common::AF_PACKET if raw.via == monitor_common::CONNECT_VIA_RAW_SOCKET => {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }
                family => ip_of(family, &raw.addr)?,
            };
            KernelEvent::Connect {
                header,
                fd: raw.fd,
                result: raw.result,
                sock_type: raw.sock_type,
                address,
                port: raw.port,
                via: raw.via,
                family: raw.family,
                blocked: raw.blocked != 0,
            }
        }
        EventKind::Tamper => {
            let raw: TamperEvent = read_struct(bytes, "tamper record")?;
            KernelEvent::Tamper {
                header,
                syscall: raw.syscall,
                target: raw.target,
                arg: raw.arg,
            }
        }
        EventKind::NetDns => {
            let raw: DnsEvent = read_struct(bytes, "dns record")?;
            let [payload] = sections(
                bytes,
                std::mem::size_of::<DnsEvent>(),
                [raw.payload_len as usize],
            )?;
            KernelEvent::Dns {
                truncated: header.flags & DNS_TRUNCATED != 0,
                question: header.flags & monitor_common::DNS_QUESTION != 0,
                from_asked: header.flags & monitor_common::DNS_FROM_ASKED != 0,
                header,
                fd: raw.fd,
                sock_type: raw.sock_type,
                payload: payload.to_vec(),
                received_len: raw.received_len,
            }
        }
        EventKind::RuntimeClient => {
            let raw: monitor_common::RuntimeClientEvent =
                read_struct(bytes, "runtime client record")?;
            KernelEvent::RuntimeClient {
                header,
                fd: raw.fd,
                socket: raw.socket,
            }
        }
        EventKind::NetTls => {
            let raw: TlsHelloEvent = read_struct(bytes, "tls record")?;
            let [payload] = sections(
                bytes,
                std::mem::size_of::<TlsHelloEvent>(),
                [raw.payload_len as usize],
            )?;
            KernelEvent::TlsHello {
                header,
                address: ip_of(raw.family, &raw.addr)?,
                port: raw.port,
                payload: payload.to_vec(),
            }
        }
        EventKind::FileName => {
            let raw: FileNameEvent = read_struct(bytes, "name record")?;
            let [dir, name, from] = sections(
                bytes,
                std::mem::size_of::<FileNameEvent>(),
                [
                    raw.dir_len as usize,
                    raw.name_len as usize,
                    raw.from_len as usize,
                ],
            )?;
            KernelEvent::Name {
                header,
                op: raw.op,
                matched: raw.matched,
                dir: text(dir),
                name: text(name),
                from: text(from),
            }
        }
        EventKind::FileOpen => {
            let raw: FileOpenEvent = read_struct(bytes, "open record")?;
            let [path] = sections(
                bytes,
                std::mem::size_of::<FileOpenEvent>(),
                [raw.path_len as usize],
            )?;
            KernelEvent::Open {
                header,
                path: text(path),
                f_flags: raw.f_flags,
                f_mode: raw.f_mode,
                ino: raw.ino,
                dev: raw.dev,
                matched: raw.matched,
                fd: raw.fd,
                proc_owner: raw.proc_owner,
                generation: raw.generation,
            }
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: test helper over plain repr(C) structs.
        unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    pub fn raw_header(kind: EventKind, tgid: u32) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"node");
        EventHeader {
            kind: kind as u32,
            tgid,
            pid: tgid,
            ppid: 1,
            start_ns: 5_000_000_000,
            comm,
            ..Default::default()
        }
    }

    fn exec_record(filename: &[u8], exe: &[u8], argv: &[u8]) -> Vec<u8> {
        let raw = ExecEvent {
            header: raw_header(EventKind::ProcessExec, 42),
            exe_len: exe.len() as u16,
            argv_len: argv.len() as u16,
            filename_len: filename.len() as u16,
            argv_total_len: argv.len() as u32,
            ..Default::default()
        };
        let mut bytes = as_bytes(&raw);
        bytes.extend_from_slice(filename);
        bytes.extend_from_slice(exe);
        bytes.extend_from_slice(argv);
        bytes
    }

    #[test]
    fn decodes_exec_with_sections() {
        let bytes = exec_record(b"./run.sh", b"/usr/bin/bash", b"bash\0./run.sh\0--flag\0");
        let KernelEvent::Exec {
            header,
            exe,
            argv,
            filename,
            ..
        } = decode(&bytes).unwrap()
        else {
            panic!("not an exec")
        };
        assert_eq!(header.tgid, 42);
        assert_eq!(header.comm, "node");
        assert_eq!(exe, "/usr/bin/bash");
        assert_eq!(filename, "./run.sh");
        assert_eq!(argv, vec!["bash", "./run.sh", "--flag"]);
    }

    #[test]
    fn argv_cut_in_the_middle_keeps_the_partial_argument() {
        assert_eq!(split_nul(b"npm\0instal"), vec!["npm", "instal"]);
        assert_eq!(split_nul(b""), Vec::<String>::new());
        assert_eq!(split_nul(b"a\0\0b\0"), vec!["a", "", "b"]);
    }

    #[test]
    fn many_short_arguments_past_the_bound_are_joined_into_the_last() {
        let argv = join_past_bound(vec!["a".to_string(); 2000]);
        assert_eq!(argv.len(), MAX_ARGS_APART);
        assert_eq!(argv[MAX_ARGS_APART - 2], "a");
        let rest = 2000 - (MAX_ARGS_APART - 1);
        assert_eq!(argv.last().unwrap().len(), rest * 2 - 1);
        assert_eq!(
            join_past_bound(vec!["npm".into(), "ci".into()]),
            vec!["npm", "ci"]
        );
    }

    #[test]
    fn sections_longer_than_the_record_are_an_error() {
        let mut bytes = exec_record(b"x", b"/bin/x", b"x\0");
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::TooShort {
                what: "variable data",
                ..
            })
        ));
    }

    #[test]
    fn short_and_unknown_records_are_errors_not_panics() {
        assert!(matches!(
            decode(&[]),
            Err(DecodeError::TooShort { what: "header", .. })
        ));
        assert!(matches!(
            decode(&[0u8; 10]),
            Err(DecodeError::TooShort { .. })
        ));
        let mut header = raw_header(EventKind::ProcessExec, 1);
        header.kind = 999;
        assert_eq!(
            decode(&as_bytes(&header)),
            Err(DecodeError::UnknownKind(999))
        );
        // An exec header without its fixed payload.
        let header = raw_header(EventKind::ProcessExec, 1);
        assert!(matches!(
            decode(&as_bytes(&header)),
            Err(DecodeError::TooShort {
                what: "exec record",
                ..
            })
        ));
    }

    #[test]
    fn decodes_connect_v4_v6_and_rejects_other_families() {
        let mut raw = ConnectEvent {
            header: raw_header(EventKind::NetConnect, 7),
            family: AF_INET,
            port: 443,
            sock_type: 1,
            ..Default::default()
        };
        raw.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let KernelEvent::Connect { address, port, .. } = decode(&as_bytes(&raw)).unwrap() else {
            panic!()
        };
        assert_eq!(address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(port, 443);
        raw.family = AF_INET6;
        raw.addr = Ipv6Addr::LOCALHOST.octets();
        let KernelEvent::Connect { address, .. } = decode(&as_bytes(&raw)).unwrap() else {
            panic!()
        };
        assert_eq!(address, IpAddr::V6(Ipv6Addr::LOCALHOST));
        raw.family = 1;
        assert_eq!(decode(&as_bytes(&raw)), Err(DecodeError::UnknownFamily(1)));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap stand-in until the fuzz target lands: many lengths and patterns.
        let mut seed = 0x1234_5678_u64;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
