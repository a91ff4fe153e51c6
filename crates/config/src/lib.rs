//! Shardgate's configuration.
//!
//! Two layers, as in the rest of the project: [`raw`] holds the serde types
//! that mirror the TOML file (unknown keys are errors), and [`validate`] turns
//! them into the typed [`Config`] model, collecting *every* problem with the
//! path of the field at fault (`routes[2].upstream: unknown upstream "billing"`).
//! Defaults are named constants in [`defaults`]. Routes and tenants carry
//! filter chains (`filters = [{ type = "jwt", ... }]`), checked here against
//! the filters crate's registry. This crate does no I/O beyond reading
//! the file it is pointed at and the key files its filters name
//! (`pem_file`, `jwks_file`), and knows nothing of sockets. Validation does
//! no DNS: [`check_toml`] and [`check`] are pure; [`from_toml`], [`load`]
//! and [`from_raw`] then resolve endpoint host names ([`resolve`]).

pub mod defaults;
mod error;
mod model;
pub mod raw;
mod reload;
pub mod resolve;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::{
    AccessLog, Admin, Config, Driver, EndpointSource, Fleet, ForwardPath, Limits, Listener,
    ListenerTls, LogFormat, PathMatch, PoolSettings, RetrySettings, Route, SYSTEM_CA_BUNDLES,
    Tenant, TenantId, Timeouts, Tracing, Underscores, Upstream, UpstreamId, UpstreamProtocol,
    UpstreamTls, Workers,
};
pub use reload::{Reloaded, reload_toml};
pub use shardgate_common::units::{parse_duration, parse_size};

use std::path::Path;

/// Parses and validates a configuration from TOML text, resolving the
/// host names of upstream endpoints (see [`resolve`]).
pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
    let mut config = check_toml(text)?;
    resolve::resolve_hosts(&mut config, &resolve::system)?;
    Ok(config)
}

/// Parses and validates TOML text without touching the network: host names
/// in endpoints are left unresolved (what `shardgate check` runs).
pub fn check_toml(text: &str) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        ConfigErrors::single(ConfigError::new(
            e.span()
                .map(|s| line_col(text, s.start))
                .unwrap_or_default(),
            e.message().to_string(),
        ))
    })?;
    validate::validate(raw)
}

/// Validates a configuration built in code (the CLI's one-line proxy) and
/// resolves its host names.
pub fn from_raw(raw: raw::RawConfig) -> Result<Config, ConfigErrors> {
    let mut config = validate::validate(raw)?;
    resolve::resolve_hosts(&mut config, &resolve::system)?;
    Ok(config)
}

/// The largest configuration file read.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// The largest key file (`pem_file`, `jwks_file`) read.
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// Reads the UTF-8 text of `path`, refusing more than `limit` bytes (so a
/// path to `/dev/zero` or a runaway file is an error, not an endless read).
pub fn read_text(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        let size = if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
            format!("{} MiB", limit >> 20)
        } else if limit >= 1 << 10 && limit.is_multiple_of(1 << 10) {
            format!("{} KiB", limit >> 10)
        } else {
            format!("{limit} bytes")
        };
        return Err(Error::new(
            ErrorKind::FileTooLarge,
            format!("larger than {size}"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// Reads, parses and validates the configuration file at `path`, resolving
/// host names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    from_toml(&read_file(path)?)
}

/// Reads, parses and validates the file at `path` offline (no DNS).
pub fn check(path: &Path) -> Result<Config, ConfigErrors> {
    check_toml(&read_file(path)?)
}

fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    read_text(path, MAX_CONFIG_FILE).map_err(|e| {
        ConfigErrors::single(ConfigError::new(
            path.display().to_string(),
            format!("cannot read the file: {e}"),
        ))
    })
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {col}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_whole_up_to_the_cap_and_as_utf8() {
        let dir = std::env::temp_dir().join(format!("shardgate-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "0123456789").unwrap();
        assert_eq!(read_text(&file, 10).unwrap(), "0123456789");
        let big = read_text(&file, 9).unwrap_err();
        assert_eq!(big.to_string(), "larger than 9 bytes");
        std::fs::write(&file, b"ab\xffcd").unwrap();
        assert_eq!(
            read_text(&file, 10).unwrap_err().to_string(),
            "not UTF-8 text (byte 2)"
        );
        // Too large wins over not UTF-8: the cut may split a character.
        let zero = read_text(Path::new("/dev/zero"), 2 << 20).unwrap_err();
        assert_eq!(zero.to_string(), "larger than 2 MiB");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
