//! The serving settings as they apply: each a flag, then the `--config`
//! file, then the default, resolved here once.

use std::net::SocketAddr;

use crate::kv::KvBackendSpec;
use crate::settings::cli::{DEFAULT_ADDRESS, DEFAULT_PORT, ServeArgs};
use crate::settings::file::AgentConfig;
use crate::settings::kv::KvSettings;
use crate::settings::record::RecordSettings;
use crate::spop::DEFAULT_MAX_FRAME_SIZE;

/// What `spoa-host` serves with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    /// The TCP listener; `None` with `--unix` alone.
    pub listen: Option<SocketAddr>,
    pub metrics_address: Option<SocketAddr>,
    pub max_frame_size: u32,
    /// Data-plane threads.
    pub workers: usize,
    /// Whether connections move between them as their load shows.
    pub rebalance: bool,
    pub kv: KvBackendSpec,
    /// What to record, if anything.
    pub record: Option<crate::record::RecordSpec>,
}

/// The flag if given, else the file's, else `default`.
fn flag_file_default<T>(flag: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag.or(file).unwrap_or_else(default)
}

impl ServeSettings {
    pub fn resolve(args: &ServeArgs, file: Option<&AgentConfig>) -> Result<ServeSettings, String> {
        let address = args.address.or(file.and_then(|c| c.address));
        let port = args.port.or(file.and_then(|c| c.port));
        // With --unix alone, no TCP listener.
        let listen = (args.unix.is_none() || address.is_some() || port.is_some()).then(|| {
            SocketAddr::new(
                address.unwrap_or(DEFAULT_ADDRESS),
                port.unwrap_or(DEFAULT_PORT),
            )
        });
        Ok(ServeSettings {
            listen,
            metrics_address: args
                .metrics_address
                .or(file.and_then(|c| c.metrics_address)),
            max_frame_size: flag_file_default(
                args.max_frame_size,
                file.and_then(|c| c.max_frame_size),
                || DEFAULT_MAX_FRAME_SIZE,
            ),
            workers: flag_file_default(
                args.workers.map(usize::from),
                file.and_then(|c| c.workers).map(usize::from),
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            rebalance: !args.no_rebalance && file.and_then(|c| c.rebalance).unwrap_or(true),
            kv: args
                .kv
                .settings()
                .spec(file.map_or(&KvSettings::default(), |c| &c.kv))?,
            record: args
                .record
                .settings()
                .spec(file.map_or(&RecordSettings::default(), |c| &c.record)),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::settings::cli::{Cli, SandboxArgs};

    fn resolve(flags: &[&str], file: Option<&str>) -> ServeSettings {
        let cli = Cli::parse_from(std::iter::once("spoa-host").chain(flags.iter().copied()));
        let dir = tempfile::tempdir().expect("temp dir");
        let config = file.map(|text| {
            let path = dir.path().join("agent.toml");
            std::fs::write(&path, text).expect("write");
            AgentConfig::load(&path, &SandboxArgs::defaults(), None).expect("valid")
        });
        ServeSettings::resolve(&cli.serve, config.as_ref()).expect("resolves")
    }

    const FILE: &str = "port = 2000\nworkers = 3\nmax-frame-size = 4096\n\
                        metrics-address = \"127.0.0.1:9000\"\nkv-memory = \"1MiB\"\n\
                        [[guest]]\nname = \"a\"\nmodule = \"a.wasm\"\nmessages = [\"m\"]\n";

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let defaults = resolve(&["--module", "a.wasm"], None);
        assert_eq!(
            defaults.listen,
            Some(SocketAddr::new(DEFAULT_ADDRESS, DEFAULT_PORT))
        );
        assert_eq!(defaults.max_frame_size, DEFAULT_MAX_FRAME_SIZE);
        assert_eq!(defaults.metrics_address, None);

        let from_file = resolve(&["--config", "x"], Some(FILE));
        assert_eq!(
            from_file.listen,
            Some(SocketAddr::new(DEFAULT_ADDRESS, 2000))
        );
        assert_eq!((from_file.workers, from_file.max_frame_size), (3, 4096));
        assert_eq!(
            from_file.metrics_address,
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            from_file.kv,
            KvBackendSpec::Memory {
                limit_bytes: 1 << 20
            }
        );

        let flags = resolve(
            &[
                "--config",
                "x",
                "-p",
                "3000",
                "-n",
                "1",
                "-m",
                "8192",
                "--kv-memory",
                "2MiB",
            ],
            Some(FILE),
        );
        assert_eq!(flags.listen, Some(SocketAddr::new(DEFAULT_ADDRESS, 3000)));
        assert_eq!((flags.workers, flags.max_frame_size), (1, 8192));
        assert_eq!(
            flags.kv,
            KvBackendSpec::Memory {
                limit_bytes: 2 << 20
            }
        );
    }

    #[test]
    fn a_unix_socket_alone_opens_no_tcp_listener() {
        assert_eq!(
            resolve(&["--module", "a.wasm", "--unix", "/tmp/s"], None).listen,
            None
        );
        assert!(
            resolve(&["--module", "a.wasm", "--unix", "/tmp/s", "-p", "1"], None)
                .listen
                .is_some()
        );
    }
}
