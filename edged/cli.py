"""The ``edged`` command line. Each subcommand imports its heavy modules only when it
runs, so ``edged --help`` stays instant (no Numba, no onnxruntime).

Exit codes: 0 ok, 1 runtime failure, 2 bad usage, config or model file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHMARKS = {"kernels": "edged.bench.kernels", "lzc": "edged.bench.lzc", "e2e": "edged.bench.e2e",
              "streams": "edged.bench.streams", "stages": "edged.bench.stages",
              "replay": "edged.bench.replay"}


class UsageError(Exception):
    """Bad input at the CLI boundary: printed as one line, exit code 2."""


def _versions() -> str:
    from edged import versions

    return ", ".join(f"{name} {v}" for name, v in versions().items())


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
    if info["readout_bytes"]:
        print(f"readout   {len(info['features']) * info['n_out']} features ({', '.join(info['features'])}) "
              f"-> {len(info['classes'])} classes {info['classes']}, ONNX {info['readout_bytes']} bytes")
    else:
        print("readout   none: edged serve refuses this model until "
              "'edged-train readout --model M ...' fits one")
    if info["encoding"]:
        print(f"encoding  {json.dumps(info['encoding'], sort_keys=True)}")
    for key, value in sorted(prov.items()):
        print(f"{key:<9} {value if isinstance(value, str) else json.dumps(value, sort_keys=True)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edged.client import read_spike_file
    from edged.model import load
    from edged.offline import check_events, decisions, raster

    model = load(args.model)
    try:
        t, ch = read_spike_file(args.file)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--file {args.file}: {e}") from None
    try:
        check_events(t, ch, model.n_in, args.steps)
    except ValueError as e:
        raise UsageError(f"--file {args.file}: {e}") from None
    if model.has_readout:
        for d in decisions(model, t, ch, args.steps, args.stream):
            if args.json:
                print(json.dumps(d), flush=True)
            else:
                scores = " ".join(f"{x:.3f}" for x in d["scores"])
                print(f"{d['stream']} seq={d['seq']} t={d['t']} {d['label']} scores=[{scores}]")
    else:
        print(f"{args.model} has no readout: no decisions", file=sys.stderr)
    if args.raster:
        import numpy as np

        r = raster(model.net(), t, ch, args.steps, args.stream)
        try:
            np.savez_compressed(args.raster, hidden=r.hidden, output=r.output)
        except OSError as e:
            raise UsageError(f"--raster {args.raster}: {e.strerror or e}") from None
        print(f"raster {args.raster}: hidden {r.hidden.shape} {int(r.hidden.sum())} spikes, "
              f"output {r.output.shape} {int(r.output.sum())} spikes", file=sys.stderr)
    return 0


def cmd_nir_export(args: argparse.Namespace) -> int:
    from edged.model import load
    from edged.nir_io import NIRError, export

    model = load(args.model)
    try:
        export(model, args.out, lossy=args.lossy)
    except NIRError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.out}: NIR graph input -> fc1 -> lif1 ({model.n_hidden}) -> fc2 -> lif2 "
          f"({model.n_out}) -> output, dt {model.dt:g} s, zero-order hold"
          f"{', lossy (meta-neuron adaptation in metadata only)' if model.neuron != 'lif' else ''}",
          file=sys.stderr)
    return 0


def cmd_nir_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edged.model import save
    from edged.nir_io import NIRError, from_graph, read

    if not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"--out directory {Path(args.out).parent} does not exist")
    try:
        model = from_graph(read(args.graph), args.dt, args.discretisation, args.reset,
                           source=str(args.graph))
    except NIRError as e:
        raise UsageError(f"{args.graph}: {e}") from None
    sha = save(args.out, model)
    readout = (f"readout for {len(model.classes)} classes" if model.has_readout else
               "no readout (fit one: edged-train readout --model M ...)")
    print(f"wrote {args.out} sha256 {sha[:16]}: lif {model.n_in} -> {model.n_hidden} -> "
          f"{model.n_out}, dt {model.dt:g} s, reset {model.reset}, {readout}", file=sys.stderr)
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


def cmd_serve(args: argparse.Namespace) -> int:
    from edged import config

    try:
        cfg = config.from_args(args)
        nats = config.uses_nats(cfg)
    except config.ConfigError as e:
        raise UsageError(str(e)) from None
    if args.print_config:
        print(config.render(cfg), end="")
        return 0
    if nats:
        try:
            import nats as _  # noqa: F401
        except ImportError:
            raise UsageError("nats:// endpoints need nats-py: pip install 'edged[nats]'") from None
    import zmq

    from edged import workers
    from edged.model import ModelError
    from edged.security import SecurityError
    from edged.service import main, setup_logging

    log = setup_logging(cfg.log_level)
    try:
        return main(cfg, log=log) if cfg.service_workers == 1 else workers.main(cfg, log=log)
    except workers.StartError as e:  # a worker failed before it was ready
        if e.code == 2:
            raise UsageError(str(e)) from None
        log.error("cannot serve: %s", e)
        return e.code
    except ModelError as e:
        raise UsageError(f"{cfg.model_path}: {e}") from None
    except config.ConfigError as e:  # settings that do not fit what the NATS server holds
        raise UsageError(str(e)) from None
    except SecurityError as e:  # a secret key others can read, a missing allow-list, ...
        raise UsageError(str(e)) from None
    except (OSError, zmq.ZMQError) as e:  # address in use, bad endpoint, metrics port taken
        log.error("cannot serve: %s", e)
        return 1


def _channels(args: argparse.Namespace) -> int:
    if args.channels:
        return args.channels
    if args.model:
        from edged.model import load

        return load(args.model).n_in
    raise UsageError("give --channels N (the model's input count) or --model FILE")


def cmd_send(args: argparse.Namespace) -> int:
    from edged.client import PoissonSource, Sender, read_spike_file, replay, run_poisson

    if args.events:
        return _send_events(args)
    with Sender(args.connect, binary=not args.readable, curve=_client_curve(args), **_nats(args)) as tx:
        if args.file:
            try:
                t, ch = read_spike_file(args.file)
            except (OSError, ValueError, KeyError) as e:
                raise UsageError(f"{args.file}: {e}") from None
            stats = replay(tx, args.stream, t, ch, args.frame_events, args.rate or None)
        else:
            source = PoissonSource(args.streams, args.rate, _channels(args), args.dt, args.seed,
                                   prefix=args.stream)
            stats = run_poisson(tx, source, args.duration, args.interval)
    print(f"sent {stats['frames']} frames, {stats['events']} events in {stats['seconds']:.2f}s",
          file=sys.stderr)
    return 0


def _speed(text: str) -> float | None:
    """``--speed``: a factor over real time, or ``max`` (as fast as possible: None)."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UsageError(f"--speed must be a factor > 0 or 'max', got {text!r}")
    return value


