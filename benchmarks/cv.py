"""Cross-validation benchmark: every model on every fold, one JSON row per cell.

  python -m benchmarks.cv --models=unet,stan,rca_iunet --dataset=busi --num_folds=5
  python -m benchmarks.cv --models=unet --dataset=busbra --folds=0,1 --schedule=paper
  python -m benchmarks.cv --models=unet,stan --train_dataset=busi --test_datasets=busbra,udiat_b
  python -m benchmarks.cv --models=unet --seeds=0,1,2 --num_folds=5 --folds=0   # repeated draws

Each cell (model, dataset, fold) is trained and evaluated by
``busjax.trainers.run``, the code path of ``python -m busjax.main`` (same
config order: the model's ``--schedule`` profile, then the flags, then
``--set``), in ``<workdir>/<dataset>/<model>/fold_<k>/``. One row per cell is
appended to the results JSONL (``--results``; default
``<workdir>/benchmarks/cv.jsonl``) with an fsync, and a cell whose row is
already there (same kind, model, datasets, fold and config hash) is skipped:
rerunning a killed benchmark continues where it stopped, and the trainer's
checkpoints resume a half-trained cell.

Cross-dataset evaluation (as in the large pre-trained model paper): with
``--train_dataset=A --test_datasets=B,C`` each model is cross-validated on A
(the same ``cv`` rows as ``--dataset=A``), then the best checkpoint of every
fold is evaluated, without fine-tuning, on the whole of B and of C (every
example is a test example) through ``busjax.evaluate.evaluate_run``; those
rows have ``kind="cross"`` and their ``eval.json`` is in
``<run>/cross/<test dataset>/``.

Repeated cross-validation: ``--seeds=0,1,2`` runs every cell once per seed
(the seed draws the folds, the initialisation, the data order and the
augmentation), each seed's runs in ``<workdir>/seed_<s>/``; every row
carries its ``seed`` and a ``series_hash`` (the config hash without fold and
seed) by which ``benchmarks.summarize`` pools the runs of all seeds. One run
of a config on one split is a draw: on the synthetic data two draws of the
default U-Net on the same split differed by 0.066 DSC (README "Results").

``--set key=value`` applies to every model; ``--set model:key=value`` to one
(e.g. ``--set unet:model.width=8 --set rca_iunet:model.base_width=8``).
Render tables and plots with ``python -m benchmarks.summarize RESULTS``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from benchmarks import common

CV = "cv"
CROSS = "cross"


@dataclasses.dataclass(frozen=True)
class Cell:
  """One benchmark cell: ``model`` trained on fold ``fold`` of ``train_dataset``,
  tested on that fold's test split (``kind="cv"``) or on the whole of
  ``test_dataset`` (``kind="cross"``). ``seed``: set when the benchmark repeats
  seeds (``--seeds``); the run then lives under ``<workdir>/seed_<seed>/``."""
  kind: str
  model: str
  train_dataset: str
  test_dataset: str
  fold: int
  seed: int | None = None

  def describe(self) -> str:
    where = f"fold {self.fold}" + ("" if self.seed is None else f" seed {self.seed}")
    if self.kind == CV:
      return f"{self.model} {self.train_dataset} {where}"
    return f"{self.model} {self.train_dataset}->{self.test_dataset} {where}"

  def workdir(self, root: str) -> str:
    """The root of this cell's run folder: ``root``, or ``root/seed_<seed>``."""
    return root if self.seed is None else os.path.join(root, f"seed_{self.seed}")


def row_key(row: Mapping[str, Any]) -> tuple:
  """What identifies a finished cell in a results file."""
  return (row.get("kind"), row.get("model"), row.get("train_dataset"), row.get("test_dataset"),
          int(row.get("fold", -1)), row.get("config_hash"))


def cell_key(cell: Cell, config_hash: str) -> tuple:
  return (cell.kind, cell.model, cell.train_dataset, cell.test_dataset, cell.fold, config_hash)


