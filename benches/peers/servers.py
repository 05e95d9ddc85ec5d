"""The S3 endpoints the benchmark reads from, all on 127.0.0.1.

- :class:`S3TestServer` — the repo's ``s3-test-server`` (s3s + s3s-fs) over the bucket
  directory. It answers LIST (the bench indexes through it) and reports the etags. It is not what
  loaders read from: s3s-fs spends ~1.5 of the machine's 2 cores to serve ~100-200 MB/s of
  whole objects and ~45 MB/s of 8 MiB range GETs (measured here, 64 MB objects), so it would
  cap every loader, and range readers most.
- :class:`Nginx` — a foreground nginx with its own config in a temporary directory, which every
  loader reads through. It (a) serves GET and HEAD from the files itself (sendfile, page cache
  speed), with its own etags and its own ``If-Match`` check; (b) sends every request with a
  query string (LIST) to s3s-fs; (c) with ``latency_ms`` waits that long before answering any
  request (the echo module's non-blocking ``echo_sleep``); (d) logs every response's size, which
  gives each run's bytes and requests fetched (read amplification).

One object version has one etag on both servers: before they serve, :func:`give_nginx_etags`
stores nginx's etag of every file (``"<mtime>-<size>"`` in hex) as the etag s3s-fs reports for
it. A client that pins its reads to an etag it saw (s3transfer's ranged GETs; a manifest that
records etags) then reads through nginx, which checks ``If-Match`` itself and refuses (412) a
file rewritten since, as a real store would. (s3s-fs lists no etags, so shard-index's manifests
here pin shards by modification time, which nginx's ``Last-Modified`` matches.)

nginx used to reach the files through a second nginx that the first proxied to, swapping the
etags. That hop copied every byte twice more in user space (in from the inner server, out to
the client): 18% of all samples in a ``perf record -a`` of a blobs/s3 read, on the two cores
the loaders share with the server.

Every server stops when the benchmark stops: ``s3-test-server`` serves until its stdin closes,
and nginx runs in the foreground as our child.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: Optional[subprocess.Popen] = None) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class S3TestServer:
    """``s3-test-server ROOT --bucket B [--latency-ms N]``; ``info`` is its endpoint JSON."""

    def __init__(self, binary: Path, root: Path, bucket: str, latency_ms: int = 0) -> None:
        cmd = [str(binary), str(root), "--bucket", bucket]
        if latency_ms:
            cmd += ["--latency-ms", str(latency_ms)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{binary} exited before printing its endpoint (status {self.proc.wait()})")
        self.info: Dict[str, object] = json.loads(line)
        self.endpoint = str(self.info["endpoint"])
        self.port = int(self.info["port"])  # type: ignore[arg-type]
        self.latency_ms = latency_ms

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def nginx_etag(path: Path) -> str:
    """nginx's etag of a static file, unquoted: its mtime in seconds and its size, in hex
    (``ngx_http_set_etag``)."""
    st = path.stat()
    return f"{int(st.st_mtime):x}-{st.st_size:x}"


def give_nginx_etags(root: Path, bucket: str) -> List[str]:
    """Stores nginx's etag of every object under ``root/bucket`` as the etag s3s-fs reports for
    it (s3s-fs 0.14 keeps an object's etag in ``root/.bucket-B.object-K.internal.json``, B and K
    unpadded URL-safe base64); returns the keys, sorted. Each metadata file is written whole
    (temp file, rename). Without one, s3s-fs would hash the whole object for every HEAD and GET."""
    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    bucket_dir = root / bucket
    keys = []
    for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
        key = path.relative_to(bucket_dir).as_posix()
        keys.append(key)
        meta = root / f".bucket-{b64(bucket)}.object-{b64(key)}.internal.json"
        info = json.loads(meta.read_text()) if meta.exists() else {}
        tag = nginx_etag(path)
        if info.get("e_tag") != tag:
            info["e_tag"] = tag
            tmp = meta.with_name(meta.name + ".tmp")
            tmp.write_text(json.dumps(info))
            os.replace(tmp, meta)
    return keys


def check_same_etags(base: "S3TestServer", nginx: "Nginx", root: Path, bucket: str, key: str) -> None:
    """Raises unless s3s-fs (signed HEAD) and nginx (unsigned HEAD) give object ``key`` the
    same etag, the one :func:`give_nginx_etags` stored."""
    import http.client

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=base.endpoint,
        aws_access_key_id=str(base.info["access_key"]),
        aws_secret_access_key=str(base.info["secret_key"]),
        region_name=str(base.info["region"]),
        config=Config(s3={"addressing_style": "path"}),
    )
    from_s3s = client.head_object(Bucket=bucket, Key=key).get("ETag")
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    try:
        conn.request("HEAD", f"/{bucket}/{key}")
        from_nginx = conn.getresponse().getheader("ETag")
    finally:
        conn.close()
    want = f'"{nginx_etag(root / bucket / key)}"'
    if not (from_s3s == from_nginx == want):
        raise RuntimeError(
            f"{key}: s3s-fs reports etag {from_s3s}, nginx {from_nginx}, expected {want}; "
            "reads pinned to an etag seen on one server would be refused by the other"
        )


_LOG_FORMAT = '$request_method $status $body_bytes_sent "$uri" $request_time'


class Nginx:
    """A foreground nginx on a free port serving ``root`` (see the module docs)."""

    def __init__(self, root: Path, upstream_port: int, latency_ms: int = 0, workers: str = "auto") -> None:
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.port = free_port()
        self.log = self.dir / "access.log"
        (self.dir / "tmp").mkdir()
        # Files are served by nginx itself; only LIST (a query string) goes to s3s-fs.
        # `proxy_pass` inside `if` is one of the uses nginx documents as safe.
        serve = """
      if ($args) {
        proxy_pass http://s3s;
      }"""
        load = ""
        if latency_ms:
            # The echo module (a dependency of Debian's nginx-light) waits without blocking
            # the worker, then hands the request on.
            load = "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
            locations = f"""
    location / {{
      echo_sleep {latency_ms / 1000:.3f};
      echo_exec @serve;
    }}
    location @serve {{{serve}
    }}"""
        else:
            locations = f"""
    location / {{{serve}
    }}"""
        conf = f"""
{load}
worker_processes {workers};
error_log {self.dir}/error.log warn;
pid {self.dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  log_format bench '{_LOG_FORMAT}';
  client_body_temp_path {self.dir}/tmp/body;
  proxy_temp_path {self.dir}/tmp/proxy;
  fastcgi_temp_path {self.dir}/tmp/fastcgi;
  uwsgi_temp_path {self.dir}/tmp/uwsgi;
  scgi_temp_path {self.dir}/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  keepalive_timeout 120s;
  types {{ }}
  default_type application/octet-stream;
  upstream s3s {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  proxy_http_version 1.1;
  proxy_set_header Host $http_host;
  proxy_set_header Connection "";
  proxy_read_timeout 600s;
  server {{
    listen 127.0.0.1:{self.port};
    access_log {self.log} bench;
    root {root};
    output_buffers 2 1m;
    {locations}
  }}
}}
"""
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "w"),
        )
        try:
            wait_for_port(self.port, proc=self.proc)
        except (TimeoutError, RuntimeError):
            why = " ".join(p.read_text() for p in (self.dir / "stderr.log", self.dir / "error.log") if p.exists())
            self.stop()
            raise RuntimeError(f"nginx did not start: {why}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def traffic_since(self, offset: int) -> Dict[str, int]:
        """Requests and body bytes sent since ``offset`` (a :meth:`log_offset`), by method."""
        out = {"requests": 0, "bytes": 0, "get": 0, "head": 0, "errors": 0}
        if not self.log.exists():
            return out
        # nginx writes its log lines unbuffered; give the last response a moment to be logged.
        time.sleep(0.2)
        with open(self.log, "rb") as f:
            f.seek(offset)
            for raw in f:
                m = re.match(rb'(\S+) (\d+) (\d+) "([^"]*)"', raw)
                if not m:
                    continue
                method, status, size = m.group(1), int(m.group(2)), int(m.group(3))
                out["requests"] += 1
                out["bytes"] += size
                if status >= 400:
                    out["errors"] += 1
                if method == b"HEAD":
                    out["head"] += 1
                elif method == b"GET":
                    out["get"] += 1
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Source:
    """One benchmark source: where loaders read, how, and who counts the bytes."""

    def __init__(self, name: str, endpoint: Optional[str], server: str, nginx: Optional[Nginx], creds: Dict[str, str]):
        self.name = name
        self.endpoint = endpoint  # None: local disk
        self.server = server  # human-readable: which server answered
        self.nginx = nginx
        self.creds = creds

    @property
    def is_s3(self) -> bool:
        return self.endpoint is not None

    def env(self) -> Dict[str, str]:
        """Environment for a loader process reading this source (peers read S3 config here)."""
        if not self.is_s3:
            return {}
        assert self.endpoint is not None
        return {
            "AWS_ACCESS_KEY_ID": self.creds["access_key"],
            "AWS_SECRET_ACCESS_KEY": self.creds["secret_key"],
            "AWS_DEFAULT_REGION": self.creds["region"],
            "AWS_REGION": self.creds["region"],
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            # MosaicML Streaming takes its endpoint from here.
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def describe(self) -> Dict[str, object]:
        return {"name": self.name, "endpoint": self.endpoint, "server": self.server}


def local_source() -> Source:
    return Source("local", None, "local disk (page cache warm)", None, {})


def start_s3_sources(
    binary: Path, root: Path, bucket: str, names: list, nginx_workers: str = "auto"
) -> Dict[str, object]:
    """Starts what the sources in ``names`` need. Returns ``{"sources": {name: Source},
    "stop": callable, "index_endpoint": str, "creds": {...}}``. Every S3 source is an nginx
    serving the bucket directory with s3s-fs behind it for LIST (``index_endpoint`` is s3s-fs
    itself, for indexing); ``s3-<N>ms`` waits N ms before answering every request.
    ``nginx_workers`` is nginx's ``worker_processes``: ``auto`` (one per core, nginx's advice)
    by default, since a single worker process is one core of server, and it, not the loader,
    then capped the bare read near 0.9-1.1 GB/s here."""
    stoppers = []
    sources: Dict[str, Source] = {}
    base = S3TestServer(binary, root, bucket)
    stoppers.append(base.stop)
    creds = {k: str(base.info[k]) for k in ("access_key", "secret_key", "region")}
    try:
        keys = give_nginx_etags(root, bucket)
        for name in names:
            m = re.fullmatch(r"s3(?:-(\d+)ms)?", name)
            if not m:
                raise ValueError(f"unknown source {name!r} (local, s3, s3-<N>ms)")
            latency = int(m.group(1) or 0)
            ng = Nginx(root, base.port, latency_ms=latency, workers=nginx_workers)
            stoppers.append(ng.stop)
            if keys:
                check_same_etags(base, ng, root, bucket, keys[0])
            what = f"nginx (sendfile, page cache, worker_processes {nginx_workers})" + (
                f", {latency} ms before every request" if latency else ""
            )
            sources[name] = Source(name, ng.endpoint, what, ng, creds)
    except BaseException:
        for stop in reversed(stoppers):
            stop()
        raise

    def stop_all() -> None:
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass

    return {"sources": sources, "stop": stop_all, "index_endpoint": base.endpoint, "creds": creds}


def storage_options(endpoint: str, creds: Dict[str, str]) -> Dict[str, str]:
    """object_store options (shardstream, shard-index) for an S3 endpoint on loopback."""
    return {
        "aws_endpoint": endpoint,
        "aws_access_key_id": creds["access_key"],
        "aws_secret_access_key": creds["secret_key"],
        "aws_region": creds["region"],
        "aws_allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }


def cleanup_env() -> Dict[str, str]:
    """The environment with any AWS settings of the caller removed (so runs use only ours)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
