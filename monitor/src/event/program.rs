//! The program an exec really runs. The executable the kernel loads is not always the program:
//! a `#!` script runs its interpreter, `bash /tmp/x.sh` and `python3 /tmp/x.py` run a script the
//! interpreter reads, and `ld-linux-x86-64.so.2 /tmp/payload` runs a program the dynamic loader
//! maps itself. Rules on where programs come from (`exec-from-temp`,
//! `exec-of-job-written-file`) judge this program, not the loader or interpreter.

/// The file an exec ran: the script or program a loader or interpreter was given on its command
/// line; else the name given to execve made absolute (for a `#!` script, the script, while `exe`
/// is its interpreter); else the resolved executable.
pub fn program_path(exe: &str, filename: &str, cwd: &str, argv: &[String]) -> String {
    if let Some(script) = argument_program(exe, argv) {
        return absolute(script, cwd).unwrap_or_else(|| exe.to_string());
    }
    if filename.starts_with('/') || filename.contains('/') {
        absolute(filename, cwd).unwrap_or_else(|| exe.to_string())
    } else {
        exe.to_string()
    }
}

fn absolute(name: &str, cwd: &str) -> Option<String> {
    if name.starts_with('/') {
        Some(name.to_string())
    } else if cwd.starts_with('/') {
        let rel = name.trim_start_matches("./");
        Some(format!("{}/{rel}", cwd.trim_end_matches('/')))
    } else {
        None
    }
}

/// How a kind of program takes the file it runs from its arguments.
struct Runner {
    /// Options that take the next argument as their value.
    with_value: &'static [&'static str],
    /// Options after which there is no program file (the code is inline, or read from stdin,
    /// or the runner only prints).
    inline: &'static [&'static str],
}

const SHELL: Runner = Runner {
    with_value: &["-o", "+o", "-O", "+O", "--rcfile", "--init-file"],
    inline: &["-c", "-s", "-i"],
};
const PYTHON: Runner = Runner {
    with_value: &["-W", "-X", "--check-hash-based-pycs"],
    inline: &["-c", "-m", "-", "-V", "--version", "-h", "--help"],
};
const NODE: Runner = Runner {
    with_value: &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "-C",
        "--conditions",
        "--input-type",
        "--env-file",
    ],
    inline: &[
        "-e",
        "--eval",
        "-p",
        "--print",
        "-v",
        "--version",
        "-h",
        "--help",
        "-i",
        "--interactive",
        "--test",
        "-",
    ],
};
const PERL: Runner = Runner {
    with_value: &["-I", "-M", "-m", "-x"],
    inline: &["-e", "-E", "-v", "-V"],
};
const RUBY: Runner = Runner {
    with_value: &["-I", "-r", "-C", "-E"],
    inline: &["-e", "-v", "--version"],
};
const PHP: Runner = Runner {
    with_value: &["-c", "-d", "-z"],
    inline: &["-r", "-a", "-v", "-i", "-m"],
};
const LOADER: Runner = Runner {
    with_value: &[
        "--library-path",
        "--preload",
        "--audit",
        "--argv0",
        "--inhibit-rpath",
        "--glibc-hwcaps-prepend",
        "--glibc-hwcaps-mask",
    ],
    inline: &[
        "--list",
        "--verify",
        "--help",
        "--version",
        "--list-tunables",
        "--list-diagnostics",
    ],
};

/// What kind of runner the executable is, by its file name.
fn runner_of(exe: &str) -> Option<&'static Runner> {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let versioned = |base: &str| {
        name == base
            || name
                .strip_prefix(base)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    if ["bash", "sh", "dash", "zsh", "ksh", "mksh", "ash", "busybox"].contains(&name) {
        Some(&SHELL)
    } else if versioned("python") || versioned("pypy") {
        Some(&PYTHON)
    } else if ["node", "nodejs", "bun", "deno"].contains(&name) {
        Some(&NODE)
    } else if versioned("perl") {
        Some(&PERL)
    } else if versioned("ruby") {
        Some(&RUBY)
    } else if versioned("php") {
        Some(&PHP)
    } else if name.starts_with("ld-linux")
        || name.starts_with("ld-musl")
        || name.starts_with("ld.so")
        || (name.starts_with("ld-") && name.contains(".so"))
    {
        Some(&LOADER)
    } else {
        None
    }
}

/// The program file a loader or interpreter was given: its first argument that is not an
/// option (or an option's value). `None` when the code is inline or read from stdin.
pub fn argument_program<'a>(exe: &str, argv: &'a [String]) -> Option<&'a str> {
    let runner = runner_of(exe)?;
    let name = exe.rsplit('/').next().unwrap_or(exe);
    let mut args = argv.iter().skip(1);
    // `busybox sh script`: the applet name first.
    if name == "busybox" && args.next().map(String::as_str) != Some("sh") {
        return None;
    }
    while let Some(arg) = args.next() {
        let arg = arg.as_str();
        if arg == "--" {
            return args.next().map(String::as_str);
        }
        if runner.inline.contains(&arg) {
            return None;
        }
        if runner.with_value.contains(&arg) {
            args.next();
            continue;
        }
        // Short options with their value attached (`-Wignore`, `-I/dir`), bundles (`-ex`), and
        // long options (`--inspect`, `--max-old-space-size=4096`).
        if arg.starts_with('-') || (arg.starts_with('+') && std::ptr::eq(runner, &SHELL)) {
            // A bundle ending in an inline option (`bash -ec '...'`, `python -Bc ...`).
            if !arg.starts_with("--")
                && runner
                    .inline
                    .iter()
                    .any(|i| i.len() == 2 && arg.len() > 2 && arg.ends_with(&i[1..]))
            {
                return None;
            }
            continue;
        }
        return Some(arg);
    }
    None
}

