"""The PyTorch peer of ``benchmarks.vs_pytorch``: the classic U-Net train step
and forward pass, timed the way ``benchmarks.speed`` times busjax.

The network, loss and optimiser are those of ``shared/bench/torch_unet_reference.py``
(the project's reference peer): per stage two (3x3 conv without bias,
BatchNorm, ReLU), four 2x2 max-pools, ConvTranspose 2x2 stride 2, concat
``[skip, up]``, 1x1 head, one input channel; soft Dice on sigmoid outputs;
Adam 1e-4; NCHW, PyTorch's default CPU/GPU kernels, eager mode. At width 64
it has 31,036,481 parameters, as ``busjax.models.unet.UNet``.

Run as a script (one process per measurement, so PyTorch's thread pools never
share a process with XLA's)::

  python -m benchmarks.torch_peer --width=64 --image_size=128 --batch_size=4

prints one JSON line: ``train_images_per_s``, ``infer_images_per_s`` (medians
of ``--repeats`` timings of ``--steps`` back-to-back calls, after two warm-up
calls), ``params``, versions and device. Needs ``torch`` (not a busjax
dependency: ``pip install torch``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def build_unet(width: int):
  """The reference U-Net (``shared/bench/torch_unet_reference.py``) at ``width``."""
  from torch import nn

  def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

  class UNet(nn.Module):

    def __init__(self):
      super().__init__()
      w = [width * 2**i for i in range(5)]
      self.enc = nn.ModuleList([block(1 if i == 0 else w[i - 1], w[i]) for i in range(4)])
      self.mid = block(w[3], w[4])
      self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, 2) for i in range(4)])
      self.dec = nn.ModuleList([block(2 * w[i], w[i]) for i in range(4)])
      self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x):
      import torch

      skips = []
      for enc in self.enc:
        x = enc(x)
        skips.append(x)
        x = nn.functional.max_pool2d(x, 2)
      x = self.mid(x)
      for i in reversed(range(4)):
        x = self.dec[i](torch.cat([skips[i], self.up[i](x)], 1))
      return self.head(x)

  return UNet()


def measure(width: int, image_size: int, batch_size: int, steps: int, repeats: int,
            device: str | None = None) -> dict:
  """Train and inference images/s of the reference U-Net (see the module docstring)."""
  import torch

  dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
  model = build_unet(width).to(dev)
  opt = torch.optim.Adam(model.parameters(), 1e-4)
  g = torch.Generator().manual_seed(0)
  x = torch.rand(batch_size, 1, image_size, image_size, generator=g).to(dev)
  y = (torch.rand(batch_size, 1, image_size, image_size, generator=g) > 0.5).float().to(dev)

  def train_step():
    opt.zero_grad(set_to_none=True)
    p = torch.sigmoid(model(x))
    loss = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    loss.backward()
    opt.step()
    return loss

  def timed(fn) -> float:
    for _ in range(2):
      fn()
    sync()
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      for _ in range(steps):
        fn()
      sync()
      times.append(time.perf_counter() - t0)
    return statistics.median(times)

  model.train()
  train_s = timed(train_step)
  model.eval()
  with torch.no_grad():
    infer_s = timed(lambda: model(x))
  return {
      "framework": "torch", "torch_version": torch.__version__, "device": str(dev),
      "num_threads": torch.get_num_threads(), "width": width, "image_size": image_size,
      "batch_size": batch_size, "steps": steps, "repeats": repeats,
      "params": sum(p.numel() for p in model.parameters()),
      "train_images_per_s": steps * batch_size / train_s,
      "infer_images_per_s": steps * batch_size / infer_s,
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--width", type=int, default=64)
  p.add_argument("--image_size", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--device", default=None)
  a = p.parse_args()
  print(json.dumps(measure(a.width, a.image_size, a.batch_size, a.steps, a.repeats, a.device)))


if __name__ == "__main__":
  main()
