"""``fastunlearn`` command line — the only argparse in the package.

Bad input prints one line on stderr (what was wrong, how to fix it) and exits with code 2,
before anything is written. A run that fails (a model that diverged to NaN/inf weights, an
unlearned model identical to its input) prints one line and exits with code 1; a diverged
model is never saved.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from fastunlearn._atomic import jsonable

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class RunFailed(Exception):
    """The work ran but its result must not pass as good (diverged): one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


# ----------------------------------------------------------------------------------- parsers
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastunlearn", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    from fastunlearn import __version__

    p.add_argument("--version", action="version", version=f"fastunlearn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser(
        "train", help="train an original model (or a gold model with --exclude-class)"
    )
    _add_data_args(t)
    _add_model_args(t)
    t.add_argument("--exclude-class", nargs="+", metavar="CLASS",
                   help="train without these classes (the retrained 'gold' model)")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--sisa-shards", type=int, metavar="S",
                   help="train a SISA ensemble of S shards (unlearn it with --method sisa)")
    t.add_argument("--sisa-slices", type=int, default=1, metavar="R",
                   help="slices per SISA shard (a checkpoint after each slice)")
    t.add_argument("--sisa-aggregate", choices=["logits", "probs", "vote"], default="logits",
                   help="how the SISA ensemble combines its members")
    _add_run_args(t)

    u = sub.add_parser(
        "unlearn", help="make a trained model forget a class or samples", allow_abbrev=False,
        epilog="Method options come from the method's config dataclass: --set KEY=VALUE … or "
               "--KEY VALUE (e.g. --momentum 0.5, --mask salun); `--method M --help-method` "
               "lists them with their types and defaults. Flags without a default here take "
               "the method's.")
    u.add_argument("--method", default="auto",
                   help="see `fastunlearn list methods`; default auto: the recipe that picks "
                        "its own steps within --set budget=0.05 of a retrain and prints what it "
                        "chose")
    u.add_argument("--help-method", action="store_true",
                   help="list the method's options (types, defaults) and exit")
    u.add_argument(
        "--model-path", help="checkpoint to unlearn (default: checkpoints/MODEL_DATASET)"
    )
    u.add_argument("--model", help="with --dataset, picks checkpoints/MODEL_DATASET.safetensors")
    u.add_argument("--dataset", help="dataset name (default: the checkpoint's)")
    u.add_argument("--data-root", help="directory holding the dataset files")
    _add_forget_args(u)
    u.add_argument("--epochs", type=int, help="default: the method's")
    u.add_argument("--lr", type=float, help="default: the method's")
    u.add_argument("--batch-size", type=int, help="default: the method's")
    u.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="other method options, e.g. --set momentum=0.5 mask=salun "
                        "(see --help-method)")
    u.add_argument("--allow-unchanged", action="store_true",
                   help="exit 0 even when the model comes back unchanged (guard restored the "
                        "original, --epochs 0); it is saved with unchanged: true either way")
    u.add_argument("--allow-collapse", action="store_true",
                   help="save the model even when its validation accuracy collapsed toward "
                        "chance (otherwise: exit 1, nothing saved)")
    _add_run_args(u, from_config=True)

    e = sub.add_parser("evaluate", help="metrics of a checkpoint on its forget set")
    e.add_argument("--model-path", required=True)
    e.add_argument("--reference", help="the retrained gold model's checkpoint")
    e.add_argument("--allow-reference-mismatch", action="store_true",
                   help="compare with a --reference that forgot something else (or nothing)")
    e.add_argument("--original", help="the original model's checkpoint")
    e.add_argument("--data-root", help="directory holding the dataset files")
    _add_forget_args(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="auto")
    _add_eval_args(e)

    r = sub.add_parser("report", help="report.md + metrics.json + plots for a run directory")
    r.add_argument("run_dir", help="directory of checkpoints (e.g. runs/demo)")
    r.add_argument("--out", help="where to write the report (default: RUN_DIR)")
    r.add_argument("--data-root", help="directory holding the dataset files")
    r.add_argument("--device", default="auto")
    r.add_argument("--no-plots", action="store_true", help="tables and metrics.json only")
    r.add_argument("--no-progress", action="store_true",
                   help="no line on stderr when the report is written")
    _add_eval_args(r)

    ls = sub.add_parser("list", help="list models, datasets, methods or studies")
    ls.add_argument("what", choices=["models", "datasets", "methods", "studies"])
    ls.add_argument("name", nargs="?",
                    help="with `methods`: list this method's options (types, defaults)")

    s = sub.add_parser("study", help="run a research study (resumable) and write its report")
    s.add_argument("name", help="see `fastunlearn list studies` (e.g. cost-quality)")
    s.add_argument("--dataset", default="fashion-mnist")
    s.add_argument("--model", default="small_cnn")
    s.add_argument("--models", nargs="+", metavar="MODEL", help="cross-arch: the models")
    s.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="registered methods (default: the fast ones)")
    s.add_argument("--forget", help="class:NAME[,NAME], random:10%%, random:500, memorized:5%%, "
                                    "mixed:600 or worst:5%% (hard sets: chosen by selection "
                                    "models trained into the pool; default: the first class)")
    s.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1; N>1 adds 95%% CIs")
    s.add_argument("--epochs", type=int, default=5, help="epochs of original/retrained models")
    s.add_argument("--method-epochs", type=int, help="override every method's epochs")
    s.add_argument("--set", nargs="+", default=[], metavar="METHOD.KEY=VALUE",
                   help="method options, e.g. --set ga.lr=0.02 ft.epochs=3")
    s.add_argument("--option", nargs="+", default=[], metavar="KEY=VALUE",
                   help="study options, e.g. --option fractions=[0.01,0.1]")
    s.add_argument("--out", help="study directory (default runs/studies/NAME)")
    s.add_argument("--pool", help="original/retrain model pool (default: pool beside --out)")
    s.add_argument("--executor", choices=["local", "process", "ray"], default="local")
    s.add_argument("--workers", type=int, default=1, help="parallel runs (process executor)")
    s.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs per run")
    s.add_argument("--gpus-per-run", type=float, default=0, help="ray: GPUs per run")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, help="torch threads per run")
    s.add_argument("--batch-size", type=int, help="batch size of training and methods")
    s.add_argument("--mia-samples", type=int, default=2000)
    s.add_argument("--no-cka", action="store_true", help="skip the per-layer CKA drift")
    s.add_argument("--no-progress", action="store_true")

    a = sub.add_parser("audit", help="per-example forgetting audit of methods (shadow pool)")
    a.add_argument("--method", nargs="+", required=True, metavar="METHOD",
                   help="methods to audit (the do-nothing original and the retrain ceiling "
                        "are always added; 'retrain' alone is the ceiling check)")
    a.add_argument("--dataset", default="fashion-mnist-10k",
                   help="default: the memorizing 10k Fashion-MNIST subset")
    a.add_argument("--model", help="shadow model (default: the audit's, small_cnn_narrow)")
    a.add_argument("--forget", default="random:10%",
                   help="random:10%% (default), random:500, class:NAME, memorized:5%%, "
                        "memorized:500, mixed:600 or worst:5%% (hard sets are chosen by "
                        "selection models the audit trains and never scores)")
    a.add_argument("--epochs", type=int, help="epochs of each shadow model (default: the "
                                               "audit's fast memorizing recipe)")
    a.add_argument("--lr", type=float, help="learning rate of the shadow models")
    a.add_argument("--batch-size", type=int, help="batch size of the shadow models")
    a.add_argument("--protocol", choices=["lira", "challenge"], default="lira",
                   help="lira: shadows on random halves (is the example's trace gone across "
                        "data draws?); challenge: one original on all the data, method seeds "
                        "vs retrain seeds (did this method forget on this model?)")
    a.add_argument("--select-models", type=int,
                   help="selection models for memorized:/mixed: sets (even, default 8)")
    a.add_argument("--shadows", type=int, default=16, help="N shadow models (even, ≥ 8)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--set", nargs="+", default=[], metavar="METHOD.KEY=VALUE",
                   help="method options, e.g. --set ft.epochs=3")
    a.add_argument("--probe-shadows", type=int, default=2,
                   help="shadows that also get the linear probe and relearn time")
    a.add_argument("--out", help="audit directory (default runs/audit/DATASET-FORGET)")
    a.add_argument("--pool", help="shadow model pool (default: pool beside --out)")
    a.add_argument("--executor", choices=["local", "process", "ray"], default="local")
    a.add_argument("--workers", type=int, default=1)
    a.add_argument("--device", default="auto")
    a.add_argument("--threads", type=int, help="torch threads per run")
    a.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("demo", help="original + gold + ft + ga on Fashion-MNIST, one table")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--dataset", default="fashion-mnist")
    d.add_argument("--model", default="small_cnn")
    d.add_argument("--forget-class", default="Coat")
    d.add_argument("--epochs", type=int, default=5)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--pool", help="original/retrain model pool (default: pool beside --out)")
    d.add_argument("--force", action="store_true", help="overwrite the checkpoints in --out")
    d.add_argument("--no-progress", action="store_true")
    return p


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="fashion-mnist", help="see `fastunlearn list datasets`")
    p.add_argument("--data-root", help="directory holding the dataset files")
    p.add_argument("--download", action="store_true", help="download the dataset (needs internet)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop + flip (default: on for CIFAR)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="small_cnn", help="see `fastunlearn list models`")
    p.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights")
    p.add_argument("--weights", help="start from a local .safetensors weights file")


def _add_forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forget", metavar="SPEC",
                   help="what to forget: class:NAME[,NAME], random:10%%, random:500, "
                        "ids:FILE, memorized:5%%, mixed:600 (by the memorization proxy the "
                        "checkpoint recorded in `fastunlearn train`) or worst:5%% (worst-case "
                        "search on the checkpoint)")
    p.add_argument("--forget-type", choices=["class", "sample"],
                   help="class: whole classes; sample: random samples (or --forget-ids)")
    p.add_argument("--forget-class", nargs="+", metavar="CLASS", help="class names or indices")
    p.add_argument("--forget-count", type=int, help="number of random samples to forget")
    p.add_argument("--forget-fraction", type=float, help="fraction of random samples to forget")
    p.add_argument("--forget-ids", help="file with one training index per line")
    p.add_argument("--forget-seed", type=int, default=0, help="seed of the random forget set")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-samples", type=int, default=4000,
                   help="members, non-members and forget samples per MIA attack (seeded subsample)")
    p.add_argument("--mia-seeds", type=int, default=5,
                   help="attack seeds the headline MIA-Efficacy is averaged over (± std)")
    p.add_argument("--mia-nonmembers", choices=["reference", "test"], default="reference",
                   help="MIA non-members: reference = as the SalUn code (class forgetting: the "
                        "retained classes' test images), test = the whole test part")
    p.add_argument("--cka-probe", type=int, default=256, help="probe images for layer CKA")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the MIA and CKA subsamples")
    p.add_argument("--batch-size", type=int, default=512, help="inference batch size")
    p.add_argument("--no-mia", action="store_true", help="skip the membership-inference attacks")


