//! A job turning on the monitor or on other processes' memory: signalling the agent, bpf(2),
//! ptrace and process_vm_readv on a sibling. Benign twins: signals between the job's own
//! processes.

use integration_tests::{by_rule, Agent, FakeRunner, MARKER_STEP, STRICT_PROFILE};

#[test]
fn signalling_the_agent_bpf_ptrace_and_vm_reads_are_found() {
    let agent = Agent::start_with_profile(STRICT_PROFILE);
    let runner = FakeRunner::new();
    let libc = "import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True)";
    runner.run_job(&[
        // Signal 0 only asks whether the agent exists: the probe is what an attacker does first.
        ("signal", &format!("kill -0 {} || true\n", agent.pid())),
        ("bpf", &format!("python3 -c '{libc}; libc.syscall(321, 0, 0, 0)'\n")),
        (
            "ptrace",
            &format!("sleep 30 & v=$!\npython3 -c '{libc}; libc.ptrace(16, int(sys.argv[1]), 0, 0)' $v\nkill -9 $v\n"),
        ),
        (
            "vmread",
            &format!("sleep 30 & v=$!\npython3 -c '{libc}; libc.syscall(310, int(sys.argv[1]), 0, 0, 0, 0, 0)' $v\nkill $v\n"),
        ),
        ("benign", "sleep 30 & v=$!\nkill -0 $v; kill $v; kill -0 $$\n"),
        MARKER_STEP,
    ]);
    let mine = agent.findings_through_marker(&runner);
    let of_step = |rule: &str, step: &str| {
        by_rule(&mine, rule)
            .into_iter()
            .filter(|f| f["step"]["id"] == step)
            .cloned()
            .collect::<Vec<_>>()
    };
    let signal = of_step("agent-tampering", "signal");
    assert_eq!(signal.len(), 1, "{mine:#?}");
    assert_eq!(signal[0]["severity"], "critical");
    assert_eq!(
        signal[0]["evidence"]["target_pid"].as_u64(),
        Some(agent.pid() as u64)
    );
    assert_eq!(
        of_step("agent-tampering", "bpf")[0]["evidence"]["syscall"],
        "bpf"
    );
    let ptrace = of_step("process-memory-read", "ptrace");
    assert_eq!(
        (
            ptrace[0]["evidence"]["syscall"].as_str(),
            ptrace[0]["evidence"]["argument"].as_u64()
        ),
        (Some("ptrace"), Some(16))
    );
    assert_eq!(
        of_step("process-memory-read", "vmread")[0]["evidence"]["syscall"],
        "process_vm_readv"
    );
    let benign: Vec<_> = mine
        .iter()
        .filter(|f| f["step"]["id"] == "benign")
        .collect();
    assert!(benign.is_empty(), "{benign:#?}");
}