# ----------------------------------------------------------------------------- data


class DataCache:
  """Opens each dataset once and reads it once per image size / fold setting.

  Data paths stay out of the configs (and so out of the config hash: moving
  the data does not rerun finished cells); the runs receive the loaded data.

  Args:
    sources: optional ``{dataset name: data source}`` used instead of opening
      the TFDS builder (tests pass in-memory fake sources).
    data_dir: the TFDS data_dir (None: ``~/tensorflow_datasets``).
    manual_dirs: ``{dataset name: manual_dir}`` for datasets not built yet.
  """

  def __init__(self, sources: Mapping[str, Any] | None = None, data_dir: str | None = None,
               manual_dirs: Mapping[str, str] | None = None):
    self._given = dict(sources or {})
    self._data_dir = data_dir or None
    self._manual_dirs = dict(manual_dirs or {})
    self._sources: dict[str, Any] = {}
    self._data: dict[tuple, Any] = {}

  def source(self, dataset: str) -> Any:
    if dataset in self._given:
      return self._given[dataset]
    if dataset not in self._sources:
      from busjax.data import pipeline
      manual = self._manual_dirs.get(dataset, self._manual_dirs.get(dataset.split("/")[0]))
      self._sources[dataset] = pipeline.open_source(dataset, self._data_dir, manual)
    return self._sources[dataset]

  def data(self, cfg) -> Any:
    """The :class:`SegmentationData` of ``cfg.dataset`` at ``cfg.image_size``."""
    key = (cfg.dataset, cfg.image_size, cfg.num_folds, cfg.seed)
    if key not in self._data:
      from busjax.data import pipeline
      self._data[key] = pipeline.load_data(cfg, source=self.source(cfg.dataset))
    return self._data[key]


# ----------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass
class InferenceVariables:
  """What ``predict(params, batch_stats, images)`` needs (``.params``, ``.batch_stats``)."""
  params: Any
  batch_stats: Any


def restore_best_variables(cfg, rdir: str) -> InferenceVariables:
  """The registered module's variables from ``<rdir>/checkpoints/best``.

  Restores the saved state pytree as it is (whatever its trainer: a
  supervised TrainState, or an adversarial state holding the generator's
  TrainState and the discriminators') and picks the subtree whose ``params``
  match the shapes of ``cfg``'s registered module (for adversarial models, the
  generator). Raises ``FileNotFoundError`` without a best checkpoint and
  ``ValueError`` when nothing in it fits the model.
  """
  import jax
  import jax.numpy as jnp
  import orbax.checkpoint as ocp

  from busjax import registry

  path = os.path.abspath(os.path.join(rdir, "checkpoints", "best"))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no best checkpoint under {path}: train this fold first")
  mgr = ocp.CheckpointManager(path)
  try:
    step = mgr.latest_step()
    if step is None:
      raise FileNotFoundError(f"no best checkpoint under {path}: train this fold first")
    got = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                    meta=ocp.args.JsonRestore()))
  finally:
    mgr.close()
  if got["meta"].get("model_name") != cfg.model_name:
    raise ValueError(f"checkpoint {path} was written by model {got['meta'].get('model_name')!r}, "
                     f"not {cfg.model_name!r}")
  model = registry.build_model(cfg)
  x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 1), jnp.float32)
  expected = jax.eval_shape(
      lambda r, x: model.init({"params": r, "dropout": r}, x, train=False), jax.random.key(0), x)

  def shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)

  want_params = shapes(expected["params"])
  want_stats = shapes(expected.get("batch_stats", {}))

  def search(node):
    if not isinstance(node, dict):
      return None
    if "params" in node and isinstance(node["params"], dict):
      try:
        ok = shapes(node["params"]) == want_params
        stats = node.get("batch_stats") or {}
        ok = ok and shapes(stats) == want_stats
      except (AttributeError, TypeError):  # leaves that are not arrays
        ok = False
      if ok:
        return InferenceVariables(node["params"], stats)
    for v in node.values():
      found = search(v)
      if found is not None:
        return found
    return None

  found = search(got["state"])
  if found is None:
    raise ValueError(f"checkpoint {path}: no parameters of the shapes of model {cfg.model_name!r} "
                     "with this config (another width or image size?)")
  return found