def _eval_config(args: argparse.Namespace):  # noqa: ANN202
    from fastunlearn.evaluate.core import EvalConfig

    return EvalConfig(batch_size=args.batch_size, max_samples=args.max_samples,
                      seed=args.eval_seed, mia=not args.no_mia, cka_probe=args.cka_probe,
                      mia_seeds=args.mia_seeds, mia_nonmembers=args.mia_nonmembers)


_COMPILE_MODES = {"false": False, "true": True, "auto": "auto"}


def _add_run_args(p: argparse.ArgumentParser, *, from_config: bool = False) -> None:
    """``--seed --compile --device --out --force --no-progress``. With ``from_config`` (the
    ``unlearn`` command) the first three default to None, so the method config's own default
    applies — it is declared once, in the config."""
    p.add_argument("--seed", type=int, default=None if from_config else 0,
                   help="default: the method's" if from_config else None)
    p.add_argument("--compile", type=str.lower, choices=list(_COMPILE_MODES),
                   default=None if from_config else "false",
                   help="run the training steps through torch.compile: false, true, or auto "
                        "(compile only where a short measurement says it pays; cached); "
                        "default: " + ("the method's" if from_config else "false"))
    p.add_argument("--device", default=None if from_config else "auto",
                   help="auto, cpu, cuda, cuda:1 …"
                        + ("; default: the method's" if from_config else ""))
    p.add_argument("--out", help="output checkpoint path (.safetensors; a .json sidecar is added)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--no-progress", action="store_true")


