//! The `shard-index` binary: see [`shard_index::cli`].

fn main() -> std::process::ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`shard-index inspect M | head -1`)
    // would panic with "failed printing to stdout". A command-line tool should end quietly
    // instead, as `cat` does. Only here, in the binary: the library's `main_with_args` also
    // runs inside Python, whose signal handling is not ours to change.
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::ExitCode::from(shard_index::cli::main_with_args(std::env::args_os()))
}