def inference_ms_per_image(cfg, variables, images, repeats: int = 10) -> float:
  """Median milliseconds per image of the jitted forward pass on one batch of
  ``cfg.batch_size`` images (first compile and warm-up excluded; the batch is
  on the device, so host transfer is not counted)."""
  import jax
  import numpy as np

  from busjax import registry
  from busjax.trainers import supervised

  predict = supervised.make_predict_fn(cfg, registry.build_model(cfg))
  b = cfg.batch_size
  batch = np.asarray(images[:b])
  if len(batch) < b:
    batch = np.concatenate([batch, np.zeros((b - len(batch),) + batch.shape[1:], batch.dtype)])
  x = jax.device_put(batch)
  run = lambda: jax.block_until_ready(predict(variables.params, variables.batch_stats, x))
  run()
  run()
  return 1000.0 * common.median_seconds(run, repeats) / b


# ----------------------------------------------------------------------------- rows


def _per_image_columns(per_image: list[dict]) -> dict[str, list]:
  return {k: [r.get(k) for r in per_image] for k in ("name", "label", "dice", "dice_incl", "small")}


def make_row(cell: Cell, cfg, result: dict, *, env: dict, params: int, wall_s: float,
             train_images: int, inference_ms: float, run_dir: str, resumed: bool) -> dict:
  """One results row from an ``eval.json`` dictionary and the cell's facts."""
  from busjax.trainers import common as trainer_common

  row = {
      "kind": cell.kind, "model": cell.model, "dataset": cell.train_dataset,
      "train_dataset": cell.train_dataset, "test_dataset": cell.test_dataset,
      "fold": cell.fold, "num_folds": cfg.num_folds, "seed": cfg.seed, "schedule": cfg.variant,
      "config_hash": trainer_common.config_hash(cfg),
      "experiment_hash": experiment_hash(cfg), "series_hash": series_hash(cfg),
      "image_size": cfg.image_size,
      "batch_size": cfg.batch_size, "epochs": cfg.epochs, "max_steps": cfg.max_steps,
      **env, "params": params, "wall_s": wall_s, "resumed": resumed,
      "train_images": train_images, "test_images": result["num_test_images"],
      "inference_ms_per_image": inference_ms,
      "summary": result["summary"], "small_tumour_summary": result["small_tumour_summary"],
  }
  for k in ("postprocessed_summary", "postprocessed_small_tumour_summary"):
    if k in result:
      row[k] = result[k]
  row["per_image"] = _per_image_columns(result["per_image"])
  if "postprocessed_per_image" in result:
    row["postprocessed_per_image"] = _per_image_columns(result["postprocessed_per_image"])
  row["run_dir"] = run_dir
  row["time"] = common.utc_now()
  return row


def _hash_without(cfg, *fields: str) -> str:
  """The config hash with ``fields`` blanked (set to -1)."""
  from busjax.trainers import common as trainer_common

  c = cfg.copy_and_resolve_references()
  for f in fields:
    c[f] = -1
  return trainer_common.config_hash(c)


def experiment_hash(cfg) -> str:
  """The config hash without the fold: equal for every fold of one experiment."""
  return _hash_without(cfg, "fold")


def series_hash(cfg) -> str:
  """The config hash without fold and seed: equal for every run of one
  experiment repeated over seeds (``benchmarks.summarize`` pools them by it)."""
  return _hash_without(cfg, "fold", "seed")


def _has_checkpoint(rdir: str) -> bool:
  latest = os.path.join(rdir, "checkpoints", "latest")
  return os.path.isdir(latest) and any(n.isdigit() for n in os.listdir(latest))


# ----------------------------------------------------------------------------- the benchmark


