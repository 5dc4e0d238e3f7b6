//! The systemd units in deploy/systemd pass only flags their binaries accept: each unit's
//! ExecStart is parsed and every `--flag` looked up in the binary's `--help`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory cargo put this workspace's binaries in (`target/<profile>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

fn exec_start(unit: &str) -> Vec<String> {
    let mut joined = String::new();
    let mut in_exec = false;
    for line in unit.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ExecStart=") {
            in_exec = true;
            joined.push_str(rest);
        } else if in_exec {
            joined.push(' ');
            joined.push_str(line);
        }
        if in_exec {
            if joined.ends_with('\\') {
                joined.pop();
            } else {
                break;
            }
        }
    }
    joined.split_whitespace().map(String::from).collect()
}

#[test]
fn every_flag_in_the_units_exists() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut checked = 0;
    for entry in std::fs::read_dir(&units).expect("deploy/systemd") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        let unit = std::fs::read_to_string(&path).expect("read unit");
        let args = exec_start(&unit);
        let program = Path::new(&args[0]);
        let name = program
            .file_name()
            .and_then(|n| n.to_str())
            .expect("program name");
        let binary = if program.starts_with("/usr/local/bin") {
            bin_dir().join(name)
        } else {
            program.to_path_buf()
        };
        assert!(
            binary.exists(),
            "{}: {} is not built or installed",
            path.display(),
            binary.display()
        );
        // A subcommand (`coxswain up`) has its own flags.
        let mut help_cmd = Command::new(&binary);
        if let Some(sub) = args.get(1).filter(|a| !a.starts_with('-')) {
            help_cmd.arg(sub);
        }
        let help = help_cmd.arg("--help").output().expect("run --help");
        let help = format!(
            "{}{}",
            String::from_utf8_lossy(&help.stdout),
            String::from_utf8_lossy(&help.stderr)
        );
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            assert!(
                help.contains(flag),
                "{}: {name} does not accept {flag}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} units found");
}
