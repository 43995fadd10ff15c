//! The Docker Engine API, over its unix socket: every container created or removed, as
//! `ContainerNews` for the pipeline.
//!
//! The event stream is subscribed to before the running containers are listed, so none created
//! in between is missed (one seen twice is harmless: the engine keeps the first). A daemon that
//! is not there, or goes away, is retried every few seconds; the agent's health says whether the
//! API answers (`docker_api_up`).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use bollard::{
    models::{ContainerInspectResponse, HostConfigCgroupnsModeEnum},
    query_parameters::{EventsOptions, ListContainersOptions},
    Docker, API_DEFAULT_VERSION,
};
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::{ContainerBind, ContainerMeta};

/// What the runtime said.
#[derive(Debug, Clone)]
pub enum ContainerNews {
    /// A container was created (`existing`: it was there when the agent connected).
    Created {
        meta: ContainerMeta,
        existing: bool,
        /// The processes connected to the runtime's socket when it said so: who asked.
        clients: Vec<u32>,
    },
    /// A container started: the description again, now with its network addresses.
    Started {
        meta: ContainerMeta,
    },
    Removed {
        id: String,
    },
    /// Whether the API answers (for health and `doctor`).
    Reachable(bool),
}

const RETRY: Duration = Duration::from_secs(3);
/// Bound on one API request (an inspect, the list); the event stream itself is long-lived.
const REQUEST_TIMEOUT_SECS: u64 = 20;

/// Connects, negotiating the API version down to what the daemon speaks (Debian 12's 20.10
/// speaks 1.41).
pub async fn connect(socket: &std::path::Path) -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_unix(
        &socket.to_string_lossy(),
        REQUEST_TIMEOUT_SECS,
        API_DEFAULT_VERSION,
    )?;
    Ok(docker.negotiate_version().await?)
}

