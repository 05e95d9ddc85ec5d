//! A fault-injecting HTTP proxy on loopback, in front of an S3 server (usually [`crate::s3`]).
//!
//! The loader's real object_store client talks to the proxy exactly as to S3; the proxy forwards
//! each request unchanged (the `Host` header included, so SigV4 signatures still verify) over a
//! fresh connection to the upstream server and injects, per request:
//!
//! - **latency**: a fixed delay, plus an optional heavy-tailed one (Pareto: `scale / U^(1/α)`,
//!   capped), before the request is forwarded;
//! - **503 SlowDown**: S3's throttling answer, with its XML error body;
//! - **reset**: the headers (full `Content-Length`) and part of the body, then a TCP RST
//!   (`SO_LINGER` 0);
//! - **truncate**: the headers (full `Content-Length`) and part of the body, then a clean close;
//! - **stall**: the connection goes silent forever — before the headers or halfway through the
//!   body (alternately);
//! - **body rate**: every response body paced to at most so many bytes per second, as one S3
//!   connection carries tens of MB/s however fast the link is.
//!
//! # Deterministic schedule
//!
//! Whether request *r* meets a fault depends only on the seed and on *r*'s identity — method,
//! path and query, `Range` header — and on how many requests with that identity came before
//! (the first GET of a range may fail where its retry succeeds). So a run is reproducible
//! whatever the interleaving of concurrent requests, and a retry draws a fresh outcome. Only
//! `GET`s meet faults other than latency (uploads and listings are left alone).
//!
//! The spec can be changed while the proxy runs ([`FaultProxy::set_spec`]), e.g. to end a storm of
//! 503s; [`FaultProxy::stats`] counts what was injected.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// What to inject. Probabilities are per GET request; they are tried in the order listed and
/// must sum to at most 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultSpec {
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Delay before every request.
    pub latency: Duration,
    /// Extra heavy-tailed delay before every request.
    pub tail: Option<Pareto>,
    /// Answer `503 SlowDown`.
    pub slowdown: f64,
    /// Send part of the body, then reset the connection.
    pub reset: f64,
    /// Send part of the body, then close the connection cleanly.
    pub truncate: f64,
    /// Go silent forever (before the headers or mid-body).
    pub stall: f64,
    /// Most bytes per second of each response body (`None`: as fast as the upstream sends).
    pub body_rate: Option<u64>,
}

/// Heavy-tailed delay: `scale / U^(1/alpha)` for uniform `U`, at most `cap`. With `alpha`
/// 1.5 the median is 1.6 × `scale` and the 99th percentile 21.5 × `scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Pareto {
    pub scale: Duration,
    pub alpha: f64,
    pub cap: Duration,
}

impl Pareto {
    fn sample(&self, u: f64) -> Duration {
        let u = u.clamp(1e-12, 1.0);
        let secs = self.scale.as_secs_f64() / u.powf(1.0 / self.alpha);
        Duration::from_secs_f64(secs.min(self.cap.as_secs_f64()))
    }
}

impl FaultSpec {
    /// No faults.
    pub fn none() -> FaultSpec {
        FaultSpec::default()
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// `seed=7,latency=5ms,tail=2ms:1.5:2s,slowdown=0.05,reset=0.02,truncate=0.02,stall=0.01,body_rate=20M`
/// (any subset; durations take `us`, `ms` or `s`; `tail=SCALE:ALPHA[:CAP]`, cap 5 s by default;
/// `body_rate` is bytes per second, with an optional `k` or `M` for 10³ or 10⁶).
impl FromStr for FaultSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<FaultSpec> {
        let mut spec = FaultSpec::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("fault spec item {part:?} is not KEY=VALUE"))?;
            let prob = |v: &str| -> Result<f64> {
                let p: f64 = v.parse().with_context(|| format!("{k}={v:?}"))?;
                if !(0.0..=1.0).contains(&p) {
                    bail!("{k}={p} is not a probability");
                }
                Ok(p)
            };
            match k {
                "seed" => spec.seed = v.parse().with_context(|| format!("seed={v:?}"))?,
                "latency" => spec.latency = parse_duration(v)?,
                "tail" => {
                    let mut it = v.split(':');
                    let scale = parse_duration(it.next().unwrap_or(""))?;
                    let alpha: f64 = it
                        .next()
                        .context("tail=SCALE:ALPHA[:CAP]")?
                        .parse()
                        .context("tail alpha")?;
                    if alpha.is_nan() || alpha <= 0.0 {
                        bail!("tail alpha must be positive");
                    }
                    let cap = match it.next() {
                        Some(c) => parse_duration(c)?,
                        None => Duration::from_secs(5),
                    };
                    spec.tail = Some(Pareto { scale, alpha, cap });
                }
                "slowdown" => spec.slowdown = prob(v)?,
                "reset" => spec.reset = prob(v)?,
                "truncate" => spec.truncate = prob(v)?,
                "stall" => spec.stall = prob(v)?,
                "body_rate" => spec.body_rate = Some(parse_rate(v)?),
                other => bail!("unknown fault {other:?} (seed, latency, tail, slowdown, reset, truncate, stall, body_rate)"),
            }
        }
        if spec.slowdown + spec.reset + spec.truncate + spec.stall > 1.0 + 1e-9 {
            bail!("fault probabilities sum to more than 1");
        }
        Ok(spec)
    }
}

