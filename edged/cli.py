"""The ``edged`` command line. Each subcommand imports its heavy modules only when it
runs, so ``edged --help`` stays instant (no Numba, no onnxruntime).

Exit codes: 0 ok, 1 runtime failure, 2 bad usage, config or model file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from importlib import metadata

BENCHMARKS = {"kernels": "edged.bench.kernels", "lzc": "edged.bench.lzc"}


class UsageError(Exception):
    """Bad input at the CLI boundary: printed as one line, exit code 2."""


def _versions() -> str:
    names = ("edged", "numpy", "numba", "onnxruntime", "pyzmq", "msgpack", "prometheus-client")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def cmd_inspect(args: argparse.Namespace) -> int:
    from edged.model import load, summary

    info = summary(load(args.model))
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    prov = info.pop("provenance")
    print(f"model     {args.model}")
    print(f"sha256    {info['sha256']}")
    print(f"network   {info['n_in']} inputs -> {info['n_hidden']} hidden -> {info['n_out']} "
          f"output {info['neuron']} neurons, dt {info['dt'] * 1e3:g} ms, reset {info['reset']}")
    print(f"lzc       {info['variant']}, window {info['window']} steps, hop {info['hop']}")
    print(f"readout   {len(info['features']) * info['n_out']} features ({', '.join(info['features'])}) "
          f"-> {len(info['classes'])} classes {info['classes']}, ONNX {info['readout_bytes']} bytes")
    if info["encoding"]:
        print(f"encoding  {json.dumps(info['encoding'], sort_keys=True)}")
    for key, value in sorted(prov.items()):
        print(f"{key:<9} {value if isinstance(value, str) else json.dumps(value, sort_keys=True)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edged.bench import report

    module = importlib.import_module(BENCHMARKS[args.benchmark])
    p = argparse.ArgumentParser(prog=f"edged bench {args.benchmark}", description=module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    module.add_arguments(p)
    opts = p.parse_args(args.options)
    print(report(module.run(opts), opts.json))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged", description="Streaming edge inference for spiking neural networks "
        "with learned intrinsic neuron parameters and Lempel-Ziv complexity readout.")
    p.add_argument("--version", action="version", version=f"%(prog)s: {_versions()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("inspect", help="validate a model file and print what it holds")
    s.add_argument("model", help="model file (.npz)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("bench", help="measure edged against a baseline run in the same process")
    s.add_argument("benchmark", choices=sorted(BENCHMARKS), help="which benchmark")
    s.add_argument("options", nargs=argparse.REMAINDER,
                   help="the benchmark's own options (see edged bench NAME --help), --json for JSON")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from edged.model import ModelError

    try:
        return args.func(args)
    except (ModelError, UsageError) as e:
        where = getattr(args, "model", None)
        print(f"edged: error: {where + ': ' if where else ''}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
