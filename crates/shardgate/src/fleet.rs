//! A fleet's configuration in etcd: `shardgate run --etcd`, `shardgate config push` and
//! `shardgate config get` (see `shardgate_proxy::etcd_source` for the watcher).

use serde::Deserialize;
use shardgate_etcd::{Client, Settings};
use shardgate_proxy::GatewayOptions;
use shardgate_proxy::etcd_source::{EtcdSource, merge_registered};
use std::path::PathBuf;
use std::process::ExitCode;

/// The prefix when none is given.
pub const DEFAULT_PREFIX: &str = "/shardgate/";
/// The state directory when none is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/shardgate";
/// The first line `config get` prints: it carries the revision a later `config push` of the
/// same file compares against.
const HEADER: &str = "# shardgate config get:";

/// Where etcd is, from flags or a bootstrap file.
#[derive(Default, Debug)]
pub struct EtcdArgs {
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub bootstrap: Option<PathBuf>,
}

impl EtcdArgs {
    /// Whether any etcd flag was given.
    pub fn given(&self) -> bool {
        !self.endpoints.is_empty() || self.bootstrap.is_some()
    }

    /// Takes `flag` if it is one of the etcd flags.
    pub fn flag(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        match flag {
            "--etcd" => self.endpoints.extend(
                value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "--etcd-prefix" => self.prefix = Some(value()?),
            "--state-dir" => self.state_dir = Some(PathBuf::from(value()?)),
            "--bootstrap" => self.bootstrap = Some(PathBuf::from(value()?)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The client settings, prefix and state directory: the flags over the bootstrap file.
    fn resolve(&self) -> Result<(Settings, String, PathBuf), String> {
        let file = match &self.bootstrap {
            Some(path) => read_bootstrap(path)?,
            None => Bootstrap::default(),
        };
        let name = |field: &str| match &self.bootstrap {
            Some(p) => format!("{}: etcd.{field}", p.display()),
            None => format!("--{field}"),
        };
        let password = match (file.etcd.password, file.etcd.password_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: give password or password_file, not both",
                    name("password")
                ));
            }
            (p, None) => p,
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {path}: {e}", name("password_file")))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
        };
        let endpoints = if self.endpoints.is_empty() {
            file.etcd.endpoints
        } else {
            self.endpoints.clone()
        };
        if endpoints.is_empty() {
            return Err(format!("{}: no etcd endpoint", name("endpoints")));
        }
        let settings = Settings {
            endpoints,
            username: file.etcd.username,
            password,
            ca: file.etcd.ca,
            cert: file.etcd.cert,
            key: file.etcd.key,
        };
        let prefix = self
            .prefix
            .clone()
            .or(file.etcd.prefix)
            .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        if !prefix.starts_with('/') {
            return Err(format!("{}: {prefix:?} must start with /", name("prefix")));
        }
        let state_dir = self
            .state_dir
            .clone()
            .or(file.etcd.state_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Ok((settings, prefix, state_dir))
    }

    fn source(&self) -> Result<EtcdSource, String> {
        let (settings, prefix, state_dir) = self.resolve()?;
        let client = Client::new(&settings)?;
        Ok(EtcdSource::new(client, &prefix, Some(state_dir)))
    }
}

/// The bootstrap file: `[etcd]` with where etcd is and how to log in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    #[serde(default)]
    etcd: BootstrapEtcd,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapEtcd {
    #[serde(default)]
    endpoints: Vec<String>,
    prefix: Option<String>,
    state_dir: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

fn read_bootstrap(path: &std::path::Path) -> Result<Bootstrap, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))
}

