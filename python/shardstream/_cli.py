"""The ``shard-index`` command installed with the Python package.

It offers the two subcommands most users need, ``build`` and ``inspect``, with the same
arguments and output as the Rust ``shard-index`` binary (``--json`` output is identical). The
binary's other subcommands (``update``, ``verify``, ``generate``, ``plan``) live only in the
Rust CLI (``cargo install --path shard-index`` from the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Optional, Sequence

from . import ShardStreamError, index, inspect

RUST_ONLY = ("update", "verify", "generate", "plan")


def _kv(text: str) -> tuple:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shard-index", description="Index sharded datasets in object storage")
    p.add_argument("-q", "--quiet", action="store_true", help="no human summary")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="list a prefix and write a manifest of its shards")
    b.add_argument("source", nargs="+", help="s3://, gs://, az://, http(s)://, file:// URL or a local path")
    b.add_argument("-o", "--output", required=True, help="where to write the manifest")
    b.add_argument("--format", default="auto", help="auto, parquet, tar or jsonl")
    b.add_argument("--include", action="append", default=[], help="only paths matching this glob")
    b.add_argument("--exclude", action="append", default=[], help="skip paths matching this glob")
    b.add_argument("--skip-bad", action="store_true", help="list unreadable objects instead of failing")
    b.add_argument("--storage-option", action="append", default=[], type=_kv, metavar="KEY=VALUE")
    b.add_argument("--concurrency", type=int, default=16, help="objects read at once")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")

    i = sub.add_parser("inspect", help="summarise a manifest")
    i.add_argument("manifest")
    i.add_argument("--storage-option", action="append", default=[], type=_kv, metavar="KEY=VALUE")
    i.add_argument("--json", action="store_true")

    for name in RUST_ONLY:
        r = sub.add_parser(name, help="(Rust CLI only)")
        r.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _build(a: argparse.Namespace) -> int:
    options: Dict[str, str] = dict(a.storage_option)
    s = index(
        a.source,
        a.output,
        format=a.format,
        include=a.include,
        exclude=a.exclude,
        concurrency=a.concurrency,
        storage_options=options,
        skip_bad=a.skip_bad,
    )
    if a.json:
        print(json.dumps(s, indent=2))
    elif not a.quiet:
        print(
            f"wrote {a.output}: {s['shards']} shards, {s['samples']} samples, {_human(s['bytes'])} "
            f"in {s['seconds']:.2f}s ({s['shards_per_s']:.0f} shards/s, {_human(s['bytes_read'])} read)"
        )
        if s.get("objects_ignored"):
            print(f"ignored {s['objects_ignored']} non-shard objects")
        for bad in s.get("bad", []):
            print(f"skipped {bad['path']}: {bad['error']}")
        print(f"fingerprint {s['fingerprint']}")
    return 0


def _inspect(a: argparse.Namespace) -> int:
    r = inspect(a.manifest, storage_options=dict(a.storage_option))
    if a.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"manifest     {r['manifest']} (format {r['version']}, {r['builder']})")
    for s in r["sources"]:
        print(f"source       {s}")
    print(f"shards       {r['shards']}")
    print(f"samples      {r['samples']}")
    print(f"bytes        {r['bytes']} ({_human(r['bytes'])})")
    print("formats      " + ", ".join(f"{k}: {v}" for k, v in r["formats"].items()))
    if r["row_groups"]:
        print(f"row groups   {r['row_groups']}")
    print(f"fingerprint  {r['fingerprint']}")
    for label in ("smallest", "largest"):
        s = r.get(label)
        if s:
            print(f"{label:<12} {s['path']} ({_human(s['bytes'])}, {s['samples']} samples)")
    print("schema")
    for f in r["schema"]:
        print(f"  {f['name']}: {f['type']}{'' if f['nullable'] else ' (not null)'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``shard-index`` console script; returns the exit code."""
    args = _parser().parse_args(None if argv is None else list(argv))
    if args.command in RUST_ONLY:
        print(
            f"error: `shard-index {args.command}` is only in the Rust CLI; install it with "
            "`cargo install --path shard-index` from the shardstream repository",
            file=sys.stderr,
        )
        return 2
    try:
        return _build(args) if args.command == "build" else _inspect(args)
    except ShardStreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