def _send_events(args: argparse.Namespace) -> int:
    from edged.client import Sender, replay_events
    from edged.events import EventFileError
    from edged.model import ModelError, load

    speed = _speed(args.speed)
    if not args.model:
        raise UsageError("--events needs --model FILE (its encoding turns events into channels)")
    try:
        encoding = load(args.model).encoding
    except ModelError as e:
        raise UsageError(f"{args.model}: {e}") from None
    if not encoding:
        raise UsageError(f"{args.model} records no event encoding (train it with --events-dir)")
    if encoding.get("kind") == "channels":
        raise UsageError(f"{args.model} was trained on the task {encoding.get('task')!r}: its inputs "
                         "are task channels, not event recordings (replay a spike file with --file, "
                         "or train on the folder with edged-train run --events-dir)")

    def show(sample: dict) -> None:
        if args.json:
            print(json.dumps(sample, sort_keys=True), flush=True)

    with Sender(args.connect, binary=not args.readable, curve=_client_curve(args), **_nats(args)) as tx:
        try:
            stats = replay_events(tx, args.events, encoding, prefix=args.stream, speed=speed,
                                  back_to_back=args.back_to_back, limit=args.limit,
                                  frame_events=args.frame_events, on_sample=show)
        except (EventFileError, ValueError) as e:
            raise UsageError(str(e)) from None
    print(f"sent {stats['samples']} recordings ({stats['recorded_seconds']:.1f} s recorded), "
          f"{stats['frames']} frames, {stats['events']} events in {stats['seconds']:.2f}s "
          f"({stats['realtime_factor']:.0f}x real time)", file=sys.stderr)
    return 0


def _decision_line(d) -> str:
    scores = " ".join(f"{s:.3f}" for s in d.scores)
    return (f"{d.stream} seq={d.seq} t={d.t} {d.label} scores=[{scores}] "
            f"latency={d.latency_s * 1e6:.0f}us energy={d.energy_j * 1e9:.2f}nJ(est)")


def _nats(args: argparse.Namespace) -> dict:
    """``Sender`` options of a ``nats://`` endpoint (none for ZeroMQ)."""
    if not args.connect.startswith("nats://"):
        return {}
    try:
        import nats  # noqa: F401
    except ImportError:
        raise UsageError("nats:// endpoints need nats-py: pip install 'edged[nats]'") from None
    return {"partition_count": args.partition_count}


