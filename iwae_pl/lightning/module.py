"""IWAEModule: the thin LightningModule around the network and an objective.

It owns no math: the network gives log-weights, the objective reduces them, ``log_likelihood`` gives
L_k. What it adds is configuration (everything is a constructor argument, so LightningCLI/YAML set
it), the optimizer and schedule, and metric logging under ``train/``, ``val/`` and ``test/``.

Callbacks talk to it through:
    warmup_beta                 the warm-up temperature on the latent terms (training only)
    net                         the IWAENetwork (posterior means, samples, decoding)
    objective                   the Objective (sample shape, bound)
    eval_log_weights(x, index)  seeded log-weights of a batch at beta = 1, [M, K, B]
    training_step outputs       {"loss", "log_w": [M, K, B] detached log-weights of the batch}

Under DDP each process draws its own training noise (stream ``train_noise`` of the run's seed, keyed by
rank, epoch and batch: reproducible, different per rank and per epoch), ``train/bound`` is averaged
over processes, evaluation statistics are reduced by torchmetrics, and ``predict`` gathers the
per-point L_k of all processes into one CSV file written by rank 0.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Literal, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import MeanMetric, SumMetric

from .. import rng
from ..errors import ConfigError, check_float, check_int
from ..model.likelihood import log_likelihood
from ..model.log_weights import LogWeights
from ..model.network import BURDA_1_LAYER, IWAENetwork, LayerSpec, as_layer_specs
from ..model.noise import indexed_normal
from ..model.objectives import EstimatorName, ObjectiveName, make_objective
from ..model.schedules import BurdaSchedule
from .metrics import PerPoint

PREDICTIONS_FILE = "predictions.csv"  # predict's per-point L_k, in the run directory


def logger_writes_this_step(trainer) -> bool:
    """Whether the loggers will write this training step's metrics (every ``log_every_n_steps``).

    Lightning hands a step's logged values to the loggers only on these steps (and when training is
    about to stop), so logging only then writes the same metrics for less per-step work; the progress
    bar and ``callback_metrics`` update on these steps. Call it during a training step or batch hook.
    """
    if trainer is None:  # outside a Trainer self.log does nothing anyway
        return False
    every = trainer.log_every_n_steps
    if not every:
        return False
    return (trainer.global_step + 1) % every == 0 or trainer.should_stop


def adam(param_groups, **settings) -> torch.optim.Adam:
    """torch.optim.Adam, fused (one kernel over all parameters) where torch has it: CPU and CUDA tensors
    from torch 2.4. The same update rule (tests/test_fast_paths.py); the gain is in benchmarks/README.md."""
    groups = [dict(g, params=list(g["params"])) for g in param_groups]
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = torch.__version__ >= "2.4" and devices <= {"cpu", "cuda"} and bool(devices)
    return torch.optim.Adam(groups, fused=fused or None, **settings)


class IWAEModule(pl.LightningModule):
    """Train and evaluate a VAE / IWAE / MIWAE / CIWAE / PIWAE / VR model.

    Args:
        input_dim: Visible units D; the CLI links it from the dataset (``data.input_dim``).
        layers: Stochastic layers bottom-up, each ``{latent, hidden, activation}``; the default is
            Burda's 1-layer net 784-200-200-50.
        std: Gaussian std parameterization: ``exp`` of a linear layer (the original) or ``softplus``.
        objective: Training objective: ``vae``, ``iwae``, ``miwae``, ``ciwae``, ``piwae`` or ``vr``.
        M: Outer samples, averaged outside the log (1 for ``vae`` and ``iwae``).
        K: Inner samples, averaged inside the log (the IWAE k).
        beta: CIWAE's mixing weight in [0, 1] (ciwae only); null means 0.5.
        alpha: Renyi alpha of the VR bound (vr only); null means 0.5.
        estimator: Encoder gradient estimator: ``reparam``, ``stl`` or ``dreg``.
        warmup_beta: Starting warm-up temperature on the latent terms (BetaWarmup changes it).
        lr: Adam learning rate (the first stage's rate under the ``burda`` schedule).
        adam_betas: Adam's (beta1, beta2).
        adam_eps: Adam's epsilon (1e-4 as in Burda et al.).
        lr_schedule: ``constant``, or ``burda``: stage i = 0..7 runs 3^i epochs at lr * 10^(-i/7).
        init_visible_bias: Set the pixel bias to logit(training pixel mean) before fitting.
        val_k: Samples per point of ``val/nll`` = -L_k on the validation set (0 turns it off).
        test_k: Samples per point of ``test/nll`` and ``predict`` (5000 in the papers; 0 turns
            ``test/nll`` off; ``predict`` needs >= 1).
        eval_seed: Seed of the per-point evaluation noise (the same points get the same noise).
        eval_chunk: Samples per point per forward pass in L_k; null picks one that bounds memory.

    Evaluation metrics are means over *all* points: one non-finite point makes the metric NaN (never a
    mean over the finite ones); ``nonfinite_points(stage)`` counts such points per metric.
    """

    def __init__(
        self,
        input_dim: int = 784,
        layers: Sequence[LayerSpec] = BURDA_1_LAYER,
        std: Literal["exp", "softplus"] = "exp",
        objective: ObjectiveName = "iwae",
        M: int = 1,
        K: int = 5,
        beta: float | None = None,
        alpha: float | None = None,
        estimator: EstimatorName = "reparam",
        warmup_beta: float = 1.0,
        lr: float = 1e-3,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-4,
        lr_schedule: Literal["constant", "burda"] = "constant",
        init_visible_bias: bool = True,
        val_k: int = 100,
        test_k: int = 5000,
        eval_seed: int = 0,
        eval_chunk: int | None = None,
    ):
        super().__init__()
        _check_settings(lr=lr, adam_betas=adam_betas, adam_eps=adam_eps, warmup_beta=warmup_beta, val_k=val_k,
                        test_k=test_k, eval_seed=eval_seed, eval_chunk=eval_chunk, init_visible_bias=init_visible_bias)
        # Plain dicts in hparams: checkpoints load with torch.load(weights_only=True) and print as YAML.
        layers = [asdict(s) if isinstance(s, LayerSpec) else dict(s) for s in as_layer_specs(layers)]
        self.save_hyperparameters()
        self.net = IWAENetwork(input_dim, layers, std)
        self.objective = make_objective(objective, M, K, estimator, beta, alpha)
        self.warmup_beta = float(warmup_beta)
        # float64 sums: a 10k-point mean of values near -100 keeps ~1e-10 relative precision.
        # nan_strategy="disable": a NaN point makes the mean NaN (torchmetrics' default drops it with a warning).
        self.metrics = torch.nn.ModuleDict({f"{stage}_{name}": MeanMetric(nan_strategy="disable").set_dtype(torch.float64)
                                            for stage in ("val", "test") for name in ("bound", "nll")})
        # Counts of non-finite points, summed over processes like the means: under DDP every rank sees
        # the same total and stops at the same validation (a rank stopping alone leaves the others waiting).
        self.nonfinite = torch.nn.ModuleDict({f"{stage}_{name}": SumMetric(nan_strategy="disable")
                                              for stage in ("val", "test") for name in ("bound", "nll")})
        self.predictions = PerPoint()
        self._noise_seed: int | None = None  # the run's seed for the training noise, read at fit start
        self._noise_generator: torch.Generator | None = None

    # --- hooks ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Runs before a checkpoint is restored, so a resumed run keeps its trained bias.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and self.hparams.init_visible_bias and hasattr(datamodule, "train_mean"):
            self.net.set_visible_bias(datamodule.train_mean())

    def configure_optimizers(self):
        groups = [{"params": self.net.encoder.parameters(), "name": "encoder"},
                  {"params": self.net.decoder.parameters(), "name": "decoder"}]
        hp = self.hparams
        optimizer = adam(groups, lr=hp.lr, betas=tuple(hp.adam_betas), eps=hp.adam_eps)
        if hp.lr_schedule == "constant":
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": BurdaSchedule(optimizer), "interval": "epoch"}}

    def on_fit_start(self) -> None:
        # torch's initial seed is the run's seed (seed_everything sets it alike in every process).
        self._noise_seed = torch.initial_seed()
        self._noise_generator = torch.Generator(device=self.device)

    def on_fit_end(self) -> None:
        self._noise_generator = None  # a Generator does not belong in a pickled or copied module

    def training_noise(self, x: Tensor, batch_idx: int) -> list[Tensor] | None:
        """This batch's training noise per layer, [M, K, B, d_l], from stream ``train_noise`` keyed by
        (rank, epoch, batch): independent across processes, reproducible, fresh every epoch. None
        outside ``fit`` (the network then draws from torch's global RNG)."""
        if self._noise_generator is None or self._trainer is None:
            return None
        trainer = self.trainer
        seed = rng.stream_seed(self._noise_seed, "train_noise", trainer.global_rank, trainer.current_epoch,
                               batch_idx)
        self._noise_generator.manual_seed(seed)
        return self.net.draw_noise(x, self.objective.sample_shape, self._noise_generator)

    # --- the steps --------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, _ = batch
        objective = self.objective
        lw = objective.log_weights(self.net, x, beta=self.warmup_beta, eps=self.training_noise(x, batch_idx))
        bound, surrogate = objective(lw)
        loss = -surrogate.mean()
        warm = self.warmup_beta != 1.0  # report the true bound (beta = 1) even while warming up
        log_w = (lw.at_beta(1.0) if warm else lw.value).detach()  # every step: the ESS callback reads it
        if logger_writes_this_step(self._trainer):
            self.log("train/bound", (objective.bound(log_w) if warm else bound).detach().mean(), prog_bar=True,
                     sync_dist=True)  # the mean over processes (equal batch sizes under DDP)
        return {"loss": loss, "log_w": log_w}

    def eval_log_weights(self, x: Tensor, index: Tensor, seed: int | None = None) -> LogWeights:
        """Log-weights of the training objective's sample shape at beta = 1, from per-point noise."""
        M, K = self.objective.sample_shape
        seed = self.hparams.eval_seed if seed is None else seed
        eps = indexed_normal(seed, index, 0, M * K, self.net.latent_sizes, device=x.device, dtype=x.dtype,
                             stream="bound_noise")
        return self.net.log_weights(x, (M, K), eps=[e.view(M, K, *e.shape[1:]) for e in eps])

    def _evaluate(self, stage: str, batch: tuple[Tensor, Tensor], k: int) -> None:
        x, index = batch
        self._update(stage, "bound", self.objective.bound(self.eval_log_weights(x, index).value))
        self.log(f"{stage}/bound", self.metrics[f"{stage}_bound"], prog_bar=stage == "val")
        if k > 0:
            self._update(stage, "nll", -self.log_likelihood(x, index, k))
            self.log(f"{stage}/nll", self.metrics[f"{stage}_nll"], prog_bar=True)

    def _update(self, stage: str, name: str, values: Tensor) -> None:
        """Add per-point values [B] to the stage's metric and count the non-finite ones (no host sync)."""
        self.nonfinite[f"{stage}_{name}"].update((~torch.isfinite(values)).sum())
        self.metrics[f"{stage}_{name}"].update(values)

    def nonfinite_points(self, stage: str) -> dict[str, int]:
        """{metric: number of points with a non-finite value} of the last ``stage`` epoch, over all
        processes (a collective under DDP: every process calls it, as the callers do)."""
        with warnings.catch_warnings():  # a metric without updates (nll at k = 0) still joins the sum: 0
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
            counts = {name: int(metric.compute()) for name, metric in self._stage_counts(stage)}
        return {name.replace("_", "/", 1): n for name, n in counts.items() if n > 0}

    def on_validation_epoch_start(self) -> None:
        self._reset_nonfinite("val")

    def on_test_epoch_start(self) -> None:
        self._reset_nonfinite("test")

    def _reset_nonfinite(self, stage: str) -> None:
        for _, metric in self._stage_counts(stage):
            metric.reset()

    def _stage_counts(self, stage: str) -> list[tuple[str, SumMetric]]:
        return [(name, metric) for name, metric in self.nonfinite.items() if name.startswith(f"{stage}_")]

    def on_predict_start(self) -> None:
        check_int("model.test_k (samples per point of predict's L_k)", self.hparams.test_k, 1)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Optimisation settings of this run win over the checkpoint's: Lightning restores the optimizer's
        param groups (lr, betas, eps) and the schedule's base lrs from the file, so they are rewritten
        here from ``hparams`` (lr scaled, so that a schedule keeps its position). Equal settings leave
        the checkpoint's values bit for bit."""
        old = checkpoint.get("hyper_parameters", {})
        hp = self.hparams
        scale = hp.lr / old["lr"] if old.get("lr") else 1.0
        for state in checkpoint.get("optimizer_states", []):
            for group in state.get("param_groups", []):
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] = group[key] * scale
                group["betas"], group["eps"] = tuple(hp.adam_betas), hp.adam_eps
        for state in checkpoint.get("lr_schedulers", []):
            for key in ("base_lrs", "_last_lr"):
                if key in state:
                    state[key] = [lr * scale for lr in state[key]]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch, self.hparams.val_k)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch, self.hparams.test_k)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Per-point L_{test_k}: {"index": [B], "log_likelihood": [B]} (also gathered for the CSV file)."""
        x, index = batch
        ll = self.log_likelihood(x, index, self.hparams.test_k)
        self.predictions.update(index, ll)
        return {"index": index, "log_likelihood": ll}

    def on_predict_epoch_start(self) -> None:
        self.predictions.reset()

    def on_predict_epoch_end(self) -> None:
        """Gather every process's per-point L_k (a collective) and write them on rank 0, in index order,
        to ``<run dir>/predictions.csv`` (columns index, log_likelihood)."""
        index, values = self.predictions.compute()
        self.predictions.reset()
        trainer = self.trainer
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # log_dir is a collective: every rank reads it
        if trainer.is_global_zero:
            path = write_predictions(run_dir / PREDICTIONS_FILE, index, values)
            print(f"predict: wrote {len(index)} per-point L_{self.hparams.test_k} values to {path}", flush=True)

    def log_likelihood(self, x: Tensor, index: Tensor, k: int) -> Tensor:
        """L_k per point [B] with the module's evaluation seed and chunk."""
        return log_likelihood(self.net, x, index, k, seed=self.hparams.eval_seed, chunk=self.hparams.eval_chunk)


