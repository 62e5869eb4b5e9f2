"""A PyTorch network for the tabular churn features: training, safe serialization, ONNX export (framework-free).

The input transform (signed log1p, then standardization with statistics
fitted on the training split) lives inside the network as buffers, so it is
saved with the weights and exported into the ONNX graph: serving cannot apply
a different normalization than training did.

The network's forward pass returns the same two outputs as the LightGBM ONNX
graph (`label`, `probabilities` as an [n, 2] tensor), so batch scoring and the
registry treat both model kinds alike.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lib.settings import set_library_defaults

if TYPE_CHECKING:
    import numpy as np
    import torch

ONNX_INPUT_NAME = "features"
ONNX_OUTPUT_NAMES = ("label", "probabilities")


@dataclass(frozen=True)
class TorchTrainConfig:
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 60
    patience: int = 6
    seed: int = 17
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_auc: float
    seconds: float


@dataclass
class TrainedNet:
    state: bytes  # torch.save of the state dict: tensors only, loadable with weights_only=True
    architecture: dict[str, Any]
    device: str
    best_epoch: int
    history: list[EpochLog] = field(repr=False)


def select_device(preference: str, cuda_available: bool | None = None) -> str:
    """`cuda` when asked for or when `auto` finds a GPU, `cpu` otherwise; asking for a missing GPU is an error."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {preference!r}")
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if preference == "cuda" and not cuda_available:
        raise RuntimeError("device=cuda was requested but torch sees no CUDA device on this node; use device=auto or cpu")
    if preference == "cpu":
        return "cpu"
    return "cuda" if cuda_available else "cpu"


def _module_class():
    import torch
    from torch import nn

    class ChurnNet(nn.Module):
        center: torch.Tensor
        scale: torch.Tensor

        def __init__(self, n_features: int, hidden: tuple[int, ...], dropout: float) -> None:
            super().__init__()
            self.register_buffer("center", torch.zeros(n_features))
            self.register_buffer("scale", torch.ones(n_features))
            layers: list[nn.Module] = []
            width = n_features
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
                width = h
            layers.append(nn.Linear(width, 1))
            self.body = nn.Sequential(*layers)

        def logits(self, x: torch.Tensor) -> torch.Tensor:
            # Spend and counts are heavy-tailed; a signed log keeps one big
            # customer from dominating the standardized scale.
            z = torch.sign(x) * torch.log1p(torch.abs(x))
            return self.body((z - self.center) / self.scale).squeeze(-1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            p = torch.sigmoid(self.logits(x))
            return (p > 0.5).to(torch.int64), torch.stack([1.0 - p, p], dim=1)

    return ChurnNet


def build_net(architecture: dict[str, Any]) -> Any:
    """A ChurnNet (its class is built when torch is first imported, so its type is not nameable here)."""
    cls = _module_class()
    return cls(int(architecture["n_features"]), tuple(architecture["hidden"]), float(architecture["dropout"]))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    # cuBLAS is only deterministic with a fixed workspace; it must be set before
    # the first CUDA matmul, so set it here rather than rely on the pod spec.
    set_library_defaults({"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    # Same data, same seed, same weights: required for reproducible registry versions.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def train_net(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    config: TorchTrainConfig,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainedNet:
    """Train with AdamW on binary cross-entropy; keep the weights of the epoch with the best validation log loss."""
    import time

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    seed_everything(config.seed)
    device = select_device(config.device)
    architecture = {"n_features": int(x_train.shape[1]), "hidden": list(config.hidden), "dropout": config.dropout}
    net = build_net(architecture)
    with torch.no_grad():
        z = torch.from_numpy(x_train.astype(np.float32))
        z = torch.sign(z) * torch.log1p(torch.abs(z))
        net.center.copy_(z.mean(dim=0))
        # A constant column would divide by zero; it carries no signal, so scale it by 1.
        std = z.std(dim=0)
        net.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    net.to(device)

    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.float32)).to(device)
    xv = torch.from_numpy(np.ascontiguousarray(x_valid, dtype=np.float32)).to(device)
    yv = torch.from_numpy(np.asarray(y_valid, dtype=np.float32)).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator(device="cpu").manual_seed(config.seed)

    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    history: list[EpochLog] = []
    for epoch in range(1, config.max_epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(xt.shape[0], generator=generator).to(device)
        total = 0.0
        for start in range(0, xt.shape[0], config.batch_size):
            idx = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net.logits(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.shape[0]
        net.eval()
        with torch.no_grad():
            logits = net.logits(xv)
            valid_loss = float(loss_fn(logits, yv))
            scores = torch.sigmoid(logits).cpu().numpy()
        entry = EpochLog(epoch, total / xt.shape[0], valid_loss, float(roc_auc_score(y_valid, scores)), time.perf_counter() - t0)
        history.append(entry)
        if on_epoch:
            on_epoch(entry)
        if valid_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = valid_loss, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is None:  # max_epochs >= 1 is enforced by the config; this guards a refactor, and survives python -O
        raise RuntimeError("train_net: no epoch ran")
    return TrainedNet(state=state_bytes(best_state), architecture=architecture, device=device, best_epoch=best_epoch, history=history)


def state_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_net(state: bytes, architecture: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network from verified bytes; weights_only=True refuses anything but tensors."""
    import torch

    net = build_net(architecture)
    net.load_state_dict(torch.load(io.BytesIO(state), map_location="cpu", weights_only=True))
    return net.eval()


def predict_proba(net: torch.nn.Module, features: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """P(churn) from the native network on the CPU, float32 inputs as serving receives them."""
    import numpy as np
    import torch

    net = net.to("cpu").eval()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            out.append(net(x[start : start + batch_size])[1][:, 1].numpy())
    return np.concatenate(out).astype(np.float64) if out else np.empty(0)


def net_to_onnx(net: torch.nn.Module, n_features: int) -> bytes:
    """Export with torch.export (the current exporter) and a dynamic batch dimension; the graph passes onnx.checker."""
    import contextlib
    import logging
    import warnings

    import onnx
    import torch

    # It warns once per torchvision operator it cannot register; this network uses none.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    example = (torch.zeros(4, n_features, dtype=torch.float32),)
    # The exporter narrates its steps on stdout; the run log has what matters.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net.to("cpu").eval(),
            example,
            input_names=[ONNX_INPUT_NAME],
            output_names=list(ONNX_OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=18,
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