# ---------------------------------------------------------------------------------- helpers
def _load_data(  # noqa: ANN202
    name: str, root: str | None = None, download: bool = False, augment: bool | None = None
):
    from fastunlearn.data import load_dataset

    kwargs: dict[str, Any] = {"download": download}
    if root:
        kwargs["root"] = root
    if augment is not None:
        kwargs["augment"] = augment
    return load_dataset(name, **kwargs)


def _forget_split(args: argparse.Namespace, data, stored: dict | None = None):  # noqa: ANN001, ANN202
    from fastunlearn.data import forget_classes, forget_indices, forget_random, split_from_spec

    if getattr(args, "forget", None):
        if args.forget_type or args.forget_class or args.forget_ids or (
                args.forget_count is not None or args.forget_fraction is not None):
            raise UsageError("give --forget SPEC or the --forget-* flags, not both")
        return _forget_from_spec(args.forget, data, getattr(args, "_checkpoint_meta", None),
                                 getattr(args, "_checkpoint_model", None), args.forget_seed)
    kind = args.forget_type
    if kind is None:
        if args.forget_class:
            kind = "class"
        elif (args.forget_count is not None or args.forget_fraction is not None
              or args.forget_ids):
            kind = "sample"
        elif stored:
            return split_from_spec(data, stored)
        else:
            raise UsageError("say what to forget: --forget-type class --forget-class NAME, or "
                             "--forget-type sample --forget-count N")
    if kind == "class":
        if not args.forget_class:
            raise UsageError("--forget-type class needs --forget-class NAME [NAME …]")
        return forget_classes(data, args.forget_class)
    if args.forget_ids:
        path = Path(args.forget_ids)
        if not path.exists():
            raise UsageError(f"--forget-ids file not found: {path}")
        try:
            ids = [int(tok) for tok in path.read_text().split()]
        except ValueError as err:
            raise UsageError(f"--forget-ids {path}: {err}; put one integer index per line") from err
        return forget_indices(data, ids)
    if args.forget_count is None and args.forget_fraction is None:
        raise UsageError("--forget-type sample needs --forget-count N or --forget-fraction F")
    if args.forget_count is not None and args.forget_fraction is not None:
        raise UsageError("give --forget-count or --forget-fraction, not both")
    return forget_random(data, count=args.forget_count, fraction=args.forget_fraction,
                         seed=args.forget_seed)


def _check_out(path: Path, force: bool) -> None:
    """UsageError unless the checkpoint at ``path`` may be written: new (or ``force``) and
    writable — checked before any work, so a bad --out fails at once, not after training."""
    from fastunlearn.checkpoint import checkpoint_paths

    weights, sidecar = checkpoint_paths(path)
    for p in (weights, sidecar):
        if p.is_dir():
            raise UsageError(f"--out {path}: {p} is a directory; give a file path")
        if p.exists() and not force:
            raise UsageError(f"{p} exists; pass --force to overwrite it or choose --out")
    _check_writable_dir(weights.parent, f"--out {path}")


def _check_writable_dir(directory: Path, what: str) -> None:
    """UsageError unless files can be created in ``directory`` (made as needed later): its
    nearest existing ancestor must be a directory that accepts a file (probed with a temp
    file that is gone at once — nothing is left behind)."""
    anc = directory
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{what}: {anc} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as err:
        raise UsageError(f"{what}: cannot write in {anc} ({err.strerror or err})") from None


def _check_device(device: str) -> None:
    from fastunlearn._device import resolve_device

    try:
        resolve_device(device)
    except (RuntimeError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"--device {device!r}: {msg} (use auto, cpu, cuda or cuda:N)") from None


@contextlib.contextmanager
def _hub_offline_when_unreachable() -> Iterator[None]:
    """Pretrained weights: when the Hugging Face Hub cannot be reached (one socket connect,
    ≤ 3 s), switch huggingface_hub to offline mode for the block, so a cached copy loads and a
    missing one fails at once instead of after a minute of retries."""
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.create_connection((host or "huggingface.co", 443), timeout=3).close()
    except OSError:
        pass
    else:
        yield
        return
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:
        hub_constants = None
    old_flag = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = old_flag


