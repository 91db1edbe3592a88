//! Settings: the command line (`cli`) and the `--config` TOML file (`file`),
//! each a flag, then the file, then the default. Turns them into the plain
//! specs the layers below take (`GuestSpec`, `SandboxConfig`, grants); knows
//! nothing of runtimes, sockets or wasmtime.

pub mod cli;
pub mod file;
pub mod kv;
pub mod record;
pub mod serve;
