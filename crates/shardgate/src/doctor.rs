//! `shardgate doctor [--connections N]`: can this machine hold N connections?
//!
//! Reads the limits that decide it (open files per process and system-wide, listen backlogs,
//! ephemeral ports, memory, io_uring and its locked-memory limit), then prints for each what
//! N connections need, what is short, and the command that fixes it. [`findings`] is pure (it
//! takes a [`Readings`]) so the arithmetic is unit-tested; [`read`] gathers the readings.

use std::fmt::Write as _;

/// File descriptors kept for listeners, io_uring rings, logs and config files.
pub const FD_BASE: u64 = 256;
/// Share of the client connections assumed open towards upstreams at once (pooled).
pub const UPSTREAM_SHARE_PERCENT: u64 = 10;
/// At least this many upstream connections are allowed for.
pub const UPSTREAM_MIN: u64 = 1024;
/// Kernel memory of an idle TCP socket (struct sock, dentry, file, epoll/uring entry), bytes.
pub const KERNEL_BYTES_PER_IDLE_CONN: u64 = 4 * 1024;
/// Shardgate's own memory per idle connection, bytes: `scripts/hold-bench.sh` measured 0.36
/// to 0.52 KiB with 19,000 connections through 2 shards, most of them parked between
/// heartbeats (2026-12-08), rounded up.
pub const USER_BYTES_PER_IDLE_CONN: u64 = 576;
/// Listen backlog that absorbs connection bursts at high connection counts.
pub const RECOMMENDED_BACKLOG: u64 = 4096;
/// Kernel release from which io_uring memory is charged to the cgroup, not RLIMIT_MEMLOCK.
pub const URING_MEMCG_KERNEL: (u32, u32) = (5, 12);
/// Locked memory one shard's io_uring needs on older kernels (rings for 4096 entries), bytes.
pub const URING_LOCKED_BYTES_PER_SHARD: u64 = 512 * 1024;

/// What the machine says. `None` when a value could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: Option<(u64, u64)>,
    /// fs.nr_open: the ceiling for RLIMIT_NOFILE.
    pub nr_open: Option<u64>,
    /// fs.file-max: open files system-wide.
    pub file_max: Option<u64>,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    /// net.ipv4.ip_local_port_range.
    pub port_range: Option<(u64, u64)>,
    /// MemAvailable, bytes.
    pub mem_available: Option<u64>,
    /// kernel.io_uring_disabled: 0 enabled, 1 restricted to a group, 2 disabled.
    pub io_uring_disabled: Option<u64>,
    /// Result of trying io_uring_setup: Ok, or the errno.
    pub io_uring_setup: Option<Result<(), i32>>,
    /// RLIMIT_MEMLOCK (soft, hard), bytes (u64::MAX for unlimited).
    pub memlock: Option<(u64, u64)>,
    /// Kernel (major, minor).
    pub kernel: Option<(u32, u32)>,
    /// CPUs this process may use (one shard each).
    pub cpus: u64,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// Works, but not the recommended setting (or could not be read).
    Warn,
    /// N connections will fail here.
    Short,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    /// What the machine has.
    pub have: String,
    /// What N connections need, and why.
    pub need: String,
    /// The command that fixes it, when something is to be fixed.
    pub fix: Option<String>,
}

fn finding(
    check: &'static str,
    status: Status,
    have: String,
    need: String,
    fix: Option<String>,
) -> Finding {
    Finding {
        check,
        status,
        have,
        need,
        fix,
    }
}

fn unreadable(check: &'static str, need: String) -> Finding {
    finding(
        check,
        Status::Warn,
        "unknown (not readable)".into(),
        need,
        None,
    )
}

/// File descriptors Shardgate needs for `connections` client connections.
pub fn fds_needed(connections: u64) -> u64 {
    let upstream = (connections * UPSTREAM_SHARE_PERCENT / 100).max(UPSTREAM_MIN);
    connections + upstream + FD_BASE
}