/// `shardgate run --etcd ...`: start from etcd (or the state directory), then follow it.
pub fn run(args: &EtcdArgs, overrides: crate::cli::Overrides) -> ExitCode {
    let source = match args.source() {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    if let Some(dir) = &source.state_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        log::warn!(
            "the last good configuration cannot be kept in {}: {e} (give --state-dir)",
            dir.display()
        );
    }
    let valid = |text: &str| {
        shardgate_config::from_toml(text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let initial = match source.initial(&valid) {
        Ok(i) => i,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let mut config = match shardgate_config::from_toml(&initial.text) {
        Ok(c) => c,
        Err(errors) => return crate::config_failed("the last good configuration", &errors),
    };
    overrides.apply(&mut config);
    merge_registered(&mut config, &initial.registered);
    match &initial.from_state {
        None => log::info!(
            "configuration from etcd {} at revision {}",
            source.config_key(),
            initial.revision
        ),
        Some(_) => log::warn!(
            "serving the last good configuration (etcd revision {}) until etcd answers",
            initial.revision
        ),
    }
    let options = GatewayOptions {
        config_hash: shardgate_proxy::config_hash(&initial.text),
        config_text: Some(initial.text.clone()),
        source_name: "etcd",
        adjust: Some(std::sync::Arc::new(
            move |c: &mut shardgate_config::Config| overrides.apply(c),
        )),
        etcd: Some((source, initial)),
        ..GatewayOptions::default()
    };
    crate::serve(config, options, None)
}

/// `shardgate config push -c FILE`: validate, then write with a compare-and-swap on the
/// revision the file was read at (its `config get` header, or `--revision`); a newer
/// configuration in etcd is kept unless `force`.
pub fn push(args: &EtcdArgs, file: &std::path::Path, base: Option<i64>, force: bool) -> ExitCode {
    let text = match shardgate_config::read_text(file, shardgate_config::MAX_CONFIG_FILE) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read the file: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let (header, text) = split_header(&text);
    if let Err(errors) = shardgate_config::check_toml(text) {
        return crate::config_failed(&file.display().to_string(), &errors);
    }
    let base = base.or(header);
    let source = match args.source() {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let key = source.config_key();
    let fail = |e: String| {
        eprintln!("shardgate config push: {e}");
        ExitCode::from(1)
    };
    let current = match source.client.range(&key, false) {
        Ok(r) => r.kvs.into_iter().next(),
        Err(e) => return fail(e.to_string()),
    };
    let now = current.as_ref().map_or(0, |kv| kv.mod_revision);
    if current
        .as_ref()
        .is_some_and(|kv| kv.value == text.as_bytes())
    {
        println!("{key}: unchanged at revision {now}");
        return ExitCode::SUCCESS;
    }
    if !force && now > 0 {
        match base {
            None => {
                return fail(format!(
                    "etcd already has {key} at revision {now}, which this file was not read \
                     from: start from `shardgate config get`, give --revision {now}, or --force"
                ));
            }
            Some(b) if now > b => {
                return fail(format!(
                    "{key} is newer in etcd (revision {now}) than the one this file was read \
                     at (revision {b}): `shardgate config get` it again, or --force"
                ));
            }
            Some(_) => {}
        }
    }
    match source.client.put_if(&key, text.as_bytes(), now) {
        Ok(Ok(revision)) => {
            println!("{key}: pushed at revision {revision} (was {now})");
            ExitCode::SUCCESS
        }
        Ok(Err(changed)) => fail(format!(
            "{key} changed while pushing (now revision {changed}): nothing written"
        )),
        Err(e) => fail(e.to_string()),
    }
}

/// `shardgate config get`: the configuration in etcd, headed by its revision.
pub fn get(args: &EtcdArgs) -> ExitCode {
    let source = match args.source() {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let key = source.config_key();
    match source.client.range(&key, false) {
        Ok(r) => match r.kvs.first() {
            Some(kv) => {
                print!(
                    "{HEADER} {key} revision {}\n{}",
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.value)
                );
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("shardgate config get: etcd has no {key}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("shardgate config get: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("shardgate: {e}");
    ExitCode::from(2)
}

/// The revision in a `config get` header, and the text after it.
fn split_header(text: &str) -> (Option<i64>, &str) {
    let Some(rest) = text.strip_prefix(HEADER) else {
        return (None, text);
    };
    let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let revision = line
        .rsplit_once(" revision ")
        .and_then(|(_, n)| n.trim().parse().ok());
    (revision, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_get_header_carries_the_revision() {
        let (rev, body) = split_header("# shardgate config get: /sg/config revision 42\n[a]\n");
        assert_eq!((rev, body), (Some(42), "[a]\n"));
        assert_eq!(split_header("[a]\n"), (None, "[a]\n"));
    }

    #[test]
    fn flags_win_over_the_bootstrap_file_and_errors_name_fields() {
        let dir = std::env::temp_dir().join(format!("sg-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bootstrap.toml");
        std::fs::write(
            &file,
            "[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\nprefix = \"/a/\"\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        let args = EtcdArgs {
            bootstrap: Some(file.clone()),
            prefix: Some("/b/".into()),
            ..EtcdArgs::default()
        };
        let (settings, prefix, _) = args.resolve().unwrap();
        assert_eq!(settings.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(prefix, "/b/");
        assert_eq!(settings.username.as_deref(), Some("u"));
        std::fs::write(&file, "[etcd]\nendpoint = \"x\"\n").unwrap();
        let e = args.resolve().unwrap_err();
        assert!(e.contains("unknown field `endpoint`"), "{e}");
        std::fs::write(
            &file,
            "[etcd]\nendpoints = [\"http://h:1\"]\nprefix = \"a\"\n",
        )
        .unwrap();
        let e = EtcdArgs {
            bootstrap: Some(file),
            ..EtcdArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            e.contains("etcd.prefix") && e.contains("must start with /"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