def plan_cells(models: Sequence[str], *, dataset: str, num_folds: int,
               folds: Sequence[int] | None = None, test_datasets: Sequence[str] = (),
               schedule: str = "default", epochs: int | None = None,
               image_size: int | None = None, batch_size: int | None = None,
               seed: int | None = None, seeds: Sequence[int] | None = None,
               overrides: Sequence[str] = ()) -> list[tuple]:
  """``[(cell, config, config hash)]`` in run order: for each model, seed (of
  ``seeds``, or the one ``seed``) and fold the cross-validation cell, then its
  cross-dataset cells. Raises ``KeyError`` / ``ValueError`` for unknown models,
  config fields or folds out of range, or both ``seed`` and ``seeds``."""
  from busjax.trainers import common as trainer_common

  common.check_models(models)
  folds = list(range(num_folds)) if folds is None else [int(f) for f in folds]
  bad = [f for f in folds if not 0 <= f < num_folds]
  if bad:
    raise ValueError(f"folds {bad} out of range for num_folds={num_folds}")
  if seeds is not None and seed is not None:
    raise ValueError("give seed or seeds, not both")
  if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
    raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
  plan = []
  for model in models:
    for s in ([seed] if seeds is None else [int(x) for x in seeds]):
      for fold in folds:
        cfg = common.build_config(model, schedule=schedule, overrides=overrides, dataset=dataset,
                                  fold=fold, num_folds=num_folds, epochs=epochs,
                                  image_size=image_size, batch_size=batch_size, seed=s)
        h = trainer_common.config_hash(cfg)
        cell_seed = None if seeds is None else cfg.seed
        plan.append((Cell(CV, model, dataset, dataset, fold, cell_seed), cfg, h))
        for td in test_datasets:
          if td != dataset:
            plan.append((Cell(CROSS, model, dataset, td, fold, cell_seed), cfg, h))
  return plan


