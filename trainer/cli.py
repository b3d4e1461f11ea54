"""``edged-train``: train, evaluate, fit readouts and run the experiments.

    edged-train run --task poisson-structure --neuron meta --rule bptt --intrinsics learned \\
        --seed 0 --out models/meta.npz [--set depth=0.9 ...] [--report run.png]
    edged-train evaluate --model models/meta.npz --seed 7 [--n 300] [--json]
    edged-train run --events-dir ../shared/data/nmnist_small --hidden 128 --outputs-per-class 2 \\
        --steps 300 --augment --lr 0.01 --weight-decay 1e-4 --epochs 14 --n-val 0 --patience 0 \\
        --seed 0 --out models/nmnist.npz
    edged-train evaluate --model models/nmnist.npz --events-dir DIR [--held-back] [--json]
    edged-train experiment paper|surrogate|ablation|descent [--quick] [--resume] [--table-only]
    edged-train experiment nmnist-cv --events-dir ../shared/data/nmnist_small [--resume]
    edged-train card --model models/meta.npz     (latency, energy estimate, state bytes)
    edged-train readout --model imported.npz --task poisson-structure --out fitted.npz

Heavy modules (Numba, onnxruntime) are imported inside the subcommands, so ``--help``
is instant. Exit codes: 0 ok, 1 runtime failure, 2 bad usage, task parameter or model
file (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


class UsageError(Exception):
    """Bad input at the CLI boundary: printed as one line, exit code 2."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _task_params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--set expects NAME=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def cmd_run(args: argparse.Namespace) -> int:
    if args.events_dir:
        return _run_events(args)
    from trainer import data
    from trainer.pipeline import Spec

    try:
        params = data.task_params(args.task, **_task_params(args.set))
    except ValueError as e:
        raise UsageError(str(e)) from None
    from pathlib import Path

    if not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"--out directory {Path(args.out).parent} does not exist")
    overrides = {k: v for k, v in params.items() if v != data.TASKS[args.task][k]}
    spec = Spec(task=args.task, task_params=overrides, neuron=args.neuron, rule=args.rule,
                intrinsics=args.intrinsics, hidden=args.hidden,
                outputs_per_class=args.outputs_per_class, epochs=args.epochs, lr=args.lr,
                n_train=args.n_train, n_test=args.n_test, seed=args.seed, hop=args.hop,
                readout=args.readout, n_val=args.n_val or 0, patience=args.patience,
                weight_decay=args.weight_decay)
    from edged.model import save
    from trainer.pipeline import run

    _log(f"run {spec}")
    model, metrics, extras = run(spec, log=_log)
    sha = save(args.out, model)
    _log(f"wrote {args.out} sha256 {sha[:16]}")
    if args.report:
        from trainer.report import write_report

        if write_report(args.report, model, extras):
            _log(f"wrote {args.report}")
        else:
            _log("matplotlib not installed: no PNG report (pip install edged[report])")
    print(json.dumps({"model": args.out, "sha256": sha, **metrics}, sort_keys=True))
    return 0


def _run_events(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edged.model import save
    from trainer.events import EventSpec, run

    if not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"--out directory {Path(args.out).parent} does not exist")
    if not (Path(args.events_dir) / "labels.csv").is_file():
        raise UsageError(f"--events-dir {args.events_dir} has no labels.csv")
    if args.rule != "bptt":
        raise UsageError("--events-dir trains with --rule bptt only")
    spec = EventSpec(events_dir=args.events_dir, pool=args.pool, steps=args.steps,
                     neuron=args.neuron, hidden=args.hidden,
                     outputs_per_class=args.outputs_per_class, epochs=args.epochs, lr=args.lr,
                     n_val=200 if args.n_val is None else args.n_val, seed=args.seed,
                     channels=args.channels, patience=args.patience,
                     weight_decay=args.weight_decay, augment=args.augment,
                     calibrate=not args.no_calibrate)
    _log(f"run {spec}")
    try:
        model, metrics = run(spec, log=_log)
    except ValueError as e:
        raise UsageError(str(e)) from None
    sha = save(args.out, model)
    _log(f"wrote {args.out} sha256 {sha[:16]}")
    print(json.dumps({"model": args.out, "sha256": sha, **metrics}, sort_keys=True))
    return 0