/// Bytes of memory `connections` idle connections take, kernel and user space.
pub fn memory_needed(connections: u64) -> u64 {
    connections * (KERNEL_BYTES_PER_IDLE_CONN + USER_BYTES_PER_IDLE_CONN)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1048576.0)
}

fn kib_limit(v: u64) -> String {
    if v == u64::MAX {
        limit(v)
    } else {
        format!("{} KiB", v / 1024)
    }
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Computes every finding for `connections` from `r` (pure).
pub fn findings(r: &Readings, connections: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let fds = fds_needed(connections);
    let fd_need = format!(
        "{fds} ({connections} clients + upstream pool + {FD_BASE} for listeners and files)"
    );

    out.push(match r.nofile {
        None => unreadable("open files per process (RLIMIT_NOFILE)", fd_need.clone()),
        Some((soft, hard)) if hard < fds => finding(
            "open files per process (RLIMIT_NOFILE)",
            Status::Short,
            format!("soft {} / hard {}", limit(soft), limit(hard)),
            fd_need.clone(),
            Some(format!(
                "raise the hard limit: LimitNOFILE={fds} in the systemd unit, or \
                 '* hard nofile {fds}' in /etc/security/limits.conf (then ulimit -n {fds})"
            )),
        ),
        Some((soft, hard)) if soft < fds => finding(
            "open files per process (RLIMIT_NOFILE)",
            Status::Short,
            format!("soft {} / hard {}", limit(soft), limit(hard)),
            fd_need.clone(),
            Some(format!("ulimit -n {fds}   (before starting shardgate)")),
        ),
        Some((soft, hard)) => finding(
            "open files per process (RLIMIT_NOFILE)",
            Status::Ok,
            format!("soft {} / hard {}", limit(soft), limit(hard)),
            fd_need.clone(),
            None,
        ),
    });

    out.push(match r.nr_open {
        None => unreadable("per-process file ceiling (fs.nr_open)", fds.to_string()),
        Some(v) => finding(
            "per-process file ceiling (fs.nr_open)",
            if v < fds { Status::Short } else { Status::Ok },
            v.to_string(),
            fds.to_string(),
            (v < fds).then(|| format!("sysctl -w fs.nr_open={fds}")),
        ),
    });

    // The load generator and upstreams on the same machine use files too: ask for twice.
    let sys_fds = fds * 2;
    out.push(match r.file_max {
        None => unreadable("open files system-wide (fs.file-max)", sys_fds.to_string()),
        Some(v) if v < fds => finding(
            "open files system-wide (fs.file-max)",
            Status::Short,
            v.to_string(),
            format!("{sys_fds} (Shardgate's {fds}, twice over for the rest of the machine)"),
            Some(format!("sysctl -w fs.file-max={sys_fds}")),
        ),
        Some(v) => finding(
            "open files system-wide (fs.file-max)",
            if v < sys_fds {
                Status::Warn
            } else {
                Status::Ok
            },
            v.to_string(),
            format!("{sys_fds} (Shardgate's {fds}, twice over for the rest of the machine)"),
            (v < sys_fds).then(|| format!("sysctl -w fs.file-max={sys_fds}")),
        ),
    });

    let backlog = RECOMMENDED_BACKLOG.min(connections.max(128));
    for (check, value, key) in [
        (
            "accept queue (net.core.somaxconn)",
            r.somaxconn,
            "net.core.somaxconn",
        ),
        (
            "SYN queue (net.ipv4.tcp_max_syn_backlog)",
            r.tcp_max_syn_backlog,
            "net.ipv4.tcp_max_syn_backlog",
        ),
    ] {
        let need = format!("{backlog} (so bursts of new connections are not dropped)");
        out.push(match value {
            None => unreadable(check, need),
            Some(v) if v < backlog => finding(
                check,
                Status::Warn,
                v.to_string(),
                need,
                Some(format!("sysctl -w {key}={backlog}")),
            ),
            Some(v) => finding(check, Status::Ok, v.to_string(), need, None),
        });
    }

    out.push(port_finding(r, connections));
    out.push(memory_finding(r, connections));
    out.extend(uring_findings(r));
    out
}

fn port_finding(r: &Readings, connections: u64) -> Finding {
    let check = "ephemeral ports (net.ipv4.ip_local_port_range)";
    let need = "enough for the upstream pool (client connections use no local ports)".to_string();
    match r.port_range {
        None => unreadable(check, need),
        Some((lo, hi)) => {
            let ports = hi.saturating_sub(lo) + 1;
            let upstream = (connections * UPSTREAM_SHARE_PERCENT / 100).max(UPSTREAM_MIN);
            let have = format!("{lo}-{hi} ({ports} ports per source and destination)");
            if ports < upstream {
                finding(
                    check,
                    Status::Warn,
                    have,
                    format!("{upstream} upstream connections per upstream address"),
                    Some("sysctl -w net.ipv4.ip_local_port_range=\"1024 65000\"".into()),
                )
            } else {
                let mut need = need;
                if connections > ports {
                    need.push_str(&format!(
                        "; a load generator on this machine needs {connections} ports: spread it \
                         over source addresses (loadtest hold --sources)"
                    ));
                }
                finding(check, Status::Ok, have, need, None)
            }
        }
    }
}

fn memory_finding(r: &Readings, connections: u64) -> Finding {
    let check = "memory (MemAvailable)";
    let bytes = memory_needed(connections);
    let need = format!(
        "{} for {connections} idle connections (~{} KiB kernel + ~{:.1} KiB Shardgate each; \
         busy connections also use socket buffers)",
        mib(bytes),
        KERNEL_BYTES_PER_IDLE_CONN / 1024,
        USER_BYTES_PER_IDLE_CONN as f64 / 1024.0
    );
    match r.mem_available {
        None => unreadable(check, need),
        Some(v) if v < bytes => finding(
            check,
            Status::Short,
            mib(v),
            need,
            Some("add memory or hold fewer connections per machine".into()),
        ),
        Some(v) if v < bytes * 4 => finding(check, Status::Warn, mib(v), need, None),
        Some(v) => finding(check, Status::Ok, mib(v), need, None),
    }
}

fn uring_findings(r: &Readings) -> Vec<Finding> {
    let mut out = Vec::new();
    let check = "io_uring";
    let need = "available (else Shardgate runs its epoll driver, --driver legacy)".to_string();
    let disabled = r.io_uring_disabled.unwrap_or(0);
    let setup = r.io_uring_setup;
    let have = match (disabled, setup) {
        (_, Some(Ok(()))) => format!("available (kernel.io_uring_disabled={disabled})"),
        (2, _) => "disabled (kernel.io_uring_disabled=2)".to_string(),
        (1, Some(Err(e))) => format!(
            "restricted to the io_uring group (kernel.io_uring_disabled=1), setup failed: {}",
            std::io::Error::from_raw_os_error(e)
        ),
        (_, Some(Err(e))) => format!(
            "io_uring_setup failed: {} (seccomp or container policy?)",
            std::io::Error::from_raw_os_error(e)
        ),
        (_, None) => "unknown".to_string(),
    };
    let ok = matches!(setup, Some(Ok(())));
    let fix = match (ok, disabled) {
        (true, _) => None,
        (false, 1 | 2) => Some("sysctl -w kernel.io_uring_disabled=0".to_string()),
        (false, _) => Some(
            "allow io_uring in the container's seccomp profile, or run with --driver legacy"
                .to_string(),
        ),
    };
    let status = if ok { Status::Ok } else { Status::Warn };
    out.push(finding(check, status, have, need, fix));

    let check = "locked memory for io_uring (RLIMIT_MEMLOCK)";
    let memcg = r.kernel.is_some_and(|k| k >= URING_MEMCG_KERNEL);
    let need_bytes = URING_LOCKED_BYTES_PER_SHARD * r.cpus.max(1);
    let (k_major, k_minor) = URING_MEMCG_KERNEL;
    out.push(match r.memlock {
        _ if memcg => finding(
            check,
            Status::Ok,
            r.memlock.map_or("unknown".into(), |(s, _)| kib_limit(s)),
            format!("not charged on kernel {k_major}.{k_minor}+ (rings count against the cgroup)"),
            None,
        ),
        None => unreadable(check, mib(need_bytes)),
        Some((soft, hard)) if soft < need_bytes => finding(
            check,
            Status::Warn,
            kib_limit(soft),
            format!("{} KiB ({} shards)", need_bytes / 1024, r.cpus.max(1)),
            Some(if hard >= need_bytes {
                format!("ulimit -l {}", need_bytes / 1024)
            } else {
                format!(
                    "LimitMEMLOCK={need_bytes} in the systemd unit, or \
                     '* hard memlock {}' in /etc/security/limits.conf",
                    need_bytes / 1024
                )
            }),
        ),
        Some((soft, _)) => finding(
            check,
            Status::Ok,
            kib_limit(soft),
            format!("{} KiB", need_bytes / 1024),
            None,
        ),
    });
    out
}

/// Formats the report; returns it with the worst status.
pub fn render(connections: u64, findings: &[Finding]) -> (String, Status) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "shardgate doctor: what holding {connections} connections needs on this machine\n"
    );
    for f in findings {
        let tag = match f.status {
            Status::Ok => "[ok]   ",
            Status::Warn => "[warn] ",
            Status::Short => "[SHORT]",
        };
        let _ = writeln!(s, "{tag} {}", f.check);
        let _ = writeln!(s, "        have: {}", f.have);
        let _ = writeln!(s, "        need: {}", f.need);
        if let Some(fix) = &f.fix {
            let _ = writeln!(s, "        fix:  {fix}");
        }
    }
    let short = findings
        .iter()
        .filter(|f| f.status == Status::Short)
        .count();
    let warn = findings.iter().filter(|f| f.status == Status::Warn).count();
    let _ = writeln!(
        s,
        "\n{short} short, {warn} warnings. scripts/sysctl-tune.sh show lists the kernel settings \
         a high-connection proxy wants."
    );
    let worst = findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Ok);
    (s, worst)
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pair(path: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>());
    Some((it.next()?.ok()?, it.next()?.ok()?))
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn kernel_version() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = text.trim().split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// getrlimit(2) as (soft, hard), with RLIM_INFINITY as u64::MAX.
#[allow(unsafe_code)]
fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call; getrlimit only
    // writes into it.
    let rc = unsafe { libc::getrlimit(resource, &mut lim) };
    (rc == 0).then_some((lim.rlim_cur, lim.rlim_max))
}

