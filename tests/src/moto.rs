//! moto's S3 server, an independent S3 implementation to run the storage suite against.
//!
//! Started as `python -m moto.server` on a free loopback port with the interpreter named by
//! `SHARDSTREAM_PYTHON` (the README's set-up points it at the project's virtual environment),
//! falling back to `python3`. It is stopped when the handle is dropped. If moto cannot be started
//! the error says so: the suite fails rather than silently skipping a backend.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    pub fn start() -> Result<Self> {
        let python = std::env::var("SHARDSTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = free_port()?;
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting moto with {python} (set SHARDSTREAM_PYTHON)"))?;
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait()? {
                bail!("moto exited at start ({status}); is moto[server] installed for {python}?");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.child.kill();
        bail!("moto did not start listening on port {port} within 30 s")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto does not check signatures, so a bare PUT suffices).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        if !response.starts_with("HTTP/1.1 200") && !response.starts_with("HTTP/1.0 200") {
            bail!(
                "creating bucket {bucket} on moto: {}",
                response.lines().next().unwrap_or("")
            );
        }
        Ok(())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (moto cannot report the port it picked).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
