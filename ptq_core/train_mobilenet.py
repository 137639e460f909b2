"""Train MobileNetV1Cifar on the CIFAR-10 train split and write its weights as ``.npz``.

    python -m ptq_core.train_mobilenet --cifar10-dir DIR --out ptq_core/weights/mobilenetv1_cifar10.npz

Same library versions, seed and thread count give bit-identical weights. The test split is scored once,
after training, and decides nothing.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ptq_core.cifar10 import load_split
from ptq_core.mobilenet import MobileNetV1Cifar, save_weights

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--cifar10-dir", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate")
parser.add_argument("--weight-decay", type=float, default=5e-4)
parser.add_argument("--label-smoothing", type=float, default=0.0)
parser.add_argument("--train-images", type=int, default=None, help="first N train images only (smoke runs)")
args = parser.parse_args()

WARMUP_FRACTION = 0.15  # of all steps: linear warmup to the peak rate, then cosine decay to zero
MOMENTUM = 0.9
PAD = 4  # random crops of the image zero-padded by this many pixels
EVAL_BATCH = 1000

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)
torch.use_deterministic_algorithms(True)
# NaN-filling every new tensor (a debugging aid of deterministic mode) costs ~20 % of a step
torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)

train = load_split(args.cifar10_dir, "train")
images, labels = train.images[: args.train_images], train.labels[: args.train_images]
padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
n = len(labels)


def augmented_batch(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 32x32 crops of the padded images, each flipped left-right with probability 1/2."""
    size = images.shape[1]
    dy = rng.integers(0, 2 * PAD + 1, len(index))
    dx = rng.integers(0, 2 * PAD + 1, len(index))
    flip = rng.random(len(index)) < 0.5
    offsets = np.arange(size)
    rows = dy[:, None] + offsets
    cols = dx[:, None] + np.where(flip[:, None], offsets[::-1], offsets)
    crops = padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]
    return torch.from_numpy(crops.astype(np.float32)), torch.from_numpy(labels[index])


model = MobileNetV1Cifar()
decay = [p for p in model.parameters() if p.ndim > 1]  # conv and linear weights; not BN or biases
no_decay = [p for p in model.parameters() if p.ndim <= 1]
optimizer = torch.optim.SGD(
    [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
    lr=args.lr,
    momentum=MOMENTUM,
    nesterov=True,
)
steps_per_epoch = math.ceil(n / args.batch_size)
total_steps = args.epochs * steps_per_epoch
warmup_steps = int(WARMUP_FRACTION * total_steps)


def get_lr(step: int) -> float:
    if step < warmup_steps:
        return args.lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


print(
    f"training on {n} images, {args.epochs} epochs x {steps_per_epoch} steps, {args.threads} threads, seed {args.seed}"
)
start = time.perf_counter()
step = 0
for epoch in range(args.epochs):
    model.train()
    epoch_start = time.perf_counter()
    loss_sum, correct = 0.0, 0
    order = rng.permutation(n)
    for first in range(0, n, args.batch_size):
        x, y = augmented_batch(order[first : first + args.batch_size])
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step)
        logits = model.logits(x)
        loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        step += 1
    seconds = time.perf_counter() - epoch_start
    print(f"epoch {epoch + 1:3d}  loss {loss_sum / n:.4f}  train acc {correct / n:.4f}  {seconds:6.1f} s", flush=True)
print(f"trained in {time.perf_counter() - start:.0f} s")

model.eval()
test = load_split(args.cifar10_dir, "test")
with torch.no_grad():
    predictions = np.concatenate(
        [
            model(torch.from_numpy(test.images[i : i + EVAL_BATCH].astype(np.float32))).argmax(1).numpy()
            for i in range(0, len(test), EVAL_BATCH)
        ]
    )
test_correct = int((predictions == test.labels).sum())
print(f"test accuracy {test_correct / len(test):.4f} ({test_correct} / {len(test)})")

sha256 = save_weights(model, args.out)
print(f"wrote {args.out}  sha256 {sha256}")