def run_benchmark(models: Sequence[str], *, dataset: str, num_folds: int = 5,
                  folds: Sequence[int] | None = None, test_datasets: Sequence[str] = (),
                  schedule: str = "default", epochs: int | None = None,
                  image_size: int | None = None, batch_size: int | None = None,
                  seed: int | None = None, seeds: Sequence[int] | None = None,
                  overrides: Sequence[str] = (), workdir: str = "runs",
                  results: str | None = None, data_dir: str | None = None,
                  manual_dirs: Mapping[str, str] | None = None,
                  sources: Mapping[str, Any] | None = None, timing_repeats: int = 10,
                  quiet: bool = True, log: Callable[[str], None] = print) -> list[dict]:
  """Cross-validates ``models`` on ``dataset`` (and tests them on ``test_datasets``).

  Args:
    models: registered model names.
    dataset: the training dataset (TFDS name, or a key of ``sources``).
    num_folds: folds of the split; ``folds``: which to run (default all).
    test_datasets: other datasets to evaluate each fold's best checkpoint on
      (cross-dataset rows); empty for plain cross-validation.
    schedule, epochs, image_size, batch_size, seed, overrides: as in
      ``busjax.main`` (``overrides`` may carry ``model:`` prefixes).
    seeds: run every cell once per seed (instead of ``seed``), each seed's
      runs under ``<workdir>/seed_<s>/``.
    workdir: root of the run folders.
    results: the results JSONL (default ``<workdir>/benchmarks/cv.jsonl``).
    data_dir, manual_dirs: TFDS data_dir; ``{dataset: manual_dir}``.
    sources: ``{dataset: data source}`` instead of the TFDS builders (tests).
    timing_repeats: timed forward passes per cell for ``inference_ms_per_image``.
    quiet: silence the trainer's progress bar and tables.
    log: receives one progress line per cell.
  Returns:
    the rows written by this call (cells already in ``results`` are skipped).
  """
  import busjax.trainers as trainers
  from busjax import evaluate, registry
  from busjax.data import pipeline
  from busjax.trainers import common as trainer_common
  from busjax.trainers import supervised

  results = results_file(workdir, results)
  cache = DataCache(sources, data_dir, manual_dirs)
  plan = plan_cells(models, dataset=dataset, num_folds=num_folds, folds=folds,
                    test_datasets=test_datasets, schedule=schedule, epochs=epochs,
                    image_size=image_size, batch_size=batch_size, seed=seed, seeds=seeds,
                    overrides=overrides)
  done = {row_key(r) for r in common.read_rows(results)}
  todo = sum(cell_key(c, h) not in done for c, _, h in plan)
  log(f"[cv] {len(plan)} cells ({len(plan) - todo} already in {results}), {todo} to run")
  env = common.environment()
  params_cache: dict[str, int] = {}
  written: list[dict] = []
  ran, spent = 0, 0.0
  for i, (cell, cfg, h) in enumerate(plan, 1):
    head = f"[{i}/{len(plan)}] {cell.describe()}"
    if cell_key(cell, h) in done:
      log(f"{head}: in results, skipped")
      continue
    t0 = time.perf_counter()
    rdir = trainer_common.run_dir(cell.workdir(workdir), cfg)
    data = cache.data(cfg)
    parts = pipeline.fold_splits(data, cfg)
    if cell.kind == CV:
      resumed = _has_checkpoint(rdir)
      result = trainers.run(cfg, cell.workdir(workdir), data=data, quiet=quiet)
      variables = restore_best_variables(cfg, rdir)
      test_images = parts["test"].images
      out_dir = rdir
    else:
      resumed = False
      variables = restore_best_variables(cfg, rdir)
      test_cfg = cfg.copy_and_resolve_references()
      test_cfg.dataset = cell.test_dataset
      test_data = cache.data(test_cfg)
      predict = supervised.make_predict_fn(cfg, registry.build_model(cfg))
      out_dir = os.path.join(rdir, "cross", cell.test_dataset.replace("/", "__"))
      # A chosen post-processing is chosen on the training dataset's validation split.
      result = evaluate.evaluate_run(test_cfg, out_dir, variables, predict, test_data,
                                     validation=parts["validation"], quiet=quiet)
      test_images = test_data.images
    wall = time.perf_counter() - t0
    ms = inference_ms_per_image(cfg, variables, test_images, timing_repeats)
    if cell.model not in params_cache:
      params_cache[cell.model] = common.count_params(cfg)
    row = make_row(cell, cfg, result, env=env, params=params_cache[cell.model], wall_s=wall,
                   train_images=len(parts["train"].images), inference_ms=ms, run_dir=out_dir,
                   resumed=resumed)
    written.append(common.append_row(results, row))
    done.add(cell_key(cell, h))
    ran += 1
    spent += time.perf_counter() - t0
    left = todo - ran
    dice = result["summary"]["dice"]["mean"]
    log(f"{head}: DSC {dice:.4f} on {result['num_test_images']} images, {wall:.1f}s"
        f"{' (resumed)' if resumed else ''} | {left} left, ETA "
        f"{common.format_duration(spent / ran * left)}")
  return written


def results_file(workdir: str, results: str | None) -> str:
  """The results JSONL: ``results``, or ``<workdir>/benchmarks/cv.jsonl``."""
  return results or os.path.join(workdir, "benchmarks", "cv.jsonl")


def run_or_exit(models: Sequence[str], *, workdir: str, results: str | None = None,
                **kwargs) -> list[dict]:
  """:func:`run_benchmark` for the command line: a cell whose folder holds
  another run's checkpoint, or a NaN loss, ends it with the one-line message
  (exit code 1, no traceback) instead, as ``busjax.main`` does; the rows of the
  cells before it stay in the results file."""
  from busjax import checkpointing

  try:
    return run_benchmark(models, workdir=workdir, results=results, **kwargs)
  except (checkpointing.CheckpointMismatchError, FloatingPointError) as e:
    print(f"error: {e}\n(the rows of the cells finished before it stay in "
          f"{results_file(workdir, results)})", file=sys.stderr)
    sys.exit(1)


