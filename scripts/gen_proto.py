#!/usr/bin/env python
"""Regenerate proto/caffe2_pb2.py and proto/caffe2_pb2.pyi from proto/caffe2.proto.

Uses the protoc bundled with grpcio-tools (``pip install grpcio-tools``). The proto
directory itself is the include root, so the generated module has no package-relative
imports and works when imported as ``c2lite.proto.caffe2_pb2``.

Usage: python scripts/gen_proto.py [--out DIR]   (default DIR: the repo's proto/)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto"
PROTO_FILE = "caffe2.proto"


def generate(out_dir: Path = PROTO_DIR, proto_dir: Path = PROTO_DIR) -> None:
    """Run protoc (from grpc_tools) writing caffe2_pb2.py and caffe2_pb2.pyi into out_dir."""
    from grpc_tools import protoc  # imported lazily: only this script needs it

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(proto_dir / PROTO_FILE),
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}: {' '.join(args)}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR, help="output directory")
    ns = parser.parse_args(argv)
    generate(ns.out)
    print(f"wrote {ns.out / 'caffe2_pb2.py'} and {ns.out / 'caffe2_pb2.pyi'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