def _scalar_accuracy(model, split) -> dict[str, float]:  # noqa: ANN001
    """The accuracy family (cheap) for a checkpoint sidecar; `evaluate` gives the rest."""
    from fastunlearn.evaluate.accuracy import accuracy_metrics

    return {k: v for k, v in accuracy_metrics(model, split).items() if isinstance(v, float)}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _print_metrics(metrics: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(jsonable(metrics), sort_keys=False))
        return
    for k, v in metrics.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk:<24} {_fmt(vv)}")
        else:
            print(f"{k:<26} {_fmt(v)}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 1 or v == 0 else f"{v:.4g}"
    return str(v)


def _forget_from_spec(text: str, data, meta: dict | None, model, seed: int):  # noqa: ANN001, ANN202
    """One ``--forget SPEC`` → a split. ``memorized:``/``mixed:`` read the checkpoint's recorded
    learning-event proxy; ``worst:`` runs the worst-case search on the checkpoint's model."""
    from fastunlearn.data import forget_by_scores, forget_indices, split_from_spec
    from fastunlearn.studies.config import parse_forget

    kind = text.partition(":")[0].strip().lower()
    if kind == "ids":
        path = Path(text.partition(":")[2].strip())
        if not path.is_file():
            raise UsageError(f"--forget ids: file not found: {path}")
        try:
            if path.suffix == ".npy":
                import numpy as np

                ids = [int(v) for v in np.load(path).ravel()]
            else:
                ids = [int(tok) for tok in path.read_text().split()]
        except ValueError as err:
            raise UsageError(f"--forget {text}: {err}; put one integer index per line") from err
        return forget_indices(data, ids)
    try:
        spec = parse_forget(text, data.classes)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if spec["type"] == "random":
        spec.setdefault("seed", seed)
    if spec["type"] in ("memorized", "mixed"):
        proxy = (meta or {}).get("learning_proxy")
        if not proxy or len(proxy) != len(data.train_labels):
            raise UsageError(f"--forget {text}: the checkpoint has no recorded memorization "
                             "proxy for this dataset; train it with `fastunlearn train` (which "
                             "records it), or pass --forget ids:FILE with the indices an audit "
                             "chose (audit.json → task.forget.ids)")
        from fastunlearn.evaluate.memorization import proxy_scores

        return forget_by_scores(data, proxy_scores(proxy), spec)
    if spec["type"] == "worst":
        if model is None:
            raise UsageError(f"--forget {text} needs the checkpoint's model (unlearn)")
        from fastunlearn.data.hard_sets import hard_count
        from fastunlearn.studies.worst_case import WorstCaseConfig, select_worst

        pos, _ = select_worst(model, data.train, hard_count(spec, len(data.train_labels)),
                              WorstCaseConfig(seed=seed))
        split = forget_indices(data, pos)
        split.spec["selected"] = {**spec, "by": "worst-case search"}
        return split
    return split_from_spec(data, spec)


# --------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from fastunlearn.checkpoint import save_checkpoint
    from fastunlearn.data import forget_classes
    from fastunlearn.models import create_model, list_models
    from fastunlearn.train import TrainConfig, train

    if args.model not in list_models():
        raise UsageError(f"unknown model {args.model!r}; choose one of: {', '.join(list_models())}")
    if args.weights and not Path(args.weights).exists():
        raise UsageError(f"--weights file not found: {args.weights}")
    data = _load_data(args.dataset, args.data_root, args.download, args.augment)
    split = forget_classes(data, args.exclude_class) if args.exclude_class else None
    suffix = "_no-" + "-".join(split.forget_class_names) if split else ""
    if args.sisa_shards is not None:
        suffix = f"_sisa{args.sisa_shards}x{args.sisa_slices}"
    out = Path(args.out or f"checkpoints/{args.model}_{data.name}{suffix}.safetensors")
    _check_out(out, args.force)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      optimizer=args.optimizer, weight_decay=args.weight_decay,
                      label_smoothing=args.label_smoothing, seed=args.seed, device=args.device,
                      progress=not args.no_progress, compile=_COMPILE_MODES[args.compile])
    if args.sisa_shards is not None:
        return _train_sisa(args, data, out, cfg)
    torch.manual_seed(args.seed)
    model = _create_model(create_model, args, data)
    part = split.retain if split else data.train
    train(model, part, cfg)
    _refuse_nonfinite(model, f"training {args.model}", "--lr")
    if split:
        metrics = _scalar_accuracy(model, split)
    else:
        metrics = {"test_acc": model.fastunlearn_history.epochs[-1].get("test_acc")}
    extra: dict = {"role": "retrain" if split else "original"}
    conf = model.fastunlearn_history.confidence
    if not split and conf is not None:  # the memorization proxy, per training example
        extra["learning_proxy"] = [round(float(c), 5) for c in conf]
    path = save_checkpoint(out, model, dataset=data, forget=split.spec if split else None,
                           seed=args.seed, train_config=cfg.to_dict(), metrics=metrics,
                           extra=extra)
    print(f"saved {path} (test_acc {metrics.get('test_acc', float('nan')):.2f} %)")
    return 0


def _create_model(create_model, args: argparse.Namespace, data):  # noqa: ANN001, ANN202
    """The model to train; offline ``--pretrained`` fails at once with one line."""
    if not args.pretrained or args.weights:
        return create_model(args.model, data, pretrained=args.pretrained, weights=args.weights)
    with _hub_offline_when_unreachable():
        try:
            return create_model(args.model, data, pretrained=True)
        except RuntimeError as err:  # the model registry's one-line "could not be downloaded"
            raise UsageError(str(err).splitlines()[0]) from None


def _refuse_nonfinite(model, what: str, knob: str) -> None:  # noqa: ANN001
    from fastunlearn.train import nonfinite_tensors

    bad = nonfinite_tensors(model)
    if bad:
        raise RunFailed(f"{what} diverged: {len(bad)} weight tensor(s) hold NaN/inf (first: "
                        f"{bad[0]}); nothing saved — lower {knob}")


def _train_sisa(args: argparse.Namespace, data, out: Path, cfg) -> int:  # noqa: ANN001
    from fastunlearn.unlearn.sisa import train_sisa

    if args.exclude_class or args.pretrained or args.weights:
        raise UsageError("--sisa-shards cannot be combined with --exclude-class, --pretrained "
                         "or --weights")
    if args.sisa_shards < 1 or args.sisa_slices < 1:
        raise UsageError("--sisa-shards and --sisa-slices must be ≥ 1")
    ens = train_sisa(args.model, data, args.sisa_shards, args.sisa_slices, cfg, out,
                     aggregate=args.sisa_aggregate)
    print(f"saved {out} (SISA: {args.sisa_shards} shards × {args.sisa_slices} slices of "
          f"{args.model}; {ens.num_shards} members)")
    return 0


def _parse_pairs(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items (JSON values, else the raw string) — for options whose types the
    command does not know (study options; a study checks its own)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = raw
    return out


# ------------------------------------------------- method options, from the config dataclass
# A method's options are the init fields of its config dataclass; their types and defaults are
# read from it (typing.get_type_hints, dataclasses.fields) and never repeated here.

#: base-config fields the ``unlearn`` command sets with its own flags (``--set`` refuses them)
_FLAG_OPTIONS = {"epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size",
                 "seed": "--seed", "device": "--device", "progress": "--no-progress",
                 "compile": "--compile"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"none", "null"})


