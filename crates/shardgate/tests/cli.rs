//! The command line as a user meets it: `--help` on every command prints
//! that command's usage and succeeds.

use std::process::Command;

const SHARDGATE: &str = env!("CARGO_BIN_EXE_shardgate");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SHARDGATE)
        .args(args)
        .output()
        .expect("running shardgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_prints_its_own_usage_on_help() {
    for (args, shows, hides) in [
        (&["proxy", "--help"][..], "--pool-idle", "shardgate run"),
        (
            &["proxy", "--listen", "x", "-h"][..],
            "--to ADDR",
            "shardgate check",
        ),
        (
            &["run", "--help"][..],
            "shardgate run -c FILE",
            "shardgate proxy",
        ),
        (
            &["check", "-h"][..],
            "shardgate check -c FILE",
            "shardgate doctor",
        ),
        (
            &["doctor", "--help"][..],
            "--connections N",
            "shardgate proxy",
        ),
        (&["help", "proxy"][..], "--max-body", "shardgate doctor"),
    ] {
        let (ok, out, err) = run(args);
        assert!(ok, "{args:?}: failed: {err}");
        assert!(out.contains(shows), "{args:?}: no {shows:?} in {out}");
        assert!(!out.contains(hides), "{args:?}: shows {hides:?}: {out}");
    }
    let (ok, out, _) = run(&["--help"]);
    assert!(ok);
    for command in ["run", "check", "proxy", "doctor"] {
        assert!(out.contains(&format!("shardgate {command}")), "{out}");
    }
    let (ok, _, err) = run(&["proxy", "--bogus"]);
    assert!(!ok && err.contains("unknown option --bogus"), "{err}");
}
