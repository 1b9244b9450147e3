"""Bring your own model and data: unlearn a timm Vision Transformer trained on CIFAR-10.

The model is a plain ``timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4,
num_classes=10)`` trained by an ordinary PyTorch loop on ``torchvision.datasets.CIFAR10`` with
the standard CIFAR transforms. fastunlearn then forgets one class ("airplane") and 500 random
training images, each with two methods — fine-tuning on the retain set, and Fisher forgetting,
which finds the ViT's classifier head through timm's ``get_classifier()`` — evaluates every
result against the original and saves the unlearned weights.

Runs offline: CIFAR-10 is read from ``--data-root`` when present, otherwise
``torchvision.datasets.FakeData`` of the same shape stands in (random images: chance-level
accuracies, same pipeline). ``--tiny`` uses a 2-block ViT with 8×8 patches and a few hundred
images (seconds on a CPU; the test suite runs it).

    python examples/timm_vit.py --tiny
    python examples/timm_vit.py --data-root ~/data --epochs 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

import fastunlearn as fu

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy", "rte_s")


def cifar10(root: str | None, train_size: int, test_size: int):
    """``(train_augmented, train_plain, test, source)``. The augmented copy trains the
    original; fastunlearn gets the deterministic one (it reads the training images both to
    unlearn and to measure what was forgotten)."""
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(MEAN, STD)])
    eval_tf = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    try:
        if root is None:
            raise FileNotFoundError("no --data-root")
        aug = torchvision.datasets.CIFAR10(root, train=True, transform=train_tf)
        plain = torchvision.datasets.CIFAR10(root, train=True, transform=eval_tf)
        test = torchvision.datasets.CIFAR10(root, train=False, transform=eval_tf)
        source = f"CIFAR-10 from {root}"
    except (FileNotFoundError, RuntimeError):  # torchvision: "Dataset not found or corrupted"
        def fake(size: int, offset: int, tf: T.Compose) -> torchvision.datasets.FakeData:
            return torchvision.datasets.FakeData(size=size, image_size=(3, 32, 32),
                                                 num_classes=10, transform=tf,
                                                 random_offset=offset)
        aug, plain = fake(train_size, 0, train_tf), fake(train_size, 0, eval_tf)
        test = fake(test_size, train_size, eval_tf)
        source = "FakeData (CIFAR-10 not found)"
    if len(plain) > train_size:
        aug, plain = Subset(aug, range(train_size)), Subset(plain, range(train_size))
    if len(test) > test_size:
        test = Subset(test, range(test_size))
    return aug, plain, test, source


def save(model: nn.Module, path: Path, split, metrics: dict) -> Path:
    """fu.save_checkpoint when it takes this model; else a plain safetensors state dict and
    a JSON sidecar."""
    from fastunlearn.checkpoint import CheckpointError

    try:
        return fu.save_checkpoint(path, model, dataset=split.data, forget=split.spec,
                                  metrics=metrics)
    except CheckpointError:  # older fastunlearn: only models from fu.create_model
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(path))
        path.with_suffix(".json").write_text(json.dumps(
            {"forget": split.spec, "metrics": metrics}, indent=2, default=str))
        return path




def train_original(model: nn.Module, data, epochs: int, batch_size: int,
                   device: torch.device) -> nn.Module:
    """The user's own training loop (AdamW with warm-up and cosine decay, as ViTs train)."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = max(1, epochs * len(loader))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps)
                                                                      / steps)))
    model.to(device).train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py")
    ap.add_argument("--out", default="runs/example_timm_vit")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=None, help="original training epochs")
    ap.add_argument("--tiny", action="store_true", help="a 2-block ViT, a few hundred images")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    device = torch.device(args.device)

    tiny = args.tiny
    train_size, test_size = (160, 100) if tiny else (50000, 10000)
    epochs = args.epochs or (1 if tiny else 50)
    n_random = 24 if tiny else 500
    aug, plain, test, source = cifar10(args.data_root, train_size, test_size)
    print(f"data: {source}; {len(plain)} train / {len(test)} test images")

    shape = {"depth": 2, "patch_size": 8} if tiny else {"patch_size": 4}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10,
                              img_size=32, **shape)
    t0 = time.perf_counter()
    train_original(model, aug, epochs, 64, device)
    print(f"original: ViT-Tiny {shape}, {epochs} epoch(s) in {time.perf_counter() - t0:.1f} s")

    # fastunlearn starts here: the user's Dataset and any nn.Module
    ids = torch.randperm(len(plain), generator=torch.Generator().manual_seed(0))[:n_random]
    splits = {
        "class airplane": fu.ForgetSplit.from_datasets(plain, forget=["airplane"], test=test,
                                                       val=0.1, classes=CLASSES, batch_size=64),
        f"{n_random} random": fu.ForgetSplit.from_datasets(plain, forget=ids, test=test,
                                                          val=0.1, classes=CLASSES,
                                                          batch_size=64),
    }
    common = {"device": args.device, "progress": False}
    out = Path(args.out)
    print(f"{'forget':<15} {'method':<7} " + " ".join(f"{m:>12}" for m in METRICS))
    for what, split in splits.items():
        configs = {  # fisher finds the head via timm's get_classifier() (or pass head="head")
            "ft": fu.FTConfig(epochs=1 if tiny else 5, lr=1e-3, batch_size=split.batch_size,
                              **common),
            "fisher": fu.FisherConfig(num_samples=128 if tiny else 1024, **common),
        }
        for name, config in configs.items():
            res = fu.unlearn(model, split, config)
            rep = fu.evaluate(res, split, original=model, cka=not tiny,
                              mia_seeds=1 if tiny else 5)
            print(f"{what:<15} {name:<7} " + " ".join(f"{rep[m]:>12.2f}" for m in METRICS))
            row = {m: rep[m] for m in METRICS}
            saved = save(res.model, out / f"{what.replace(' ', '_')}-{name}", split, row)
    print(f"saved to {out} (last: {saved.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