/// Whether an interpreter reads its program from standard input (`curl ... | sh`, `| python3 -`):
/// no program file, and no inline code.
pub fn reads_program_from_stdin(exe: &str, argv: &[String]) -> bool {
    let Some(runner) = runner_of(exe) else {
        return false;
    };
    if std::ptr::eq(runner, &LOADER) || argument_program(exe, argv).is_some() {
        return false;
    }
    // Inline code (`-c`, `-e`, `-m`, `-r`) or only printing: the stdin options (`-s`, `-`)
    // and `-i` are what is left of `inline`.
    !argv.iter().skip(1).any(|a| {
        let a = a.as_str();
        runner.inline.contains(&a) && !matches!(a, "-s" | "-" | "-i")
            || (!a.starts_with("--")
                && a.len() > 2
                && a.starts_with('-')
                && (a.ends_with('c') || a.ends_with('e')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn loaders_and_interpreters_run_the_file_they_are_given() {
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("/usr/bin/bash", &["bash", "/tmp/x.sh"], Some("/tmp/x.sh")),
            (
                "/usr/bin/bash",
                &["bash", "-e", "-o", "pipefail", "s.sh", "a"],
                Some("s.sh"),
            ),
            ("/usr/bin/bash", &["bash", "-c", "/tmp/x.sh"], None),
            ("/usr/bin/bash", &["bash", "-ec", "echo"], None),
            ("/usr/bin/dash", &["sh"], None),
            ("/usr/bin/dash", &["sh", "-s", "--", "x"], None),
            (
                "/usr/bin/python3.11",
                &["python3", "-u", "/tmp/x.py"],
                Some("/tmp/x.py"),
            ),
            (
                "/usr/bin/python3.11",
                &["python3", "-W", "ignore", "x.py"],
                Some("x.py"),
            ),
            (
                "/usr/bin/python3.11",
                &["python3", "-m", "pip", "install"],
                None,
            ),
            ("/usr/bin/python3.11", &["python3", "-c", "print(1)"], None),
            (
                "/usr/bin/node",
                &["node", "--max-old-space-size=4096", "build.js"],
                Some("build.js"),
            ),
            (
                "/usr/bin/node",
                &["node", "-r", "ts-node/register", "x.ts"],
                Some("x.ts"),
            ),
            ("/usr/bin/node", &["node", "-e", "1"], None),
            ("/usr/bin/perl", &["perl", "-e", "print 1"], None),
            (
                "/usr/bin/perl",
                &["perl", "-w", "/tmp/p.pl"],
                Some("/tmp/p.pl"),
            ),
            (
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                &[
                    "/lib64/ld-linux-x86-64.so.2",
                    "--library-path",
                    "/l",
                    "/tmp/payload",
                ],
                Some("/tmp/payload"),
            ),
            ("/usr/bin/git", &["git", "/tmp/x"], None),
        ];
        for (exe, argv, want) in cases {
            assert_eq!(argument_program(exe, &v(argv)), *want, "{exe} {argv:?}");
        }
    }

    #[test]
    fn shells_fed_on_stdin_are_told_from_inline_code() {
        for argv in [
            &["sh"][..],
            &["bash", "-s", "--", "-y"],
            &["python3", "-"],
            &["bash", "-x"],
        ] {
            let exe = format!("/usr/bin/{}", argv[0]);
            assert!(reads_program_from_stdin(&exe, &v(argv)), "{argv:?}");
        }
        for argv in [
            &["sh", "-c", "echo"][..],
            &["bash", "-ec", "echo"],
            &["bash", "x.sh"],
            &["python3", "-m", "pip"],
            &["node", "-e", "1"],
            &["ls"],
        ] {
            let exe = format!("/usr/bin/{}", argv[0]);
            assert!(!reads_program_from_stdin(&exe, &v(argv)), "{argv:?}");
        }
    }

    #[test]
    fn the_program_is_made_absolute() {
        let bash = "/usr/bin/bash";
        assert_eq!(
            program_path(
                bash,
                "/usr/bin/bash",
                "/w",
                &v(&["bash", "./scripts/build.sh"])
            ),
            "/w/scripts/build.sh"
        );
        // A `#!` script: execve's name is the script.
        assert_eq!(
            program_path(bash, "./run.sh", "/w", &v(&["/bin/bash", "./run.sh"])),
            "/w/run.sh"
        );
        assert_eq!(
            program_path("/usr/bin/ls", "ls", "/w", &v(&["ls", "-l"])),
            "/usr/bin/ls"
        );
    }
}