def _evaluate_events(args: argparse.Namespace) -> int:
    from edged.model import ModelError, load
    from trainer.events import evaluate

    try:
        result = evaluate(load(args.model), args.events_dir, args.held_back)
    except (ModelError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"accuracy {result['accuracy']:.4f} on n={result['n']} recordings of {args.events_dir}")
        for c, r in result["per_class"].items():
            print(f"  {c:14s} {r['correct']}/{r['n']}")
        for name, acc in result.get("baselines", {}).items():
            print(f"  baseline {name:14s} {acc:.4f} (same recordings; fitted on the others)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edged.model import ModelError, load
    from trainer.pipeline import evaluate

    if args.events_dir:
        return _evaluate_events(args)
    if args.seed is None:
        raise UsageError("evaluate needs --seed (task models) or --events-dir (event models)")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    try:
        model = load(args.model)
        result = evaluate(model, args.seed, args.n, () if args.no_baselines else BASELINES)
    except (ModelError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"accuracy {result['accuracy']:.4f} on n={result['n']} fresh samples of "
              f"{result['task']} (seed {args.seed})")
        for c, r in result["per_class"].items():
            print(f"  {c:14s} {r['correct']}/{r['n']}")
        for name, acc in result.get("baselines", {}).items():
            print(f"  baseline {name:14s} {acc:.4f} (same samples; fitted on fresh train data)")
    return 0


def cmd_readout(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edged.model import ModelError, load, save
    from trainer import readout

    if bool(args.task) == bool(args.events_dir):
        raise UsageError("readout needs exactly one of --task T or --events-dir DIR")
    if not Path(args.out).resolve().parent.is_dir():
        raise UsageError(f"--out directory {Path(args.out).parent} does not exist")
    try:
        model = load(args.model)
        if args.task:
            from trainer import data

            params = data.task_params(args.task, **_task_params(args.set))
            overrides = {k: v for k, v in params.items() if v != data.TASKS[args.task][k]}
            fitted, metrics = readout.for_task(model, args.task, overrides, args.n_train,
                                               args.n_test, args.seed, args.hop)
        else:
            if not (Path(args.events_dir) / "labels.csv").is_file():
                raise UsageError(f"--events-dir {args.events_dir} has no labels.csv")
            fitted, metrics = readout.for_events(model, args.events_dir, args.steps, args.pool,
                                                 args.channels, args.n_val, args.seed)
    except (ModelError, ValueError) as e:
        raise UsageError(f"{args.model}: {e}") from None
    sha = save(args.out, fitted)
    _log(f"wrote {args.out} sha256 {sha[:16]}: readout for {len(fitted.classes)} classes")
    print(json.dumps({"model": args.out, "sha256": sha, **metrics}, sort_keys=True))
    return 0


RULE_CHOICES = ("bptt", "stdp", "tempotron", "stdp-sample", "stdp-own", "stdp-triesch",
                "stdp-kwta", "stdp-reward", "tempotron-multi")  # trainer.pipeline.RULES (kept here: --help imports nothing)
BASELINES = ("count", "binned-count", "fano-spectral", "input-lzc", "mlp")  # trainer.baselines.NAMES


def cmd_experiment(args: argparse.Namespace) -> int:
    from trainer import experiment

    if args.name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {args.name!r}; choose from {', '.join(EXPERIMENTS)}")
    for value, known in ((args.rules, experiment.RULES), (args.neurons, experiment.NEURONS)):
        if value and not set(value.split(",")) <= set(known):
            raise UsageError(f"{value!r}: choose from {','.join(known)}")
    if args.seeds is not None and args.seeds < 2:
        raise UsageError("--seeds must be >= 2 (paired tests need two)")
    out = args.out or f"models/experiments/{EXPERIMENTS[args.name]}"
    if args.table_only:
        return _print_table(args.name, out, args.table)
    try:
        if args.name == "paper":
            doc = experiment.paper(out, quick=args.quick, log=_log, resume=args.resume,
                                   seeds=args.seeds,
                                   rules=tuple(args.rules.split(",")) if args.rules else None,
                                   neurons=tuple(args.neurons.split(",")) if args.neurons else None)
            print(experiment.markdown(doc))
        elif args.name == "nmnist-cv":
            from trainer import crossval

            if not args.events_dir:
                raise UsageError("nmnist-cv needs --events-dir (a folder with labels.csv)")
            doc = crossval.nmnist_cv(out, args.events_dir, quick=args.quick, log=_log,
                                     resume=args.resume)
            print(crossval.markdown(doc))
        elif args.name == "ablation":
            from pathlib import Path

            table = args.table or f"models/experiments/{EXPERIMENTS['paper']}"
            if not Path(table).is_file():
                raise UsageError(f"ablation reads the paper table's tuned configurations: {table} "
                                 f"does not exist (run 'edged-train experiment paper --rules bptt')")
            doc = experiment.ablation(out, table, quick=args.quick, log=_log, resume=args.resume,
                                      neurons=tuple(args.neurons.split(",")) if args.neurons else None)
            print(experiment.ablation_markdown(doc, json.loads(Path(table).read_text())))
        elif args.name == "descent":
            from trainer import descent

            doc = descent.run(out, quick=args.quick, log=_log, resume=args.resume)
            print(descent.markdown(doc))
        elif args.name == "surrogate":
            doc = experiment.surrogate(out, quick=args.quick, log=_log, resume=args.resume,
                                       seeds=args.seeds)
            print(experiment.surrogate_markdown(doc))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


def _print_table(name: str, out: str, table: str | None) -> int:
    """The markdown table of an existing result JSON, nothing run."""
    from pathlib import Path

    from trainer import crossval, descent, experiment

    if not Path(out).is_file():
        raise UsageError(f"{out} does not exist: run the experiment first")
    doc = json.loads(Path(out).read_text())
    if not isinstance(doc, dict) or "rows" not in doc:
        raise UsageError(f"{out} is not an experiment result document")
    if name == "ablation":
        paper = Path(table or f"models/experiments/{EXPERIMENTS['paper']}")
        print(experiment.ablation_markdown(doc, json.loads(paper.read_text())))
    else:
        print({"paper": experiment.markdown, "surrogate": experiment.surrogate_markdown,
               "nmnist-cv": crossval.markdown, "descent": descent.markdown}[name](doc))
    return 0


EXPERIMENTS = {"paper": "paper-table.json", "surrogate": "surrogate.json",
               "nmnist-cv": "nmnist-cv.json", "ablation": "ablation.json", "descent": "descent.json"}


def cmd_card(args: argparse.Namespace) -> int:
    from edged.model import ModelError, load
    from trainer.card import measure

    try:
        model = load(args.model)
    except ModelError as e:
        raise UsageError(str(e)) from None
    if model.provenance.get("task") == "events":
        raise UsageError("card measures task models; for an event model run "
                         "'edged bench replay --model M --events DIR'")
    print(json.dumps(measure(model, args.seed, args.n), sort_keys=True))
    return 0


def parser() -> argparse.ArgumentParser:
    from trainer.data import TASKS

    p = argparse.ArgumentParser(prog="edged-train", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one model and write it")
    r.add_argument("--task", choices=sorted(TASKS), default="poisson-structure")
    r.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="task parameter override (see trainer/data.py), repeatable")
    r.add_argument("--neuron", choices=("lif", "meta", "meta-esc"), default="meta",
                   help="meta-esc: the meta-neuron with escape noise (edged.neurons)")
    r.add_argument("--rule", choices=RULE_CHOICES, default="bptt",
                   help="learning rule; stdp-* are STDP with the named homeostasis "
                        "(stdp-reward: three-factor, reward-modulated), "
                        "tempotron-multi the multi-spike tempotron (trainer/stdp.py, "
                        "trainer/tempotron.py, trainer/pipeline.py VARIANTS)")
    r.add_argument("--intrinsics", choices=("fixed", "learned"), default="learned")
    r.add_argument("--hidden", type=int, default=64)
    r.add_argument("--outputs-per-class", type=int, default=1,
                   help="output neurons per class (bptt, tempotron); more give the readout more features")
    r.add_argument("--epochs", type=int, default=6)
    r.add_argument("--lr", type=float, default=0.02)
    r.add_argument("--n-train", type=int, default=600)
    r.add_argument("--n-test", type=int, default=400)
    r.add_argument("--patience", type=int, default=4,
                   help="early stopping: epochs without a better validation accuracy (with "
                        "--n-val > 0 for a task; 0 = train every --epochs)")
    r.add_argument("--weight-decay", type=float, default=0.0, help="bptt: L2 on the weights")
    r.add_argument("--hop", type=int, default=16, help="decision hop of the daemon (steps)")
    r.add_argument("--readout", choices=("linear", "nearest-mean"), default="linear")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.add_argument("--report", help="write a PNG report here (needs matplotlib)")
    r.add_argument("--events-dir", metavar="DIR",
                   help="train on an event folder (labels.csv; stratified 800/200-style split, "
                        "200 held back) instead of --task")
    r.add_argument("--pool", type=int, default=2, help="--events-dir: N-MNIST pixel pooling (default 2)")
    r.add_argument("--steps", type=int, default=340,
                   help="--events-dir: sample length in 1 ms steps = window = hop (default 340)")
    r.add_argument("--n-val", type=int,
                   help="validation samples for early stopping: a task's fresh 'validation' "
                        "split (default 0: none, train every --epochs), or the recordings "
                        "held back from --events-dir, stratified (default 200)")
    r.add_argument("--no-calibrate", action="store_true",
                   help="--events-dir: keep the initial weights as drawn (default: scale them "
                        "until both layers fire at 2-50 Hz on the training data)")
    r.add_argument("--augment", action="store_true",
                   help="--events-dir, N-MNIST: online augmentation (shift, rotation, event "
                        "drop, time jitter; trainer/events.py AUGMENT)")
    r.add_argument("--channels", type=int, default=0,
                   help="--events-dir with generic files: channels 0..N-1 taken as they are "
                        "(default 0: N-MNIST sensor channels, pooled by --pool)")
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("evaluate", help="accuracy of a model on fresh samples of its task")
    e.add_argument("--model", required=True)
    e.add_argument("--seed", type=int, help="task models: seed of the fresh samples")
    e.add_argument("--events-dir", metavar="DIR",
                   help="event models: every recording listed in DIR/labels.csv")
    e.add_argument("--held-back", action="store_true",
                   help="--events-dir: only the validation ids recorded in the model's provenance")
    e.add_argument("--n", type=int, default=300)
    e.add_argument("--json", action="store_true")
    e.add_argument("--no-baselines", action="store_true",
                   help="task models: skip the non-spiking baselines (trainer/baselines.py) "
                        "fitted on fresh samples and scored on the same ones")
    e.set_defaults(func=cmd_evaluate)
    o = sub.add_parser("readout", help="fit a readout to a model's network (e.g. one imported from NIR)",
                       description="Fit the LZC + rate logistic readout to the network of --model "
                       "(weights and intrinsics unchanged) on a task or an event folder; write --out.")
    o.add_argument("--model", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--task", choices=sorted(TASKS), help="fit on this task's train split")
    o.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="--task parameter override (see trainer/data.py), repeatable")
    o.add_argument("--n-train", type=int, default=600, help="--task: training samples (default 600)")
    o.add_argument("--n-test", type=int, default=400, help="--task: test samples scored (default 400)")
    o.add_argument("--hop", type=int, default=16, help="--task: decision hop of the daemon (steps)")
    o.add_argument("--events-dir", metavar="DIR", help="fit on an event folder (labels.csv)")
    o.add_argument("--steps", type=int, default=340,
                   help="--events-dir: sample length in the model's steps = window = hop (default 340)")
    o.add_argument("--pool", type=int, default=2, help="--events-dir: N-MNIST pixel pooling (default 2)")
    o.add_argument("--channels", type=int, default=0,
                   help="--events-dir with generic files: channels 0..N-1 (default 0: N-MNIST sensor)")
    o.add_argument("--n-val", type=int, default=200, help="--events-dir: held-out samples (default 200)")
    o.add_argument("--seed", type=int, default=0)
    o.set_defaults(func=cmd_readout)
    c = sub.add_parser("card", help="CPU time and estimated energy per decision (model card)")
    c.add_argument("--model", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--n", type=int, default=50)
    c.set_defaults(func=cmd_card)
    x = sub.add_parser("experiment", help="run a named experiment (resumable JSON of rows)")
    x.add_argument("name", help="'paper': {lif,meta,meta-esc} x {bptt,stdp,tempotron and the "
                                "--rule variants} x {fixed,fixed-tuned,learned,tuned-learned}, "
                                "tuned, early-stopped, 5 seeds; "
                                "'surrogate': SNN-LZC vs baselines where only temporal "
                                "structure separates the classes; 'nmnist-cv': nested "
                                "5-fold CV on --events-dir; 'ablation': one intrinsic group "
                                "learned at a time, and the epoch-budget study (BPTT cells of "
                                "--table); 'descent': the sufficient-decrease check of "
                                "intrinsic gradient steps on the escape-noise loss")
    x.add_argument("--quick", action="store_true", help="small CI-sized version (<= 3 min)")
    x.add_argument("--table-only", action="store_true",
                   help="print the markdown table of --out as it stands and exit (runs nothing)")
    x.add_argument("--resume", action="store_true",
                   help="continue the run in --out, skipping every run already recorded there")
    x.add_argument("--seeds", type=int, help="final seeds per condition (default: the protocol's)")
    x.add_argument("--rules", help="comma list: run only these rules' cells, merging into --out")
    x.add_argument("--neurons", help="comma list: run only these neurons' cells, merging into --out")
    x.add_argument("--events-dir", metavar="DIR", help="nmnist-cv: the recordings (labels.csv)")
    x.add_argument("--table", help="ablation: the paper table JSON to take configurations and "
                                   "seeds from (default models/experiments/paper-table.json)")
    x.add_argument("--out", help="result JSON (default models/experiments/<experiment>.json)")
    x.set_defaults(func=cmd_experiment)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        # the rules run their own threads; a threaded BLAS beside them only contends
        # (measured here: a 400 x 1296 matmul takes 3x longer with 2 BLAS threads)
        os.environ.setdefault(var, "1")
    args = parser().parse_args(argv)
    try:
        if args.command == "run" and (args.hidden < 1 or args.epochs < 0 or args.n_train < 2
                                      or args.outputs_per_class < 1):
            raise UsageError("--hidden >= 1, --outputs-per-class >= 1, --epochs >= 0 and "
                             "--n-train >= 2 are required")
        if args.command == "run" and (args.patience < 0 or (args.n_val or 0) < 0
                                      or args.weight_decay < 0):
            raise UsageError("--patience, --n-val and --weight-decay must be >= 0")
        if args.command == "run" and args.rule.startswith("stdp") and args.outputs_per_class != 1:
            raise UsageError("--rule stdp trains one output neuron per class")
        return args.func(args)
    except UsageError as e:
        print(f"edged-train: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. --out in a missing directory
        print(f"edged-train: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra not installed
        print(f"edged-train: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