class _BadValue(ValueError):
    """A command-line string that does not fit a field's type."""


class _Unsupported(_BadValue):
    """A field type the command line cannot express (a callable, a class …)."""


def _method_fields(config_cls: type) -> dict[str, tuple[Any, Any]]:
    """``{name: (type hint, default)}`` of the init fields of a method's config dataclass
    (a ``default_factory`` is called; a required field's default is ``dataclasses.MISSING``)."""
    import dataclasses
    import typing

    try:
        hints = typing.get_type_hints(config_cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: parse as JSON
        hints = {}
    out: dict[str, tuple[Any, Any]] = {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        hint = hints.get(f.name, f.type if not isinstance(f.type, str) else Any)
        out[f.name] = (hint, default)
    return out


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def type_name(hint: Any) -> str:
    """A field's type as the help shows it: ``float``, ``int | None``, ``tuple[str, ...]``."""
    import re
    import typing

    members = _union_args(hint)
    if members is not None:
        return " | ".join(type_name(m) for m in members)
    if hint is type(None):
        return "None"
    if hint is Any:
        return "any (JSON)"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(format_value(v) for v in typing.get_args(hint))
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return re.sub(r"\b(?:typing\.)|\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", str(hint))


def format_value(value: Any) -> str:
    """A value written as the command line accepts it back (``none``, ``true``, JSON lists)."""
    import dataclasses

    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, separators=(",", ":"))
        except TypeError:
            return repr(value)
    if isinstance(value, (str, int, float)):
        return str(value)
    return getattr(value, "__name__", repr(value))


def _rank(hint: Any) -> int:
    """Order in which a union's members are tried: the most specific parse first, str last."""
    import typing

    origin = typing.get_origin(hint)
    order = [type(None), bool, int, float]
    if hint in order:
        return order.index(hint)
    if origin is typing.Literal:
        return 4
    if hint in (list, tuple, dict) or origin in (list, tuple, dict):
        return 5
    return 7 if hint is str else 6


def parse_value(raw: str, hint: Any, *, in_union: bool = False) -> Any:
    """Parse the command-line string ``raw`` as a value of the type ``hint``: bool
    (true/false/yes/no/on/off/1/0), int, float, str, None (``none``/``null``), Literal, unions
    (each member tried, the most specific first), lists and tuples (a JSON list or comma
    separated items, each parsed as the element type) and dicts (a JSON object). Raises
    ``ValueError`` when it does not fit."""
    import collections.abc
    import typing

    members = _union_args(hint)
    if members is not None:
        for member in sorted(members, key=_rank):
            try:
                return parse_value(raw, member, in_union=True)
            except _BadValue:
                continue
        raise _BadValue(raw)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    text = raw.strip()
    if hint is Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    if hint is type(None):
        if text.lower() in _NONE:
            return None
        raise _BadValue(raw)
    if origin is typing.Literal:
        for choice in args:
            try:
                if parse_value(text, type(choice)) == choice:
                    return choice
            except _BadValue:
                continue
        raise _BadValue(raw)
    if hint is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise _BadValue(raw)
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise _BadValue(raw) from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise _BadValue(raw) from None
    if hint is str:
        return raw
    seq = {list: list, tuple: tuple, collections.abc.Sequence: tuple}
    if hint in seq or origin in seq:
        return _parse_sequence(text, seq[origin or hint], args, strict=in_union)
    if hint is dict or origin is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise _BadValue(raw) from None
        if not isinstance(value, dict):
            raise _BadValue(raw)
        return value
    raise _Unsupported(raw)


def _parse_sequence(text: str, kind: type, args: tuple[Any, ...], *, strict: bool) -> Any:
    """A JSON list (``[0.01, 0.1]``) or comma-separated items (``ga,ft``); a single bare item
    makes a one-item sequence unless ``strict`` (inside a union that also takes that item)."""
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise _BadValue(text) from None
        if not isinstance(items, list):
            raise _BadValue(text)
        items = [i if isinstance(i, str) else json.dumps(i) for i in items]
    elif "," in text or not strict:
        items = [t.strip() for t in text.split(",")] if text else []
    else:
        raise _BadValue(text)
    if len(args) == 2 and args[1] is Ellipsis:
        types_ = [args[0]] * len(items)
    elif args and kind is tuple:
        if len(args) != len(items):
            raise _BadValue(text)
        types_ = list(args)
    else:
        types_ = [args[0] if args else Any] * len(items)
    return kind(parse_value(i, t) for i, t in zip(items, types_, strict=True))


def method_options(method: str, pairs: list[tuple[str, str]], *,
                   refuse_flags: bool = False) -> dict[str, Any]:
    """Typed options of ``method`` from ``(key, raw value)`` pairs, checked against its config
    dataclass: an unknown key raises ``UsageError`` listing the method's options, a value that
    does not fit raises one naming the field, its type and the value. ``refuse_flags``: the
    fields the ``unlearn`` command has flags for are refused (pointing to the flag)."""
    from fastunlearn.unlearn import get_method

    entry = get_method(method)
    fields_ = _method_fields(entry.config_cls)
    out: dict[str, Any] = {}
    for key, raw in pairs:
        key = key.strip().replace("-", "_")
        if refuse_flags and key in _FLAG_OPTIONS and key in fields_:
            raise UsageError(f"{key} has its own flag; use {_FLAG_OPTIONS[key]}")
        if key not in fields_:
            valid = [k for k in fields_ if not (refuse_flags and k in _FLAG_OPTIONS)]
            raise UsageError(f"method {entry.name!r} has no option {key!r}; options: "
                             f"{', '.join(sorted(valid))} (see `fastunlearn list methods "
                             f"{entry.name}`)")
        if key in out:
            raise UsageError(f"method {entry.name!r}: option {key} is given twice")
        hint = fields_[key][0]
        try:
            out[key] = parse_value(raw, hint)
        except _Unsupported:
            raise UsageError(f"method {entry.name!r}: option {key} ({type_name(hint)}) cannot "
                             f"be set from the command line") from None
        except _BadValue:
            raise UsageError(f"method {entry.name!r}: option {key} must be {type_name(hint)}, "
                             f"got {raw!r}") from None
    return out


def _set_pairs(items: list[str], flag: str = "--set") -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        pairs.append((key, raw))
    return pairs


def _flag_pairs(tokens: list[str], method: str) -> list[tuple[str, str]]:
    """``--KEY VALUE`` / ``--KEY=VALUE`` tokens the parser did not know, as option pairs of
    ``method``; a boolean field also takes a bare ``--KEY`` (true) and ``--no-KEY`` (false)."""
    from fastunlearn.unlearn import get_method

    fields_ = _method_fields(get_method(method).config_cls)
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise UsageError(f"unrecognized argument {tok!r}; method options are --KEY VALUE "
                             "or --set KEY=VALUE")
        name, eq, value = tok[2:].partition("=")
        key = name.replace("-", "_")
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if eq:
            pairs.append((key, value))
            i += 1
        elif key.startswith("no_") and fields_.get(key[3:], (None,))[0] is bool:
            pairs.append((key[3:], "false"))
            i += 1
        elif nxt is not None and not nxt.startswith("--"):
            pairs.append((key, nxt))
            i += 2
        elif key in fields_ and fields_[key][0] is bool:
            pairs.append((key, "true"))
            i += 1
        elif key not in fields_:
            pairs.append((key, ""))  # method_options names the unknown key
            i += 1
        else:
            raise UsageError(f"{tok} needs a value ({type_name(fields_[key][0])})")
    return pairs


def method_help(method: str) -> str:
    """The options of ``method`` — name, type, default (read from its config dataclass) and,
    for the shared ones, the ``unlearn`` flag that sets them."""
    from fastunlearn.unlearn import get_method

    entry = get_method(method)
    fields_ = _method_fields(entry.config_cls)
    rows = [(name, type_name(hint), format_value(default), _FLAG_OPTIONS.get(name, ""))
            for name, (hint, default) in fields_.items()]
    rows.insert(0, ("option", "type", "default", "flag"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{entry.name} ({entry.config_cls.__name__}): {entry.description}",
             "options (--KEY VALUE or --set KEY=VALUE; studies: --set "
             f"{entry.name}.KEY=VALUE):"]
    lines += [f"  {n:<{w[0]}}  {t:<{w[1]}}  {d:<{w[2]}}  {f}".rstrip() for n, t, d, f in rows]
    return "\n".join(lines)


def _study_method_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set METHOD.KEY=VALUE`` of ``study`` / ``audit``, typed by each method's config."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for key, raw in _set_pairs(items, "--set"):
        method, dot, option = key.partition(".")
        if not dot or not option or not method:
            raise UsageError(f"--set expects METHOD.KEY=VALUE, got {key!r}")
        grouped.setdefault(method, []).append((option, raw))
    return {m: method_options(m, pairs) for m, pairs in grouped.items()}


def auto_table(record: dict) -> str:
    """``auto``'s choices as a short table: per group its size, treatment and mean signal,
    then the teacher, the student and the validation signals."""
    lines = [f"auto: {record['budget']:.0%} of a retrain ({record['retrain_epochs']} epochs, "
             f"{record['retrain_cost_source']}); spent {record['spent_passes']:.0f} of "
             f"{record['budget_passes']:.0f} planned sample passes"
             + (" (raised to the minimum steps: this problem is small)"
                if record.get("minimum_steps") else ""),
             f"  {'group':<10} {'size':>5}  {'signal':>6}  treatment"]
    for name, g in record["groups"].items():
        sig = "-" if g["mean_signal"] is None else f"{g['mean_signal']:.2f}"
        lines.append(f"  {name:<10} {g['size']:>5}  {sig:>6}  {g['treatment']}")
    t, st, sg = record["teacher"], record["student"], record["signals"]
    if t["steps"]:
        lines.append(f"  teacher: {t['scramble']}, {t['steps']} retain steps at lr {t['lr']}, "
                     f"temperature {t['temperature']}, val acc {t['val_acc']:.1f} %")
    else:
        lines.append(f"  teacher: {t['scramble']}")
    lrs = ", ".join(str(v) for v in st.get("lr_tried", [st["lr"]]))
    lines.append(f"  student: {st['steps']} of {st['planned_steps']} steps, {record['loss']}, "
                 f"lr {lrs} ({st['stop_reason']})")
    lines.append(f"  forget-vs-val loss AUC {sg['forget_val_auc_before']:.3f} → "
                 f"{sg['forget_val_auc_after']:.3f}; val acc {sg['val_acc_before']:.1f} → "
                 f"{sg['val_acc_after']:.1f} %")
    return "\n".join(lines)


def cmd_unlearn(args: argparse.Namespace) -> int:
    from fastunlearn.checkpoint import (
        checkpoint_paths,
        load_checkpoint,
        read_metadata,
        save_checkpoint,
    )
    from fastunlearn.unlearn import get_method, unlearn

    entry = get_method(args.method)  # unknown method → clear error before any work
    if args.help_method:
        print(method_help(args.method))
        return 0
    pairs = _flag_pairs(getattr(args, "method_flags", []), args.method) + _set_pairs(args.set)
    options = method_options(args.method, pairs, refuse_flags=True)
    # the shared flags: only what was given overrides the method config's defaults
    flags = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
             "seed": args.seed, "device": args.device,
             "progress": False if args.no_progress else None,
             "compile": _COMPILE_MODES.get(args.compile)}
    # built here, not by make_config (which drops None): `--set retain_per_epoch=none` is a value
    given = {k: v for k, v in flags.items() if v is not None}
    if args.model_path:
        path = Path(args.model_path)
    elif args.model and args.dataset:
        path = Path(f"checkpoints/{args.model}_{args.dataset}.safetensors")
    else:
        raise UsageError(
            "give --model-path P (or --model M --dataset D of a `fastunlearn train` run)"
        )
    meta = read_metadata(path)
    if not meta.get("model"):
        raise UsageError(
            f"{path} holds a model of your own ({meta.get('model_class') or 'unknown class'}), "
            "which the command line cannot rebuild; unlearn it from Python: "
            "fu.load_checkpoint(path, model=MyNet()) then fu.unlearn(...)")
    dataset = args.dataset or (meta.get("dataset") or {}).get("name")
    if not dataset:
        raise UsageError(f"{path} does not name its dataset; pass --dataset")
    if args.model and meta["model"]["name"] != args.model:
        raise UsageError(f"{path} holds a {meta['model']['name']!r} model, not {args.model!r}")
    if "retrain_epochs" in {f.name for f in dataclasses.fields(entry.config_cls)} and \
            "retrain_epochs" not in options and (meta.get("train_config") or {}).get("epochs"):
        # auto's budget is a fraction of a retrain: the original's epochs from its checkpoint
        options["retrain_epochs"] = int(meta["train_config"]["epochs"])
    # built here, not by make_config (which drops None): `--set retain_per_epoch=none` is a value
    config = entry.config_cls(**given, **options)
    data = _load_data(dataset, args.data_root)
    if getattr(args, "forget", None) and args.forget.lower().startswith("worst:"):
        args._checkpoint_model = load_checkpoint(path).model
    args._checkpoint_meta = meta
    split = _forget_split(args, data)
    kind = "class" if split.kind == "class" else "sample"
    out = Path(args.out or path.with_name(f"{path.stem}_{config.method}_{kind}.safetensors"))
    if _same_file(checkpoint_paths(out)[0], checkpoint_paths(path)[0]):
        raise UsageError(f"--out {out} is the input checkpoint; the original would be lost — "
                         "choose another --out")
    _check_out(out, args.force)
    from fastunlearn._device import resolve_device

    # a checkpoint loads onto the CPU; --device auto means "the best device here" on the CLI
    ckpt = load_checkpoint(path, device=resolve_device(config.device))
    result = unlearn(ckpt.model, split, config)
    if result.info.get("weights_finite") is False:
        _refuse_nonfinite(result.model, config.method, "--lr (or --epochs)")
    if "auto" in result.info:
        print(auto_table(result.info["auto"]))
    if result.info.get("retain_collapsed") and not args.allow_collapse:
        print(f"{config.method} collapsed the model: validation accuracy on the retained classes "
              f"{result.info['val_retain_acc_before']:.1f} % → "
              f"{result.info['val_retain_acc_after']:.1f} %; nothing saved (lower --lr, or pass "
              "--allow-collapse to keep it)", file=sys.stderr)
        return EXIT_FAILED
    metrics = _scalar_accuracy(result.model, split)
    metrics.update(result.summary())
    unchanged = bool(result.info.get("unchanged"))
    extra = {"role": "unlearned", "unlearn_config": config.to_dict(),
             "source_checkpoint": str(path)}
    if unchanged:
        extra.update(unchanged=True, unchanged_reason=result.info.get("unchanged_reason"))
    saved = save_checkpoint(out, result.model, dataset=data, forget=split.spec, seed=config.seed,
                            metrics=metrics, extra=extra)
    print(f"saved {saved}: {config.method} on {split.describe()} in {result.rte_s:.1f} s; "
          f"forget_acc {metrics['forget_acc']:.2f} retain_acc {metrics['retain_acc']:.2f} "
          f"test_acc {metrics['test_acc']:.2f}")
    if result.info.get("retain_collapsed"):
        print(f"warning: validation accuracy on the retained classes collapsed toward chance "
              f"({result.info['val_retain_acc_before']:.1f} % → "
              f"{result.info['val_retain_acc_after']:.1f} %); the model is likely broken")
    if unchanged:
        print(f"model unchanged: {result.info.get('unchanged_reason')} — it equals the input "
              f"checkpoint (saved with unchanged: true)"
              + ("" if args.allow_unchanged else "; pass --allow-unchanged to accept it"))
        return 0 if args.allow_unchanged else EXIT_FAILED
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fastunlearn._device import resolve_device
    from fastunlearn.checkpoint import load_checkpoint, read_metadata
    from fastunlearn.evaluate.core import Evaluator

    cfg = _eval_config(args)
    meta = read_metadata(args.model_path)
    dataset = (meta.get("dataset") or {}).get("name")
    if not dataset:
        raise UsageError(f"{args.model_path} does not name its dataset")
    metas = {"retrained": read_metadata(args.reference) if args.reference else None,
             "original": read_metadata(args.original) if args.original else None}
    for key, m in metas.items():
        other = ((m or {}).get("dataset") or {}).get("name")
        if m is not None and other != dataset:
            raise UsageError(f"--{'reference' if key == 'retrained' else key} checkpoint is for "
                             f"{other!r}, but {args.model_path} is for {dataset!r}")
    data = _load_data(dataset, args.data_root)
    stored = meta.get("forget") or (metas["retrained"] or {}).get("forget")
    split = _forget_split(args, data, stored=stored)
    if metas["retrained"] is not None and not args.allow_reference_mismatch:
        problem = _reference_mismatch(data, split, metas["retrained"].get("forget"))
        if problem:
            raise UsageError(f"--reference {args.reference} {problem}; pass "
                             "--allow-reference-mismatch to compare anyway")
    device = resolve_device(args.device)
    refs = {}
    for key, p in (("retrained", args.reference), ("original", args.original)):
        if p:
            refs[key] = load_checkpoint(p, device=device).model
    model = load_checkpoint(args.model_path, device=device).model
    gold_meta = metas["retrained"] or {}
    metrics = Evaluator(split, cfg).evaluate(
        model, **refs, cost=meta.get("metrics") or {},
        retrain_cost=gold_meta.get("metrics") or {})
    metrics = {"model_path": str(args.model_path), "forget": split.spec if split.kind != "indices"
               else {"type": "indices", "count": len(split.forget)}, **metrics}
    if metrics.get("diverged") and not args.json:
        print("model diverged (its outputs are NaN/inf): accuracies below; MIA, entropy and "
              "divergence metrics are not computable (nan)")
    _print_metrics(metrics, args.json)
    return 0


def _reference_mismatch(data, split, ref_spec: Any) -> str | None:  # noqa: ANN001
    """Why the gold model (forget spec ``ref_spec``) is not the retrain of ``split``, or None."""
    from fastunlearn.data import split_from_spec

    if not ref_spec:
        return (f"was trained on the whole training set (it forgot nothing), but the model "
                f"forgets {split.describe()}")
    try:
        ref = split_from_spec(data, ref_spec)
    except (ValueError, KeyError, TypeError) as err:
        return f"has an unusable forget spec ({err})"
    if not (ref.forget_idx.shape == split.forget_idx.shape
            and bool((ref.forget_idx == split.forget_idx).all())):
        return f"forgot {ref.describe()}, but the model forgets {split.describe()}"
    return None


def cmd_report(args: argparse.Namespace) -> int:
    from fastunlearn.evaluate.report import write_report
    from fastunlearn.studies.demo import PhaseLog

    phases = PhaseLog(1, prefix="report", enabled=not args.no_progress)
    with phases.phase(f"{args.run_dir} (evaluation{'' if args.no_plots else ', plots'})"):
        path = write_report(args.run_dir, args.out, data_root=args.data_root,
                            device=args.device, config=_eval_config(args),
                            plots=not args.no_plots)
    print(f"written {path} and {path.with_name('metrics.json')}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.name is not None:
        if args.what != "methods":
            raise UsageError(f"`fastunlearn list {args.what}` takes no name (only `list methods "
                             "NAME` does)")
        print(method_help(args.name))
        return 0
    if args.what == "models":
        from fastunlearn.models import model_descriptions as describe
    elif args.what == "datasets":
        from fastunlearn.data import dataset_descriptions as describe
    elif args.what == "studies":
        from fastunlearn.studies import list_studies as describe
    else:
        from fastunlearn.unlearn import list_methods as describe
    items = describe()
    width = max(len(n) for n in items) + 2
    for name, desc in items.items():
        print(f"{name:<{width}}{desc}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fastunlearn.studies.demo import existing_outputs, run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    existing = existing_outputs(out)
    if existing and not args.force:
        raise UsageError(f"{existing[0]} exists; pass --force to overwrite the demo in {out} "
                         "or choose --out")
    _check_writable_dir(out, f"--out {out}")
    _check_writable_dir(Path(args.pool) if args.pool else out.parent / "pool", "--pool")
    table = run_demo(args.out, dataset=args.dataset, model=args.model,
                     forget_class=args.forget_class, epochs=args.epochs, seed=args.seed,
                     device=args.device, progress=not args.no_progress, pool=args.pool,
                     force=args.force)
    print(table)
    print(f"written to {args.out}/results.md")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from fastunlearn.studies import StudyConfig, get_study, run

    get_study(args.name)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
    out = Path(args.out) if args.out else Path("runs") / "studies" / args.name
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    _check_writable_dir(out, f"--out {out}")
    _check_writable_dir(Path(args.pool) if args.pool else out.parent / "pool", "--pool")
    per_method = _study_method_options(args.set)
    options = _parse_pairs(args.option, "--option")
    config = StudyConfig(
        dataset=args.dataset, model=args.model, models=tuple(args.models or ()),
        methods=tuple(args.methods or ()), forget=args.forget, seeds=args.seeds,
        epochs=args.epochs, method_epochs=args.method_epochs, method_options=per_method,
        out=args.out, pool=args.pool, executor=args.executor, workers=args.workers,
        cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, device=args.device,
        threads=args.threads, batch_size=args.batch_size, mia_samples=args.mia_samples,
        cka=not args.no_cka, progress=not args.no_progress, options=options,
    )
    result = run(args.name, config)
    c = result.counts
    print(f"study {args.name}: {c['runs']} runs ({c['ran']} ran, {c['skipped']} already done), "
          f"{c['pool_trained']} pool models trained, {result.wall_s:.0f} s")
    print(f"written {result.report}, {result.out / 'results.csv'}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from fastunlearn.studies.audit import AuditConfig, audit
    from fastunlearn.studies.audit_report import audit_table

    per_method = _study_method_options(args.set)
    recipe = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                ("batch_size", args.batch_size),
                                ("select_models", args.select_models), ("model", args.model))
              if v is not None}
    config = AuditConfig(
        methods=tuple(args.method), dataset=args.dataset, forget=args.forget,
        shadows=args.shadows, protocol=args.protocol, **recipe,
        seed=args.seed, method_options=per_method, probe_shadows=args.probe_shadows,
        out=args.out, pool=args.pool, executor=args.executor, workers=args.workers,
        device=args.device, threads=args.threads, progress=not args.no_progress,
    )
    result = audit(config)
    c = result.counts
    print(audit_table(result.rows))
    print(f"audit: {c['runs']} runs ({c['ran']} ran, {c['skipped']} already done), "
          f"{c['pool_trained']} shadow models trained, {result.wall_s:.0f} s")
    print(f"written {result.report}, {result.out / 'audit.json'}")
    return 0


COMMANDS = {"train": cmd_train, "unlearn": cmd_unlearn, "evaluate": cmd_evaluate,
            "report": cmd_report, "list": cmd_list, "demo": cmd_demo, "study": cmd_study,
            "audit": cmd_audit}


def main(argv: list[str] | None = None) -> int:
    from fastunlearn.checkpoint import CheckpointError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # only `unlearn` takes more: the method's options as --KEY VALUE
        if args.command != "unlearn":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.method_flags = extra
    _setup_logging(args.verbose)
    try:
        if isinstance(getattr(args, "device", None), str):
            _check_device(args.device)
        return COMMANDS[args.command](args)
    except RunFailed as err:
        sys.stderr.write(f"fastunlearn {args.command}: error: {str(err).splitlines()[0]}\n")
        return EXIT_FAILED
    except (UsageError, CheckpointError, ValueError, FileNotFoundError, FileExistsError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        sys.stderr.write(f"fastunlearn {args.command}: error: {msg}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("fastunlearn: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
