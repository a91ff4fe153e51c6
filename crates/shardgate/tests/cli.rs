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

/// `check` judges the file alone and never asks DNS (it works offline);
/// `run` resolves the names and refuses one that does not resolve, naming
/// the endpoint's field.
#[test]
fn check_is_offline_and_run_resolves() {
    let dir = std::env::temp_dir().join(format!("shardgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("names.toml");
    // `.invalid` never resolves (RFC 6761).
    std::fs::write(
        &file,
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\n\
         endpoints = [\"127.0.0.1:9\", \"backend.invalid:8080\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) = run(&["check", "-c", path]);
    assert!(ok, "check failed: {out}{err}");
    assert!(
        out.contains("backend.invalid:8080 is resolved at start"),
        "{out}"
    );
    let (ok, _, err) = run(&["run", "-c", path]);
    assert!(!ok);
    assert!(
        err.contains("upstreams.app.endpoints[1]: cannot resolve \"backend.invalid:8080\""),
        "{err}"
    );
    // A malformed endpoint is the file's fault: check says so.
    std::fs::write(
        &file,
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\n\
         endpoints = [\"bad host:80\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["check", "-c", path]);
    assert!(!ok && err.contains("upstreams.app.endpoints[0]"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` warns about a JWT filter that takes a token for any audience, and still passes.
#[test]
fn check_warns_about_a_jwt_filter_without_audiences() {
    let dir = std::env::temp_dir().join(format!("shardgate-cli-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwt.toml");
    let route = |audiences: &str| {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"127.0.0.1:9\"]\n\
             [[routes]]\nname = \"api\"\nprefix = \"/\"\nupstream = \"app\"\n\
             filters = [{{ type = \"jwt\", keys = [{{ algorithms = [\"HS256\"], secret = \"a-test-secret-of-at-least-32-bytes\" }}]{audiences} }}]\n"
        )
    };
    std::fs::write(&file, route("")).unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) = run(&["check", "-c", path]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("warning: route \"api\", filters[0] (jwt): audiences: empty"),
        "{out}"
    );
    std::fs::write(&file, route(", audiences = [\"api\"]")).unwrap();
    let (ok, out, _) = run(&["check", "-c", path]);
    assert!(ok && !out.contains("warning"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
