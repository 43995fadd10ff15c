//! Who is talking to the container runtime right now: the processes holding a connection to its
//! unix socket. Asked the moment the runtime says a container was created, it names the client
//! that asked for it (the `docker` CLI of a step, compose, an SDK, a raw request), which links the
//! container to that client's job and step even with several jobs running at once.
//!
//! The kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `unix_diag`) list the established unix
//! sockets with their bound name and their peer: the daemon's accepted sockets carry its socket's
//! name, their peers are the clients' sockets, and `/proc/<pid>/fd` says whose those are. The fd
//! walk reads every process's descriptors once per created container: milliseconds on a runner,
//! and only when a container is made.

use std::{collections::HashSet, path::Path};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_NAME: u32 = 0x1;
const UDIAG_SHOW_PEER: u32 = 0x4;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const TCP_ESTABLISHED: u32 = 1;
const TCP_LISTEN: u32 = 10;
/// Bound on the replies read (a machine with more unix sockets than this is cut short).
const MAX_REPLY_BYTES: usize = 64 << 20;

/// The pids (other than this process) connected to the unix socket bound at `socket`.
pub fn clients_of(socket: &Path) -> Vec<u32> {
    clients_of_any(&[socket])
}

/// The pids (other than this process) connected to any of these unix sockets: one dump of the
/// machine's sockets and one walk of the descriptors, however many sockets.
pub fn clients_of_any(sockets: &[&Path]) -> Vec<u32> {
    // The daemon's accepted sockets carry its socket's name; their peers are the clients'.
    holders(sockets, 1 << TCP_ESTABLISHED, |s| s.peer)
        .into_iter()
        .filter(|&pid| pid != std::process::id())
        .collect()
}

/// The daemons listening on any of these unix sockets: the processes holding the listening
/// socket, but for init (a socket-activated daemon's socket is held by the service manager
/// too, and everything descends from it) and this process.
/// Only the host's: a runtime inside a container (kind's containerd, docker-in-docker)
/// binds the same names in its own mount namespace.
pub fn listeners_of(sockets: &[&Path]) -> Vec<u32> {
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    holders(sockets, 1 << TCP_LISTEN, |s| Some(s.inode))
        .into_iter()
        .filter(|&pid| pid != 1 && pid != std::process::id())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == own)
        .collect()
}

/// The processes holding the socket `pick` names, of each unix socket in one of `states` bound
/// to one of these names.
fn holders(sockets: &[&Path], states: u32, pick: fn(&UnixSocket) -> Option<u32>) -> Vec<u32> {
    let names: HashSet<String> = sockets.iter().flat_map(|s| socket_names(s)).collect();
    let Ok(sockets) = unix_sockets(states) else {
        return Vec::new();
    };
    let wanted: HashSet<u32> = sockets
        .iter()
        .filter(|s| s.name.as_deref().is_some_and(|n| names.contains(n)))
        .filter_map(pick)
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    owners_of(&wanted, Path::new("/proc"))
}

/// The names the daemon may have bound its socket by (`/var/run` is `/run` on modern systems).
fn socket_names(socket: &Path) -> HashSet<String> {
    let mut names = HashSet::from([socket.to_string_lossy().into_owned()]);
    if let Ok(canonical) = std::fs::canonicalize(socket) {
        names.insert(canonical.to_string_lossy().into_owned());
    }
    let text = socket.to_string_lossy();
    if let Some(rest) = text.strip_prefix("/var/run/") {
        names.insert(format!("/run/{rest}"));
    } else if let Some(rest) = text.strip_prefix("/run/") {
        names.insert(format!("/var/run/{rest}"));
    }
    names
}

struct UnixSocket {
    inode: u32,
    name: Option<String>,
    peer: Option<u32>,
}

/// Every unix socket in one of `states` (a mask of `1 << TCP_*`), with its inode, name and
/// peer inode.
fn unix_sockets(states: u32) -> std::io::Result<Vec<UnixSocket>> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    use std::os::fd::AsRawFd as _;
    // nlmsghdr (16 bytes) + unix_diag_req (24 bytes).
    let mut request = Vec::with_capacity(40);
    request.extend_from_slice(&40u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // seq
    request.extend_from_slice(&0u32.to_ne_bytes()); // pid
    request.push(libc::AF_UNIX as u8); // sdiag_family
    request.push(0); // sdiag_protocol
    request.extend_from_slice(&0u16.to_ne_bytes()); // pad
    request.extend_from_slice(&states.to_ne_bytes()); // udiag_states
    request.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    request.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER).to_ne_bytes());
    request.extend_from_slice(&[0xff; 8]); // udiag_cookie: none
                                           // SAFETY: sending a buffer we own to our socket (the kernel is the destination).
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut sockets = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        // SAFETY: receiving into a buffer we own, at most its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        total += n;
        if n == 0 || total > MAX_REPLY_BYTES {
            return Ok(sockets);
        }
        let mut at = 0;
        while at + 16 <= n {
            let len = u32_at(&buffer, at) as usize;
            let kind = u16::from_ne_bytes([buffer[at + 4], buffer[at + 5]]);
            if len < 16 || at + len > n {
                break;
            }
            match kind {
                NLMSG_DONE => return Ok(sockets),
                NLMSG_ERROR => {
                    return Err(std::io::Error::other("sock_diag refused the unix dump"));
                }
                SOCK_DIAG_BY_FAMILY => sockets.push(parse_unix_diag(&buffer[at + 16..at + len])),
                _ => {}
            }
            at += (len + 3) & !3;
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `unix_diag_msg` (16 bytes) then attributes.
fn parse_unix_diag(msg: &[u8]) -> UnixSocket {
    // unix_diag_msg: family, type, state, pad (a byte each), then udiag_ino.
    let mut socket = UnixSocket {
        inode: if msg.len() >= 8 { u32_at(msg, 4) } else { 0 },
        name: None,
        peer: None,
    };
    let mut at = 16;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if len < 4 || at + len > msg.len() {
            break;
        }
        let value = &msg[at + 4..at + len];
        match kind {
            UNIX_DIAG_NAME => {
                // Abstract names start with a NUL; filesystem names end with one or not at all.
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                if end > 0 {
                    socket.name = Some(String::from_utf8_lossy(&value[..end]).into_owned());
                }
            }
            UNIX_DIAG_PEER if value.len() >= 4 => socket.peer = Some(u32_at(value, 0)),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    socket
}

/// The processes holding any of these socket inodes.
fn owners_of(inodes: &HashSet<u32>, proc_root: &Path) -> Vec<u32> {
    let mut owners = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|ino| inodes.contains(&ino))
            })
        });
        if holds {
            owners.push(pid);
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connected_client_is_found_by_the_sockets_name_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // A child process connects and waits: it is the client.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint('up',flush=True)\ntime.sleep(30)",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let found = clients_of(&path);
        let other = clients_of(&dir.path().join("nobody.sock"));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![child.id()], "{line}");
        assert!(other.is_empty());
    }

    #[test]
    fn the_daemon_listening_on_a_socket_is_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.sock");
        let mut daemon = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\nprint('up',flush=True)\ntime.sleep(30)",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(daemon.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        // This process listens on another: not a daemon of the first.
        let own = dir.path().join("own.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&own).unwrap();
        let found = listeners_of(&[path.as_path()]);
        let mine = listeners_of(&[own.as_path()]);
        let _ = daemon.kill();
        let _ = daemon.wait();
        assert_eq!(found, vec![daemon.id()], "{line}");
        assert!(
            mine.is_empty(),
            "this process is never its own daemon: {mine:?}"
        );
    }
}
