"""busjax's U-Net against the PyTorch peer, side by side on this machine.

  python -m benchmarks.vs_pytorch --widths=16,64 --image_size=128 --batch_size=4
  python -m benchmarks.vs_pytorch --widths=64 --image_size=256 --batch_size=16   # GPU

For each width: the PyTorch peer (:mod:`benchmarks.torch_peer`, the network,
soft-Dice loss and Adam of ``shared/bench/torch_unet_reference.py``) runs in a
child process, then busjax's ``unet`` in this process with the same settings
(``loss.name=dice``, Adam 1e-4 constant, no augmentation, same width, size and
batch), timed by :func:`benchmarks.speed.measure`. Both sides: inputs already
on the device, two warm-up calls, compile excluded, the median of
``--repeats`` timings of ``--steps`` back-to-back calls. The sides run one
after the other, never together, so neither steals the other's cores.

Prints a Markdown table (images/s of the train step and of inference, and
busjax / PyTorch ratios) and appends one JSON row per width to ``--results``
(``kind: vs_pytorch``). Without PyTorch installed the busjax side still runs
and the table says the peer was skipped (``pip install torch`` adds it; it is
not a busjax dependency).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Sequence

from benchmarks import common

# busjax settings matching the peer's train step (see the module docstring).
PEER_OVERRIDES = ("loss={'name': 'dice'}", "optimizer.learning_rate=1e-4",
                  "optimizer.schedule=constant", "augment.hflip=False",
                  "augment.vflip=False", "augment.shift=0.0", "augment.contrast=0.0",
                  "augment.brightness=0.0", "augment.gamma=0.0")


def torch_available() -> bool:
  return importlib.util.find_spec("torch") is not None


def run_torch_peer(width: int, image_size: int, batch_size: int, steps: int,
                   repeats: int) -> dict:
  """Runs :mod:`benchmarks.torch_peer` in a child process; returns its JSON row."""
  cmd = [sys.executable, "-m", "benchmarks.torch_peer", f"--width={width}",
         f"--image_size={image_size}", f"--batch_size={batch_size}", f"--steps={steps}",
         f"--repeats={repeats}"]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
  if out.returncode != 0:
    raise RuntimeError(f"PyTorch peer failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def compare_row(jax_row: dict, torch_row: dict | None, width: int) -> dict:
  """One ``vs_pytorch`` row from the two sides' measurements (torch may be None)."""
  row = {
      "kind": "vs_pytorch", "model": "unet", "width": width,
      "image_size": jax_row["image_size"], "batch_size": jax_row["batch_size"],
      "params": jax_row["params"], "compile_s": jax_row["compile_s"],
      "dtype": jax_row.get("dtype", "float32"), "conv_backend": jax_row.get("conv_backend"),
      "jax_train_tflops": jax_row.get("train_tflops"), "peak_tflops": jax_row.get("peak_tflops"),
      "jax_train_images_per_s": jax_row["train_images_per_s"],
      "jax_infer_images_per_s": jax_row["infer_images_per_s"],
      "torch_train_images_per_s": None, "torch_infer_images_per_s": None,
      "train_ratio": None, "infer_ratio": None, "torch": torch_row,
      **{k: jax_row.get(k) for k in ("device_kind", "platform", "host_cpu", "host_cores", "malloc",
                                     "jax_version", "flax_version")},
      "time": common.utc_now(),
  }
  if torch_row is not None:
    if torch_row["params"] != jax_row["params"]:
      raise ValueError(f"width {width}: PyTorch peer has {torch_row['params']} parameters, "
                       f"busjax unet {jax_row['params']}: not the same network")
    for k in ("train", "infer"):
      t = torch_row[f"{k}_images_per_s"]
      row[f"torch_{k}_images_per_s"] = t
      row[f"{k}_ratio"] = row[f"jax_{k}_images_per_s"] / t
  return row


def table(rows: Sequence[dict]) -> str:
  """Markdown table of ``vs_pytorch`` rows."""
  f = lambda v, d=2: "skipped" if v is None else f"{v:.{d}f}"
  lines = ["| width | size | batch | params | busjax train img/s | PyTorch train img/s | ratio "
           "| busjax infer img/s | PyTorch infer img/s | ratio | busjax compile s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['width']} | {r['image_size']} | {r['batch_size']} | {r['params']:,} "
        f"| {f(r['jax_train_images_per_s'])} | {f(r['torch_train_images_per_s'])} "
        f"| {f(r['train_ratio'])}x | {f(r['jax_infer_images_per_s'])} "
        f"| {f(r['torch_infer_images_per_s'])} | {f(r['infer_ratio'])}x | {f(r['compile_s'], 1)} |")
  return "\n".join(lines)


def _define_flags():
  from absl import flags

  flags.DEFINE_list("widths", ["16", "64"], "U-Net widths (channels of the first stage).")
  flags.DEFINE_integer("image_size", 128, "Square input size.")
  flags.DEFINE_integer("batch_size", 4, "Batch size.")
  flags.DEFINE_integer("steps", 10, "Calls per timed repeat.")
  flags.DEFINE_integer("repeats", 5, "Timed repeats (the median is reported).")
  flags.DEFINE_multi_string("set", [], "Extra busjax config override key=value (e.g. a dtype).")
  flags.DEFINE_string("results", os.path.join("bench_results", "vs_pytorch.jsonl"),
                      "JSONL to append rows to.")


def main(argv):
  from absl import flags, logging

  from benchmarks import speed

  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  have_torch = torch_available()
  if not have_torch:
    print("[vs_pytorch] torch is not installed: PyTorch side skipped "
          "(pip install torch; it is not a busjax dependency)", file=sys.stderr)
  rows = []
  for w in map(int, f.widths):
    torch_row = (run_torch_peer(w, f.image_size, f.batch_size, f.steps, f.repeats)
                 if have_torch else None)
    cfg = common.build_config("unet", overrides=[f"model.width={w}", *PEER_OVERRIDES, *f.set],
                              image_size=f.image_size, batch_size=f.batch_size)
    row = common.append_row(f.results, compare_row(speed.measure(cfg, steps=f.steps,
                                                                 repeats=f.repeats), torch_row, w))
    rows.append(row)
    print(json.dumps(row), flush=True)
  print("\n" + table(rows))
  print(f"\n[vs_pytorch] {len(rows)} rows appended to {f.results}", file=sys.stderr)


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