def parse_manual_dirs(items: Sequence[str], default_dataset: str) -> dict[str, str]:
  """``--manual_dir`` items: ``["busi=/data/BUSI", "/data/X"]`` ->
  ``{"busi": "/data/BUSI", default_dataset: "/data/X"}``."""
  out = {}
  for item in items:
    name, sep, path = item.partition("=")
    if sep and os.path.sep not in name:
      out[name] = path
    else:
      out[default_dataset] = item
  return out


# ----------------------------------------------------------------------------- command line


def _define_flags():
  from absl import flags

  flags.DEFINE_list("models", ["unet"], "Comma-separated model names.")
  flags.DEFINE_string("dataset", None, "Dataset to cross-validate on (default synthetic_bus).")
  flags.DEFINE_string("train_dataset", None,
                      "Cross-dataset mode: the training dataset (cross-validated as --dataset).")
  flags.DEFINE_list("test_datasets", [], "Cross-dataset mode: datasets evaluated whole.")
  flags.DEFINE_integer("num_folds", 5, "Number of cross-validation folds.")
  flags.DEFINE_list("folds", None, "Folds to run (default: all).")
  flags.DEFINE_enum("schedule", "default", ["default", "paper", "tiny"], "Config profile.")
  flags.DEFINE_integer("epochs", None, "Training epochs (default: the profile's).")
  flags.DEFINE_integer("image_size", None, "Square input size (default: the profile's).")
  flags.DEFINE_integer("batch_size", None, "Batch size (default: the profile's).")
  flags.DEFINE_integer("seed", None, "Seed (default: the profile's).")
  flags.DEFINE_list("seeds", None, "Repeat every cell once per seed (e.g. 0,1,2), each under "
                    "<workdir>/seed_<s>/; instead of --seed.")
  flags.DEFINE_multi_string("set", [], "Config override key=value or model:key=value.")
  flags.DEFINE_string("workdir", "runs", "Root folder of the run outputs.")
  flags.DEFINE_string("results", None, "Results JSONL (default <workdir>/benchmarks/cv.jsonl).")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_multi_string("manual_dir", [], "DATASET=PATH (or PATH for the training dataset).")
  flags.DEFINE_integer("timing_repeats", 10, "Timed forward passes per cell.")
  flags.DEFINE_bool("verbose", False, "Show the trainer's progress bars and tables.")


def main(argv):
  from absl import flags, logging

  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  if f.dataset and f.train_dataset:
    print("error: give --dataset or --train_dataset, not both", file=sys.stderr)
    sys.exit(2)
  if f.test_datasets and not f.train_dataset:
    print("error: --test_datasets needs --train_dataset", file=sys.stderr)
    sys.exit(2)
  dataset = f.train_dataset or f.dataset or "synthetic_bus"
  import tfds_builders
  for ds in [dataset, *f.test_datasets]:
    if ds.split("/")[0] not in tfds_builders.DATASETS:
      print(f"error: unknown dataset {ds!r}. Valid datasets: {', '.join(tfds_builders.DATASETS)}",
            file=sys.stderr)
      sys.exit(2)
  try:
    kwargs = dict(dataset=dataset, num_folds=f.num_folds,
                  folds=None if f.folds is None else [int(x) for x in f.folds],
                  test_datasets=f.test_datasets, schedule=f.schedule, epochs=f.epochs,
                  image_size=f.image_size, batch_size=f.batch_size, seed=f.seed,
                  seeds=None if f.seeds is None else [int(x) for x in f.seeds], overrides=f.set)
    plan_cells(f.models, **kwargs)  # unknown models, fields, folds: exit 2 before any work
  except (KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  run_or_exit(
      f.models, **kwargs, workdir=f.workdir, results=f.results, data_dir=f.data_dir,
      manual_dirs=parse_manual_dirs(f.manual_dir, dataset), timing_repeats=f.timing_repeats,
      quiet=not f.verbose, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
