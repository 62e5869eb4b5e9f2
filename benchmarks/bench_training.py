"""Training step: the `torch_model` asset through Dagster on each device, against the same training called directly.

Baseline: `train_net` (the pure function the asset wraps) on the same training
set, same config, same device, in the same process. The difference is what the
asset adds: reading the training set through the IO manager, evaluation and
plots, storing the weights and the drift reference, registering the version.

    python -m benchmarks.bench_training                       # demo training set, every device torch sees
    python -m benchmarks.bench_training --training-set PATH --devices cpu,cuda

A GPU node proves the CUDA path here: the asset's `device` metadata must read
`cuda` and the test ROC-AUC must match the CPU run's within noise.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import Timing, machine, table


def _direct(training_set_path: Path, device: str, batch_size: int) -> tuple[float, int]:
    import polars as pl

    from lib.torch_net import TorchTrainConfig, train_net
    from lib.training import feature_matrix

    frame = pl.read_parquet(training_set_path)
    train, valid = (frame.filter(pl.col("split") == s) for s in ("train", "valid"))
    t0 = time.perf_counter()
    net = train_net(
        feature_matrix(train),
        train["churned"].to_numpy(),
        feature_matrix(valid),
        valid["churned"].to_numpy(),
        TorchTrainConfig(device=device, batch_size=batch_size),
    )
    return time.perf_counter() - t0, net.best_epoch


def _asset(training_set_path: Path, device: str, batch_size: int) -> tuple[float, dict]:
    import dagster as dg

    from ml_assets.assets.models import torch_model
    from ml_assets.assets.training_set import training_set
    from resources import ArtifactStore, Lake, LakeIOManager, ModelRegistry

    root = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        (root / "lake").mkdir()
        shutil.copy(training_set_path, root / "lake" / "training_set.parquet")
        lake = Lake(root=str(root / "lake"))
        t0 = time.perf_counter()
        result = dg.materialize(
            [training_set, torch_model],
            selection=[torch_model],
            resources={
                "io_manager": LakeIOManager(lake=lake),
                "lake": lake,
                "artifacts": ArtifactStore(root=str(root / "artifacts")),
                "registry": ModelRegistry(url=f"sqlite:///{root / 'registry.sqlite'}"),
            },
            run_config={"ops": {"torch_model": {"config": {"device": device, "batch_size": batch_size}}}},
            instance=dg.DagsterInstance.ephemeral(),
        )
        seconds = time.perf_counter() - t0
        meta = result.asset_materializations_for_node("torch_model")[0].metadata
        wanted = (
            "device",
            "device_name",
            "torch_version",
            "best_epoch",
            "epochs_run",
            "train_seconds",
            "roc_auc",
            "train_rows",
            "model_version",
        )
        return seconds, {k: getattr(v, "value", v) for k, v in meta.items() if k in wanted}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-set", type=Path, default=Path(".data/lake/training_set.parquet"))
    parser.add_argument("--devices", default="auto", help="comma list of cpu,cuda; auto = cpu plus cuda when torch sees one")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.training_set.exists():
        raise SystemExit(f"{args.training_set} does not exist: run `make demo` first or pass --training-set")

    import torch

    # The asset pins torch to 2 threads (the steps share 2 cores); the direct baseline does the same.
    torch.set_num_threads(2)
    devices = (
        ["cpu", "cuda"]
        if args.devices == "auto" and torch.cuda.is_available()
        else ["cpu"]
        if args.devices == "auto"
        else args.devices.split(",")
    )
    if "cuda" in devices:
        print(f"CUDA device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    rows, notes = [], []
    for device in devices:
        direct = Timing(f"train_net direct, {device}", [])
        asset = Timing(f"torch_model asset via Dagster, {device}", [])
        for _ in range(args.repeat):
            seconds, best = _direct(args.training_set, device, args.batch_size)
            direct.samples.append(seconds)
            seconds, meta = _asset(args.training_set, device, args.batch_size)
            asset.samples.append(seconds)
        notes.append(f"{device}: direct best epoch {best}; asset metadata {meta}")
        rows += [direct.row(), asset.row(direct)]
    out = table(f"Training: PyTorch network ({args.training_set})", rows) + "\n\n" + "\n".join(notes) + "\n\n" + machine()
    print(out)
    return out


if __name__ == "__main__":
    main()