def _check_settings(lr, adam_betas, adam_eps, warmup_beta, val_k, test_k, eval_seed, eval_chunk,
                    init_visible_bias) -> None:
    """One-line ConfigError for a setting of IWAEModule that makes no sense (before anything is built)."""
    check_float("model.lr", lr, 0.0, low_open=True)
    betas = list(adam_betas) if isinstance(adam_betas, (list, tuple)) else None
    if betas is None or len(betas) != 2:
        raise ConfigError(f"model.adam_betas must be two numbers in [0, 1), got {adam_betas!r}")
    for i, b in enumerate(betas):
        check_float(f"model.adam_betas[{i}]", b, 0.0, 1.0, high_open=True)
    check_float("model.adam_eps", adam_eps, 0.0)
    check_float("model.warmup_beta", warmup_beta, 0.0)
    check_int("model.val_k (0 disables val/nll)", val_k, 0)
    check_int("model.test_k (0 disables test/nll)", test_k, 0)
    check_int("model.eval_seed", eval_seed, 0)
    if eval_chunk is not None:
        check_int("model.eval_chunk (None: automatic)", eval_chunk, 1)
    if not isinstance(init_visible_bias, bool):
        raise ConfigError(f"model.init_visible_bias must be true or false, got {init_visible_bias!r}")


def write_predictions(path: Path, index: Tensor, values: Tensor) -> Path:
    """Write ``index,log_likelihood`` rows (index [N], values [N]) as CSV, full float64 precision."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index,log_likelihood"] + [f"{i},{v!r}" for i, v in zip(index.tolist(), values.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path