def _client_curve(args: argparse.Namespace):
    """``--curve-key`` (own secret key file) + ``--curve-server-key`` (server public key
    file) -> CURVE client keys, or ``None`` when neither is given."""
    from edged.security import SecurityError, client_keys

    if not args.curve_key and not args.curve_server_key:
        return None
    if not args.curve_key or not args.curve_server_key:
        raise UsageError("--curve-key and --curve-server-key go together")
    try:
        return client_keys(args.curve_key, args.curve_server_key)
    except SecurityError as e:
        raise UsageError(str(e)) from None


def _add_client_curve(s: argparse.ArgumentParser) -> None:
    s.add_argument("--curve-key", metavar="FILE",
                   help="this client's CURVE secret key file (edged keygen; mode 0600)")
    s.add_argument("--curve-server-key", metavar="FILE", help="the server's CURVE public key file")


def cmd_keygen(args: argparse.Namespace) -> int:
    from edged.security import SecurityError, keygen

    try:
        public, secret = keygen(args.directory, args.name)
    except (SecurityError, OSError) as e:
        raise UsageError(str(e)) from None
    print(f"public key {public} (share: copy into the peer's allow-list directory)")
    print(f"secret key {secret} (mode 0600: never share)")
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    import time
    from dataclasses import asdict

    from edged.client import Subscriber

    deadline = None if args.duration is None else time.monotonic() + args.duration
    n = 0
    nats = {"deliver": "all" if args.from_start else "new"} if args.connect.startswith("nats://") else {}
    with Subscriber(args.connect, streams=tuple(args.stream), curve=_client_curve(args), **nats) as rx:
        while args.count is None or n < args.count:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            d = rx.recv(min(wait, 1.0))
            if d is None:
                continue
            n += 1
            print(json.dumps(asdict(d)) if args.json else _decision_line(d), flush=True)
        print(f"{n} decisions, {rx.gaps} missing, {rx.restarts} restarts", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edged.demo import DemoError, run

    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    try:
        run(args.model, args.n, args.seed, args.events)
    except DemoError as e:
        raise UsageError(str(e)) from None
    except RuntimeError as e:  # edged serve did not start or answer
        print(f"edged: demo failed: {e}", file=sys.stderr)
        return 1
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

    s = sub.add_parser("run", help="offline inference on one spike file: decisions, spike rasters",
                       description="Run a model on one spike file (the format 'edged send --file' "
                       "replays) through the daemon's engine: one decision per line for a model "
                       "with a readout, and with --raster both layers' spike trains.")
    s.add_argument("--model", required=True, help="model file (.npz)")
    s.add_argument("--file", required=True, help="spike file: .npz with int arrays t, ch (steps), "
                   "or text columns 't ch'")
    s.add_argument("--steps", type=int, required=True,
                   help="simulate steps [0, N) (every event must fall before N)")
    s.add_argument("--stream", default="file", help="stream id in the decisions; it keys an escape-noise model's draws, so the "
                   "daemon's stream id gives the daemon's spikes (default file)")
    s.add_argument("--raster", metavar="R.npz",
                   help="write uint8 arrays hidden [steps, n_hidden] and output [steps, n_out]")
    s.add_argument("--json", action="store_true", help="decisions as JSON lines (daemon's fields)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("nir", help="export a model to, or import one from, a NIR graph (edged[nir])",
                       description="NIR (neuromorphs/NIR) graphs in and out; the mapping of NIR's "
                       "continuous-time LIF to edged's kernel is in edged/nir_io.py.")
    nir = s.add_subparsers(dest="nir_command", required=True, metavar="{export,import}")
    x = nir.add_parser("export", help="model.npz -> graph.nir (Input, Linear, LIF, Linear, LIF, Output)")
    x.add_argument("model", help="model file (.npz)")
    x.add_argument("out", help="NIR file to write (.nir, HDF5)")
    x.add_argument("--lossy", action="store_true",
                   help="meta-neuron models: write the beta = kappa = 0 LIF case, the rest as metadata")
    x.set_defaults(func=cmd_nir_export)
    x = nir.add_parser("import", help="graph.nir -> model.npz (LIF; no readout unless edged exported it)")
    x.add_argument("graph", help="NIR file (.nir)")
    x.add_argument("--dt", type=float, help="seconds per step (NIR stores none; snnTorch exports "
                   "assume 1e-4); default: the graph's edged metadata")
    x.add_argument("--discretisation", choices=("euler", "zoh"),
                   help="how the source simulates LIF: euler (snnTorch, Norse, SpikingJelly) "
                   "or zoh (exact); default: the graph's edged metadata")
    x.add_argument("--reset", choices=("zero", "subtract"),
                   help="zero: to the node's v_reset; subtract: minus the threshold; "
                   "default: the graph's edged metadata")
    x.add_argument("--out", required=True, help="model file to write (.npz)")
    x.set_defaults(func=cmd_nir_import)

    from edged import config

    s = sub.add_parser("serve", help="serve a model: ZeroMQ or NATS frames in, decisions out, /metrics",
                       description="Serve a model over ZeroMQ, or NATS JetStream with nats:// endpoints "
                       "(protocol v1, edged/PROTOCOL.md). "
                       "Settings come from flags > EDGED_* env vars > --config TOML > defaults.")
    config.add_arguments(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("send", help="send Poisson traffic, a spike file or event recordings to edged serve")
    ingest = config.default("ingest_endpoint")
    s.add_argument("--connect", default=ingest,
                   help=f"ingest endpoint (default {ingest}), or nats://HOST:PORT (JetStream)")
    count = config.default("nats_partition_count")
    s.add_argument("--partition-count", type=int, default=count,
                   help=f"nats://: partitions of the subject space, as edged serve's (default {count})")
    s.add_argument("--file", help="spike file to replay: .npz with t, ch, or text columns 't ch'")
    s.add_argument("--stream", default="s", help="stream id (file) or id prefix (Poisson; default s)")
    s.add_argument("--streams", type=int, default=1, help="Poisson streams (default 1)")
    s.add_argument("--rate", type=float, default=1000.0,
                   help="events/s in total (Poisson; for a file: pacing, 0 = as fast as possible)")
    s.add_argument("--duration", type=float, default=10.0, help="seconds of Poisson traffic (default 10)")
    s.add_argument("--channels", type=int, help="input channels (default: the --model's)")
    s.add_argument("--model", help="model file, to take the channel count from")
    s.add_argument("--dt", type=float, default=1e-3, help="seconds per time step (default 1e-3)")
    s.add_argument("--interval", type=float, default=0.01, help="seconds between frames per stream")
    s.add_argument("--frame-events", type=int, default=256, help="events per frame (file replay)")
    s.add_argument("--readable", action="store_true", help="msgpack int arrays instead of binary")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--events", metavar="DIR",
                   help="replay an event folder (labels.csv + .bs2/.npz/.csv files) encoded by --model")
    s.add_argument("--speed", default="1",
                   help="--events pacing: factor over the recorded timing, or 'max' (default 1)")
    s.add_argument("--back-to-back", action="store_true",
                   help="--events: all recordings on the one stream --stream, one after another "
                        "(default: one stream <--stream><sample_id> per recording)")
    s.add_argument("--limit", type=int, help="--events: only the first N recordings")
    s.add_argument("--json", action="store_true",
                   help="--events: print {stream, sample_id, label, t} per recording sent")
    _add_client_curve(s)
    s.set_defaults(func=cmd_send)

    s = sub.add_parser("listen", help="print decisions published by edged serve")
    publish = config.default("publish_endpoint")
    s.add_argument("--connect", default=publish,
                   help=f"PUB endpoint (default {publish}), or nats://HOST:PORT (JetStream)")
    s.add_argument("--from-start", action="store_true",
                   help="nats://: from the oldest decision the stream holds (default: from now on)")
    s.add_argument("--stream", action="append", default=[], help="only this stream (repeatable)")
    s.add_argument("--count", type=int, help="stop after N decisions")
    s.add_argument("--duration", type=float, help="stop after S seconds")
    s.add_argument("--json", action="store_true", help="one JSON object per decision")
    _add_client_curve(s)
    s.set_defaults(func=cmd_listen)

    s = sub.add_parser("demo", help="labelled examples through a real edged serve: truth, prediction, accuracy",
                       description="Start edged serve on free loopback ports, stream labelled examples "
                       "of the model's own classes (fresh samples of its task, or an event folder's "
                       "recordings), print truth beside prediction, the confusion matrix and the accuracy.")
    s.add_argument("--model", default="models/meta.npz", help="model file (default models/meta.npz)")
    s.add_argument("--n", type=int, default=60, help="examples (default 60)")
    s.add_argument("--seed", type=int, default=0, help="seed of the task samples (default 0)")
    s.add_argument("--events", metavar="DIR",
                   help="event models: folder of recordings (default: the model's provenance events_dir)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("bench", help="measure edged against a baseline run in the same process")
    s.add_argument("benchmark", choices=sorted(BENCHMARKS), help="which benchmark")
    s.add_argument("options", nargs=argparse.REMAINDER,
                   help="the benchmark's own options (see edged bench NAME --help), --json for JSON")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("keygen", help="write a CURVE key pair: NAME.key (public), NAME.key_secret (0600)")
    s.add_argument("directory", help="directory for the key files (created with mode 0700)")
    s.add_argument("--name", default="server", help="file name stem (default server)")
    s.set_defaults(func=cmd_keygen)
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
