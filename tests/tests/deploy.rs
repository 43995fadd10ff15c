//! Deployment files that are not run here: checked for what would break them on a real cluster.

use integration_tests::monitor_cli;
use serde::Deserialize as _;

fn manifests() -> Vec<serde_norway::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/monitor-daemonset.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde_norway::Value::deserialize(doc).expect("valid YAML document"))
        .collect()
}

#[test]
fn kubernetes_daemonset_is_valid_and_has_what_the_agent_needs() {
    let docs = manifests();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);
    let ds = &docs[2];
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["hostPID"], true,
        "the agent follows runner processes on the host"
    );
    // The selector matches the pod (each of its labels is the pod's), and the pod says its
    // runner pool (the fleet scrape configuration's `pool`).
    let selector = ds["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&labels[k.as_str().unwrap()], v, "selector matches the pod");
    }
    assert!(labels["runner-pool"].as_str().is_some(), "{labels:?}");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_eq!(container["args"][0], "run");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for needed in [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/bpf",
        "/run/monitor",
    ] {
        assert!(mounts.contains(&needed), "{needed} not mounted: {mounts:?}");
    }
    let volumes: Vec<&str> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for m in container["volumeMounts"].as_sequence().unwrap() {
        assert!(
            volumes.contains(&m["name"].as_str().unwrap()),
            "mount {m:?} has no volume"
        );
    }
    // The profile it ships is one the monitor accepts.
    let profile = docs[1]["data"]["profile.yml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.yml");
    std::fs::write(&file, profile).unwrap();
    monitor_cli(&["profile", "check", file.to_str().unwrap()]);
}
