//! The `shard-index` binary: see [`shard_index::cli`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(shard_index::cli::main_with_args(std::env::args_os()))
}
