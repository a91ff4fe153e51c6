//! Certificates made with the `openssl` command line, as a user would make them.

use super::*;
use std::process::Command;

/// A self-signed ECDSA P-256 certificate for `names` (and its key) in a fresh directory.
pub(crate) fn make_cert(dir: &Path, stem: &str, names: &[&str], days: u32) -> PairPaths {
    std::fs::create_dir_all(dir).unwrap();
    let paths = PairPaths {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            &days.to_string(),
            "-subj",
            &format!("/CN={}", names[0]),
        ])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .arg("-keyout")
        .arg(&paths.key)
        .arg("-out")
        .arg(&paths.cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    paths
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shardgate-tls-{}-{name}", std::process::id()))
}

#[test]
fn a_pair_loads_with_its_names_and_expiry() {
    let dir = temp("load");
    let p = make_cert(&dir, "site", &["Site.test", "*.site.test"], 10);
    let c = load_pair(&p).unwrap();
    assert_eq!(c.names, ["site.test", "*.site.test"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (c.not_after - now) as f64 / 86_400.0;
    assert!((9.9..10.1).contains(&days), "{days} days");
}

#[test]
fn bad_files_are_named() {
    let dir = temp("bad");
    let a = make_cert(&dir, "a", &["a.test"], 10);
    let b = make_cert(&dir, "b", &["b.test"], 10);
    let mismatched = PairPaths {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    let e = load_pair(&mismatched).unwrap_err();
    assert!(
        e.starts_with(&b.key.display().to_string()) && e.contains("does not belong"),
        "{e}"
    );
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let e = load_pair(&PairPaths {
        cert: garbage.clone(),
        key: a.key.clone(),
    })
    .unwrap_err();
    assert!(e.starts_with(&garbage.display().to_string()), "{e}");
    let e = load_pair(&PairPaths {
        cert: dir.join("missing.crt"),
        key: a.key,
    })
    .unwrap_err();
    assert!(e.contains("missing.crt"), "{e}");
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let dir = temp("sni");
    let default = load_pair(&make_cert(&dir, "default", &["default.test"], 10)).unwrap();
    let wild = load_pair(&make_cert(&dir, "wild", &["*.example.test"], 10)).unwrap();
    let exact = load_pair(&make_cert(&dir, "exact", &["api.example.test"], 10)).unwrap();
    let certs = [default.clone(), wild.clone(), exact.clone()];
    let r = SniResolver::new(&certs, UnknownName::Default);
    let is = |got: Option<Arc<CertifiedKey>>, want: &LoadedCert| {
        got.is_some_and(|k| Arc::ptr_eq(&k, &want.key))
    };
    assert!(is(r.pick(Some("api.example.test")), &exact));
    assert!(is(r.pick(Some("www.example.test")), &wild));
    assert!(
        is(r.pick(Some("a.b.example.test")), &default),
        "one level only"
    );
    assert!(is(r.pick(Some("example.test")), &default));
    assert!(is(r.pick(None), &default));
    let strict = SniResolver::new(&certs, UnknownName::Refuse);
    assert!(strict.pick(Some("other.test")).is_none());
    assert!(strict.pick(None).is_none());
    assert!(is(strict.pick(Some("www.example.test")), &wild));
}