/// Watches the daemon at `socket` until `news` is closed.
pub async fn watch(socket: PathBuf, news: mpsc::Sender<ContainerNews>) {
    let mut said_down = false;
    loop {
        match follow(&socket, &news).await {
            Ok(()) => return,
            Err(e) => {
                if !said_down {
                    log::warn!(
                        "container runtime API at {} not reachable ({e:#}); containers are judged by their cgroup only until it is",
                        socket.display()
                    );
                    said_down = true;
                }
                if news.send(ContainerNews::Reachable(false)).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One connection's worth: the event stream, then the list, then events until the stream
/// ends (an error) or the receiver is gone (`Ok`).
async fn follow(
    socket: &std::path::Path,
    news: &mpsc::Sender<ContainerNews>,
) -> anyhow::Result<()> {
    let docker = connect(socket).await?;
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            vec![
                "create".to_string(),
                "start".to_string(),
                "destroy".to_string(),
            ],
        ),
    ]);
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await?;
    if news.send(ContainerNews::Reachable(true)).await.is_err() {
        return Ok(());
    }
    log::info!(
        "container runtime API at {}: {} container(s) present",
        socket.display(),
        listed.len()
    );
    for summary in listed {
        let Some(id) = summary.id else { continue };
        if let Ok(inspected) = docker.inspect_container(&id, None).await {
            let meta = meta_of(inspected);
            if news
                .send(ContainerNews::Created {
                    meta,
                    existing: true,
                    clients: Vec::new(),
                })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
    while let Some(event) = events.next().await {
        let event = event?;
        let Some(id) = event.actor.and_then(|a| a.id) else {
            continue;
        };
        let sent = match event.action.as_deref() {
            Some("create") => {
                // Who is connected now, before the client that asked has hung up.
                let at = socket.to_path_buf();
                let clients = tokio::task::spawn_blocking(move || super::clients::clients_of(&at))
                    .await
                    .unwrap_or_default();
                match docker.inspect_container(&id, None).await {
                    Ok(inspected) => {
                        news.send(ContainerNews::Created {
                            meta: meta_of(inspected),
                            existing: false,
                            clients,
                        })
                        .await
                    }
                    // Removed again before we asked: its processes, if any ran, were judged by
                    // cgroup.
                    Err(e) => {
                        log::debug!("container {id} created but not inspectable: {e}");
                        Ok(())
                    }
                }
            }
            Some("start") => match docker.inspect_container(&id, None).await {
                Ok(inspected) => {
                    news.send(ContainerNews::Started {
                        meta: meta_of(inspected),
                    })
                    .await
                }
                Err(_) => Ok(()),
            },
            Some("destroy") => news.send(ContainerNews::Removed { id }).await,
            _ => Ok(()),
        };
        if sent.is_err() {
            return Ok(());
        }
    }
    anyhow::bail!("the event stream ended")
}

/// What the engine needs of an inspected container.
pub fn meta_of(c: ContainerInspectResponse) -> ContainerMeta {
    let host = c.host_config.unwrap_or_default();
    let shared = |mode: &Option<String>| mode.as_deref() == Some("host");
    let mut host_namespaces = Vec::new();
    for (ns, is_host) in [
        ("pid", shared(&host.pid_mode)),
        ("network", shared(&host.network_mode)),
        ("ipc", shared(&host.ipc_mode)),
        ("uts", shared(&host.uts_mode)),
        ("user", shared(&host.userns_mode)),
        (
            "cgroup",
            matches!(host.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::HOST)),
        ),
    ] {
        if is_host {
            host_namespaces.push(ns.to_string());
        }
    }
    // Binds as created (`-v src:dst[:ro]`, `--mount type=bind`): the resolved mount points when
    // the daemon lists them, else the request's own words.
    let mut binds: Vec<ContainerBind> = c
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("bind"))
        .filter_map(|m| {
            Some(ContainerBind {
                source: m.source?,
                destination: m.destination?,
                read_only: m.rw == Some(false),
            })
        })
        .collect();
    if binds.is_empty() {
        binds = host
            .binds
            .unwrap_or_default()
            .iter()
            .filter_map(|b| parse_bind(b))
            .collect();
    }
    binds.sort();
    binds.dedup();
    let config = c.config.unwrap_or_default();
    let endpoints = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    let mut networks: Vec<String> = endpoints
        .keys()
        .filter(|name| !matches!(name.as_str(), "bridge" | "host" | "none"))
        .cloned()
        .collect();
    networks.sort();
    let mut addresses: Vec<std::net::IpAddr> = endpoints
        .into_values()
        .flat_map(|endpoint| [endpoint.ip_address, endpoint.global_ipv6_address])
        .flatten()
        .filter_map(|a| a.parse().ok())
        .collect();
    addresses.sort();
    addresses.dedup();
    // What the job named (paths, names, images) reaches findings and reports: no secret in it
    // does (`-v /tmp/ghp_...:/x`, an image tagged with a token).
    for b in &mut binds {
        b.source = crate::redact::redact_path(&b.source).into_owned();
        b.destination = crate::redact::redact_path(&b.destination).into_owned();
    }
    ContainerMeta {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: crate::redact::redact(&config.image.or(c.image).unwrap_or_default()).into_owned(),
        runtime: "docker".into(),
        privileged: host.privileged.unwrap_or(false),
        host_namespaces,
        binds,
        added_capabilities: host.cap_add.unwrap_or_default(),
        devices: host
            .devices
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.path_on_host)
            .collect(),
        addresses,
        networks,
    }
}

/// `-v` syntax: `/host:/ctr[:opts]` (a named volume has no leading `/` and is not a host path).
fn parse_bind(bind: &str) -> Option<ContainerBind> {
    let mut parts = bind.split(':');
    let source = parts.next()?;
    let destination = parts.next()?;
    if !source.starts_with('/') {
        return None;
    }
    let read_only = parts
        .next()
        .is_some_and(|o| o.split(',').any(|o| o == "ro"));
    Some(ContainerBind {
        source: source.into(),
        destination: destination.into(),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_in_the_v_syntax() {
        assert_eq!(
            parse_bind("/root:/h:ro,z"),
            Some(ContainerBind {
                source: "/root".into(),
                destination: "/h".into(),
                read_only: true
            })
        );
        assert_eq!(parse_bind("cache:/cache"), None);
        assert!(!parse_bind("/:/host").unwrap().read_only);
    }

    #[test]
    fn secrets_in_bind_paths_and_images_are_redacted() {
        let token = "ghp_BINDCANARY000000000000000000000000000";
        let c = ContainerInspectResponse {
            id: Some("c0ffee".into()),
            image: Some(format!("registry.test/app:{token}")),
            host_config: Some(bollard::models::HostConfig {
                binds: Some(vec![format!("/tmp/{token}:/secret/{token}:ro")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let meta = meta_of(c);
        let shown = format!("{meta:?}");
        assert!(!shown.contains(token), "{shown}");
        assert_eq!(meta.binds.len(), 1, "the bind is still there: {shown}");
        assert!(meta.binds[0].source.starts_with("/tmp/"));
    }
}