fn parse_rate(v: &str) -> Result<u64> {
    let (num, scale) = match v.trim().strip_suffix('M') {
        Some(n) => (n, 1e6),
        None => v
            .trim()
            .strip_suffix('k')
            .map_or((v.trim(), 1.0), |n| (n, 1e3)),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("body_rate {v:?} (e.g. 20M)"))?;
    if !n.is_finite() || n * scale < 1.0 {
        bail!("body_rate {v:?} must be at least one byte per second");
    }
    Ok((n * scale) as u64)
}

fn parse_duration(v: &str) -> Result<Duration> {
    let v = v.trim();
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((v, "ms"), |i| (&v[..i], &v[i..]));
    let n: f64 = num
        .parse()
        .with_context(|| format!("duration {v:?} (e.g. 30ms)"))?;
    if !n.is_finite() || n < 0.0 {
        bail!("duration {v:?} must be a non-negative number");
    }
    let secs = match unit {
        "us" => n * 1e-6,
        "ms" => n * 1e-3,
        "s" => n,
        _ => bail!("duration unit of {v:?} must be us, ms or s"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultStats {
    pub requests: u64,
    pub slowdowns: u64,
    pub resets: u64,
    pub truncations: u64,
    pub stalls: u64,
    /// Requests that got a heavy-tailed delay of at least 10 × its scale.
    pub long_delays: u64,
}

impl FaultStats {
    /// Faults that failed a request (503s, resets, truncations and stalls).
    pub fn failures(&self) -> u64 {
        self.slowdowns + self.resets + self.truncations + self.stalls
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    slowdowns: AtomicU64,
    resets: AtomicU64,
    truncations: AtomicU64,
    stalls: AtomicU64,
    long_delays: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    SlowDown,
    Reset,
    Truncate,
    StallHeaders,
    StallBody,
}

struct Shared {
    upstream: SocketAddr,
    spec: RwLock<FaultSpec>,
    /// Requests seen per identity (method, path, range).
    seen: Mutex<HashMap<String, u64>>,
    counters: Counters,
}

impl Shared {
    /// The pace of response bodies now (see [`FaultSpec::body_rate`]).
    fn body_rate(&self) -> Option<u64> {
        self.spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .body_rate
    }

    /// The fault and delay for the next request with this identity.
    fn decide(&self, identity: &str, is_get: bool) -> (Fault, Duration) {
        let spec = self.spec.read().unwrap_or_else(|p| p.into_inner()).clone();
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let n = seen.entry(identity.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let h = hash(spec.seed, identity, n);
        let u_fault = unit(h);
        let u_delay = unit(mix(h ^ 0xa076_1d64_78bd_642f));
        let mut delay = spec.latency;
        if let Some(tail) = spec.tail {
            let d = tail.sample(u_delay);
            if d >= tail.scale * 10 {
                self.counters.long_delays.fetch_add(1, Ordering::Relaxed);
            }
            delay += d;
        }
        if !is_get {
            return (Fault::None, delay);
        }
        let mut edge = 0.0;
        for (p, fault) in [
            (spec.slowdown, Fault::SlowDown),
            (spec.reset, Fault::Reset),
            (spec.truncate, Fault::Truncate),
            (spec.stall, Fault::StallHeaders),
        ] {
            edge += p;
            if u_fault < edge {
                let fault = if fault == Fault::StallHeaders && h & (1 << 40) != 0 {
                    Fault::StallBody
                } else {
                    fault
                };
                return (fault, delay);
            }
        }
        (Fault::None, delay)
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over the identity, mixed with the seed and the occurrence.
fn hash(seed: u64, identity: &str, n: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in identity.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h ^ mix(seed) ^ mix(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A running proxy; dropping it stops it (and ends every stalled connection).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (any free port) forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, spec: FaultSpec) -> Result<FaultProxy> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            spec: RwLock::new(spec),
            seen: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        let (tx, mut rx) = oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    loop {
                        let socket = tokio::select! {
                            r = listener.accept() => match r {
                                Ok((s, _)) => s,
                                Err(_) => continue,
                            },
                            _ = &mut rx => break,
                        };
                        tokio::spawn(serve_connection(socket, sh.clone()));
                    }
                });
                // Stalled connections never finish by themselves: drop them.
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FaultProxy {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault spec for requests from now on.
    pub fn set_spec(&self, spec: FaultSpec) {
        *self.shared.spec.write().unwrap_or_else(|p| p.into_inner()) = spec;
    }

    pub fn spec(&self) -> FaultSpec {
        self.shared
            .spec
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> FaultStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultStats {
            requests: l(&c.requests),
            slowdowns: l(&c.slowdowns),
            resets: l(&c.resets),
            truncations: l(&c.truncations),
            stalls: l(&c.stalls),
            long_delays: l(&c.long_delays),
        }
    }

    /// object_store options that reach the upstream S3 server through this proxy.
    pub fn storage_options(&self) -> shard_index::StorageOptions {
        crate::s3::s3_options(&self.endpoint())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_connection(socket: TcpStream, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    // The descriptor, to turn a close into a reset when that is the fault.
    let fd = socket.as_raw_fd();
    if shared.body_rate().is_some() {
        // A paced body that the client does not read must stall, as it would on a real network:
        // the loopback send buffer would otherwise grow to megabytes and take the whole body.
        set_send_buffer(fd, 64 << 10);
    }
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, shared, fd).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(socket), service)
        .await;
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>, fd: i32) -> Response<ProxyBody> {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let range = req
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let identity = format!(
        "{} {} {range}",
        req.method(),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let is_get = req.method() == hyper::Method::GET;
    let (fault, delay) = shared.decide(&identity, is_get);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let c = &shared.counters;
    match fault {
        Fault::SlowDown => {
            c.slowdowns.fetch_add(1, Ordering::Relaxed);
            return slow_down();
        }
        Fault::StallHeaders => {
            c.stalls.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    let resp = match forward(req, shared.upstream).await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(full(format!("fault proxy: upstream failed: {e:#}")))
                .expect("static response");
        }
    };
    let (parts, body) = resp.into_parts();
    let len = body.size_hint().exact();
    // Faults mid-body need a body to cut: an empty or unsized one is passed through.
    let cut = match (fault, len) {
        (Fault::Reset | Fault::Truncate | Fault::StallBody, Some(n)) if n >= 2 => Some(n / 2),
        _ => None,
    };
    let mode = match (fault, cut) {
        (Fault::Reset, Some(_)) => {
            c.resets.fetch_add(1, Ordering::Relaxed);
            set_linger_zero(fd);
            Cut::Reset
        }
        (Fault::Truncate, Some(_)) => {
            c.truncations.fetch_add(1, Ordering::Relaxed);
            Cut::Truncate
        }
        (Fault::StallBody, Some(_)) => {
            c.stalls.fetch_add(1, Ordering::Relaxed);
            Cut::Stall
        }
        _ => Cut::Truncate,
    };
    let body = FaultBody {
        inner: body,
        sent: 0,
        cut_at: cut,
        mode,
        pace: shared.body_rate().map(Pace::new),
        held: None,
    };
    Response::from_parts(parts, body.boxed())
}

fn full(s: impl Into<Bytes>) -> ProxyBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

fn slow_down() -> Response<ProxyBody> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(hyper::header::CONTENT_TYPE, "application/xml")
        .body(full(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
             <Message>Please reduce your request rate.</Message>\
             <RequestId>fault-proxy</RequestId></Error>",
        ))
        .expect("static response")
}

/// Sends `req` to `upstream` over a new connection.
async fn forward(req: Request<Incoming>, upstream: SocketAddr) -> Result<Response<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

/// Fixes the socket's send buffer at `bytes` (the kernel doubles it for bookkeeping).
fn set_send_buffer(fd: i32, bytes: libc::c_int) {
    set_socket_option(fd, libc::SO_SNDBUF, &bytes);
}

/// Makes the next close of the socket a TCP reset instead of a FIN.
fn set_linger_zero(fd: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_socket_option(fd, libc::SO_LINGER, &linger);
}

/// `setsockopt(fd, SOL_SOCKET, name, value)`, best effort (a fault that cannot be set up only
/// makes the fault milder).
fn set_socket_option<T>(fd: i32, name: libc::c_int, value: &T) {
    // SAFETY: `fd` is the connection's socket, open for as long as the connection's service
    // (which calls this) runs; setsockopt reads `size_of::<T>()` bytes of `value` only during
    // the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Truncate,
    Reset,
    Stall,
}

/// The upstream body, passed through until `cut_at` bytes, then ended early, failed (which
/// makes hyper drop the connection) or left hanging; paced, if `pace` says so.
struct FaultBody {
    inner: Incoming,
    sent: u64,
    cut_at: Option<u64>,
    mode: Cut,
    pace: Option<Pace>,
    /// Upstream bytes not yet sent (a paced body sends [`Pace::FRAME`] bytes at a time).
    held: Option<Bytes>,
}

/// A body's pacing: each frame of `n` bytes leaves `n / rate` seconds after the one before,
/// or later. Time the reader spent not reading earns no credit (as on a real connection, where
/// the sender's window does not grow while the receiver sleeps), so a body left waiting is not
/// then sent at full speed.
struct Pace {
    rate: u64,
    next: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Pace {
    /// Bytes per frame of a paced body: small enough that pacing is smooth at a few MB/s.
    const FRAME: usize = 16 << 10;

    fn new(rate: u64) -> Pace {
        Pace {
            rate: rate.max(1),
            next: tokio::time::Instant::now(),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Ready once the next frame may leave.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.next <= tokio::time::Instant::now() {
            return Poll::Ready(());
        }
        self.timer.as_mut().reset(self.next);
        std::future::Future::poll(self.timer.as_mut(), cx)
    }

    /// A frame of `n` bytes left now.
    fn sent(&mut self, n: usize) {
        let now = tokio::time::Instant::now();
        self.next = self.next.max(now) + Duration::from_secs_f64(n as f64 / self.rate as f64);
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(cut) = self.cut_at {
            if self.sent >= cut {
                return match self.mode {
                    Cut::Truncate => Poll::Ready(None),
                    Cut::Reset => Poll::Ready(Some(Err("fault proxy: injected reset".into()))),
                    // Never woken: the connection stays open and silent.
                    Cut::Stall => Poll::Pending,
                };
            }
        }
        if let Some(pace) = self.pace.as_mut() {
            if pace.poll_ready(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let mut data = match self.held.take() {
            Some(data) => data,
            None => match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            },
        };
        if self.pace.is_some() && data.len() > Pace::FRAME {
            self.held = Some(data.split_off(Pace::FRAME));
        }
        if let Some(cut) = self.cut_at {
            let room = (cut - self.sent) as usize;
            if data.len() > room {
                data.truncate(room);
                self.held = None;
            }
        }
        self.sent += data.len() as u64;
        if let Some(pace) = self.pace.as_mut() {
            pace.sent(data.len());
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.cut_at.is_none() && self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The full length, as the Content-Length header says: the cut is the fault.
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: FaultSpec =
            "seed=7,latency=5ms,tail=2ms:1.5:1s,slowdown=0.05,reset=0.02,truncate=0.01,stall=0.01"
                .parse()
                .unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.latency, Duration::from_millis(5));
        assert_eq!(s.tail.unwrap().cap, Duration::from_secs(1));
        assert_eq!(s.slowdown, 0.05);
        assert!("slowdown=2".parse::<FaultSpec>().is_err());
        assert!("slowdown=0.6,reset=0.6".parse::<FaultSpec>().is_err());
        assert!("bogus=1".parse::<FaultSpec>().is_err());
        assert_eq!(
            "body_rate=2.5M".parse::<FaultSpec>().unwrap().body_rate,
            Some(2_500_000)
        );
        assert_eq!(
            "body_rate=300k".parse::<FaultSpec>().unwrap().body_rate,
            Some(300_000)
        );
        assert!("body_rate=0".parse::<FaultSpec>().is_err());
        assert_eq!("".parse::<FaultSpec>().unwrap(), FaultSpec::none());
    }

    #[test]
    fn schedule_is_deterministic_and_close_to_the_rates() {
        let shared = |seed| Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            spec: RwLock::new(FaultSpec {
                seed,
                slowdown: 0.3,
                stall: 0.1,
                ..FaultSpec::default()
            }),
            seen: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        };
        let run = |seed| {
            let s = shared(seed);
            (0..4000)
                .map(|i| s.decide(&format!("GET /b/k{} ", i % 100), true).0)
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        let slow = a.iter().filter(|f| **f == Fault::SlowDown).count();
        let stall = a
            .iter()
            .filter(|f| matches!(f, Fault::StallHeaders | Fault::StallBody))
            .count();
        assert!((1000..1400).contains(&slow), "{slow}");
        assert!((300..500).contains(&stall), "{stall}");
        let p = Pareto {
            scale: Duration::from_millis(2),
            alpha: 1.5,
            cap: Duration::from_secs(1),
        };
        assert_eq!(p.sample(1.0), Duration::from_millis(2));
        assert_eq!(p.sample(0.0), Duration::from_secs(1));
    }
}