/// Tries io_uring_setup(2) with a tiny ring and closes it again.
#[allow(unsafe_code)]
fn try_io_uring() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes; zeroed means "no flags, kernel picks the rest".
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes `params` (120 bytes, the size of struct
    // io_uring_params) and returns a new file descriptor or -1; it touches nothing else.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS));
    }
    // SAFETY: `fd` was just returned by io_uring_setup, is owned by nobody else, and is
    // closed exactly once here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Reads everything [`findings`] needs from this machine.
pub fn read() -> Readings {
    Readings {
        nofile: rlimit(libc::RLIMIT_NOFILE),
        nr_open: read_u64("/proc/sys/fs/nr_open"),
        file_max: read_u64("/proc/sys/fs/file-max"),
        somaxconn: read_u64("/proc/sys/net/core/somaxconn"),
        tcp_max_syn_backlog: read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        port_range: read_pair("/proc/sys/net/ipv4/ip_local_port_range"),
        mem_available: mem_available(),
        io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled"),
        io_uring_setup: Some(try_io_uring()),
        memlock: rlimit(libc::RLIMIT_MEMLOCK),
        kernel: kernel_version(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    }
}

/// `shardgate doctor`: prints the report; exit code 0 when nothing is short, 1 otherwise.
pub fn run(connections: u64) -> i32 {
    let readings = read();
    let (text, worst) = render(connections, &findings(&readings, connections));
    print!("{text}");
    i32::from(worst == Status::Short)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine, roughly: 20k files, defaults elsewhere.
    fn typical() -> Readings {
        Readings {
            nofile: Some((20_000, 20_000)),
            nr_open: Some(1_048_576),
            file_max: Some(2_466_190),
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(2048),
            port_range: Some((32768, 60999)),
            mem_available: Some(24 << 30),
            io_uring_disabled: Some(0),
            io_uring_setup: Some(Ok(())),
            memlock: Some((8 << 20, 8 << 20)),
            kernel: Some((6, 18)),
            cpus: 2,
        }
    }

    fn by_check<'a>(f: &'a [Finding], prefix: &str) -> &'a Finding {
        f.iter()
            .find(|x| x.check.starts_with(prefix))
            .unwrap_or_else(|| panic!("no finding {prefix}"))
    }

    #[test]
    fn ten_thousand_fit_here() {
        assert_eq!(fds_needed(10_000), 10_000 + 1024 + FD_BASE);
        assert_eq!(fds_needed(100_000), 100_000 + 10_000 + FD_BASE);
        assert_eq!(memory_needed(1000), 1000 * (4096 + 576));
        let f = findings(&typical(), 10_000);
        assert!(f.iter().all(|x| x.status != Status::Short), "{f:#?}");
        assert_eq!(by_check(&f, "SYN queue").status, Status::Warn);
        assert_eq!(by_check(&f, "io_uring").status, Status::Ok);
    }

    #[test]
    fn fifty_thousand_are_short_of_files() {
        let f = findings(&typical(), 50_000);
        let nofile = by_check(&f, "open files per process");
        assert_eq!(nofile.status, Status::Short);
        assert!(nofile.fix.as_deref().unwrap().contains("LimitNOFILE=55256"));
        let (text, worst) = render(50_000, &f);
        assert_eq!(worst, Status::Short);
        assert!(text.contains("[SHORT] open files per process"));
    }

    #[test]
    fn soft_limit_only_needs_ulimit() {
        let r = Readings {
            nofile: Some((1024, 1_048_576)),
            ..typical()
        };
        let f = findings(&r, 10_000);
        let nofile = by_check(&f, "open files per process");
        assert_eq!(nofile.status, Status::Short);
        assert_eq!(
            nofile.fix.as_deref(),
            Some("ulimit -n 11280   (before starting shardgate)")
        );
    }

    #[test]
    fn nr_open_and_memory() {
        let r = Readings {
            nr_open: Some(1000),
            mem_available: Some(10 << 20),
            ..typical()
        };
        let f = findings(&r, 10_000);
        assert_eq!(
            by_check(&f, "per-process file ceiling").status,
            Status::Short
        );
        assert_eq!(by_check(&f, "memory").status, Status::Short);
    }

    #[test]
    fn io_uring_disabled_and_old_kernel_memlock() {
        let r = Readings {
            io_uring_disabled: Some(2),
            io_uring_setup: Some(Err(libc::EPERM)),
            kernel: Some((5, 10)),
            memlock: Some((64 * 1024, 64 * 1024)),
            ..typical()
        };
        let f = findings(&r, 100);
        let u = by_check(&f, "io_uring");
        assert_eq!(u.status, Status::Warn);
        assert_eq!(
            u.fix.as_deref(),
            Some("sysctl -w kernel.io_uring_disabled=0")
        );
        let m = by_check(&f, "locked memory");
        assert_eq!(m.status, Status::Warn);
        assert!(m.fix.as_deref().unwrap().contains("memlock 1024"));
    }

    #[test]
    fn unreadable_values_warn() {
        let f = findings(&Readings::default(), 10);
        assert!(f.iter().all(|x| x.status != Status::Short));
        assert!(f.iter().any(|x| x.have.starts_with("unknown")));
    }

    #[test]
    fn reads_this_machine() {
        let r = read();
        assert!(r.cpus >= 1);
        assert!(r.nofile.is_some());
        // Exit code is 0 or 1, never anything else.
        assert!(matches!(run(10), 0 | 1));
    }
}
