"""The training loop: Tacotron2 on a text/mel corpus, validated, checkpointed, observable.

One :class:`Trainer` is one run in one run folder. It reports through the JSON
event lines of :mod:`train.tacotron2.events` (stdout) and a human log (stderr and
``RUN_DIR/train.log``), and it ends in one of three ways:

- ``done``: all epochs trained;
- ``stopped``: SIGTERM/SIGINT arrived; the current step finishes, ``last.pt`` is
  saved and the process exits 0 within seconds;
- ``diverged``: a loss became NaN/inf, or grew past ``max_loss_growth`` times the run's
  first training step's loss (a finite blow-up, e.g. of a far too high learning rate);
  the run ends with exit code :data:`train.tacotron2.events.EXIT_DIVERGED` and ``best.pt``
  is left as it was.

Resuming (``resume=CKPT``) restores model, optimizer, scheduler, RNG states and
the position, and continues at the batch after the last one trained (an epoch's
order is seeded, so the same), as an uninterrupted run would. A warm start
(``warm_start=CKPT``, :mod:`train.tacotron2.warm_start`) takes only a model's weights; a
resume wins over it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from train.tacotron2 import artifacts
from train.tacotron2.alignment import batch_alignment, mean_alignment
from train.tacotron2.checkpoint import (
    CheckpointError,
    load_resumable,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from train.tacotron2.data import Batch, DataError, make_loaders
from train.tacotron2.events import EXIT_DIVERGED, emit
from train.tacotron2.free_running import format_stop_metric, stop_metrics
from train.tacotron2.hparams import HParams
from train.tacotron2.loss import Tacotron2Loss
from train.tacotron2.model import Tacotron2
from train.tacotron2.schedules import LearningRateScheduler
from train.tacotron2.warm_start import warm_start_model

log = logging.getLogger("train")


class Diverged(Exception):
    """A non-finite loss, or one grown past ``max_loss_growth``; the message says which,
    its value and where."""


@dataclass
class Validation:
    loss: float
    mel_loss: float
    gate_loss: float
    guided_attention_loss: float
    attention_focus: float
    attention_progress: float
    attention_coverage: float
    alignment_score: float
    stop_rate: float | None  # None when no utterance is decoded free-running
    length_ratio: float | None


def select_device(choice: str) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but CUDA is not available")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    # Batches of the epoch in progress trained so far (0 between epochs). Checkpoints keep
    # it, so a resume goes on at the next batch: the epoch's order is seeded, hence the same.
    epoch_batches = 0

    def __init__(self, hp: HParams, data: Path, run_dir: Path, cache_dir: Path | None = None,
                 resume: Path | None = None, warm_start: Path | None = None,
                 ignore_layers: Sequence[str] = ()):
        self.hp = hp
        self.run_dir = run_dir
        self.resume = resume
        self.device = select_device(hp.device)
        self.amp = hp.amp and self.device.type == "cuda"
        self._stop_signal: int | None = None
        seed_everything(hp.seed)

        self.train_loader, self.val_loader, self.n_train, self.n_val = make_loaders(
            hp, data, cache_dir or run_dir / "mel_cache")
        if self.n_val == 0:
            raise DataError(f"{data}: no utterance left for validation; raise val_fraction "
                            f"(now {hp.val_fraction}) or add utterances")
        self.model = Tacotron2(hp).to(self.device)
        if warm_start and resume:
            log.info("resuming from %s: the warm start from %s is not applied", resume, warm_start)
        elif warm_start:
            warm_start_model(self.model, warm_start, ignore_layers)
        self.criterion = Tacotron2Loss(hp)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.learning_rate,
                                          weight_decay=hp.weight_decay, eps=hp.adam_eps)
        self.total_steps = hp.epochs * len(self.train_loader)
        self.scheduler = LearningRateScheduler(self.optimizer, hp, self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        self.epoch = 0  # completed epochs
        self.step = 0
        self.best_val_loss = math.inf
        self.seconds = 0.0
        self._train_losses: list[float] = []
        self._grad_norms: list[float] = []
        # The loss (mel + gate) of the run's first training step: max_loss_growth's yardstick.
        self.first_loss: float | None = None

    # --- public ------------------------------------------------------------------
    def run(self) -> int:
        """Train to the end, a stop signal or divergence; returns the exit code."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed_from = self._restore() if self.resume else None
        self._install_signal_handlers()
        log.info("checking %d utterances", self.n_train + self.n_val)
        self.train_loader.dataset.check()
        self.val_loader.dataset.check()
        emit("start", run_dir=str(self.run_dir), device=str(self.device), pid=os.getpid(),
             hparams=self.hp.to_dict(), n_train=self.n_train, n_val=self.n_val,
             epoch=self.epoch, step=self.step, resumed_from=resumed_from,
             threads=torch.get_num_threads())
        log.info("training on %s (%d threads): %d train / %d val utterances, %d parameters",
                 self.device, torch.get_num_threads(),
                 self.n_train, self.n_val, sum(p.numel() for p in self.model.parameters()))

        started = time.perf_counter()
        try:
            status, reason = self._train(started)
        except Diverged as exc:
            log.error("diverged: %s", exc)
            self._end("diverged", str(exc))
            return EXIT_DIVERGED
        # A stopped run exits at once: its caller may render its plots afterwards from
        # best.pt (python -m train.render), off the path between SIGTERM and exit.
        if self.hp.artifacts == "end" and status == "done":
            self._write_artifacts()
            self.seconds = time.perf_counter() - started  # the run's own work, reported
        self._end(status, reason)
        return 0

    # --- the loop ------------------------------------------------------------------
    def _train(self, started: float) -> tuple[str, str]:
        self.model.train()
        for epoch in range(self.epoch + 1, self.hp.epochs + 1):
            # A per-epoch seed makes the shuffle independent of where a run resumed; a
            # resumed epoch skips the batches it had trained (they are loaded, not trained).
            self.train_loader.generator.manual_seed(self.hp.seed + epoch)
            for batch in itertools.islice(self.train_loader, self.epoch_batches, None):
                self.train_step(batch.to(self.device))
                self.epoch_batches += 1
                self.seconds = time.perf_counter() - started
                if self._stop_signal is not None:
                    self._save("last", self.epoch)
                    return "stopped", f"signal {signal.Signals(self._stop_signal).name}"
                if self.hp.val_every_steps and self.step % self.hp.val_every_steps == 0:
                    self._validate_and_checkpoint(epoch, started, epoch_end=False)
            self.epoch, self.epoch_batches = epoch, 0
            # With step-based validation, the last epoch still ends with one, unless its
            # last step has just been validated.
            if not self.hp.val_every_steps or (epoch == self.hp.epochs and self._train_losses):
                self._validate_and_checkpoint(epoch, started, epoch_end=True)
            if self._stop_signal is not None:
                return "stopped", f"signal {signal.Signals(self._stop_signal).name}"
        return "done", f"trained {self.hp.epochs} epochs"

    def train_step(self, batch: Batch) -> None:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            output = self.model(batch.text_padded, batch.input_lengths, batch.mel_padded,
                                batch.output_lengths)
            terms = self.criterion(output, batch.mel_padded, batch.gate_padded,
                                   batch.input_lengths, batch.output_lengths, self.step)
        if not math.isfinite(terms.total.item()):
            raise Diverged(f"train loss is {terms.total.item()} at step {self.step + 1}")
        loss = terms.mel_and_gate.item()
        if self.first_loss is None:
            self.first_loss = loss
        self._check_growth("train loss", loss, f"step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.hp.grad_clip_thresh).item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self._train_losses.append(loss)
        if math.isfinite(grad_norm):  # AMP overflow steps are skipped, not diverged
            self._grad_norms.append(grad_norm)
        log.debug("step %d loss %.4f grad_norm %.3f", self.step, loss, grad_norm)

    def _check_growth(self, what: str, loss: float, where: str) -> None:
        """Raise :class:`Diverged` when ``loss`` is past ``max_loss_growth`` times the first."""
        limit = self.hp.max_loss_growth
        if limit and self.first_loss and self.first_loss > 0 and loss > limit * self.first_loss:
            raise Diverged(f"{what} is {loss:.4g} at {where}, over {limit:g} times the first "
                           f"step's {self.first_loss:.4g} (max_loss_growth)")

    @torch.no_grad()
    def _validate(self) -> Validation:
        self.model.eval()
        totals = np.zeros(4)
        count = 0
        alignment = []
        first: Batch | None = None  # also decoded free-running, below
        for batch in self.val_loader:
            batch = batch.to(self.device)
            if first is None:
                first = batch
            output = self.model(batch.text_padded, batch.input_lengths, batch.mel_padded,
                                batch.output_lengths)
            terms = self.criterion(output, batch.mel_padded, batch.gate_padded,
                                   batch.input_lengths, batch.output_lengths, self.step)
            n = batch.text_padded.size(0)
            totals += n * np.array([terms.mel_and_gate.item(), terms.mel.item(), terms.gate.item(),
                                    terms.guided_attention.item()])
            count += n
            alignment += batch_alignment(output.alignments, batch.input_lengths,
                                         batch.output_lengths, self.hp.n_frames_per_step)
        stop = (None, None)
        if self.hp.free_running_utterances:
            stop = stop_metrics(self.model, first, self.hp.free_running_utterances,
                                self.hp.gate_threshold)
        self.model.train()
        return Validation(*(float(x) for x in totals / count), *mean_alignment(alignment), *stop)

    def _validate_and_checkpoint(self, epoch: int, started: float, epoch_end: bool) -> None:
        result = self._validate()
        if not math.isfinite(result.loss):
            raise Diverged(f"validation loss is {result.loss} at epoch {epoch}")
        self._check_growth("validation loss", result.loss, f"epoch {epoch}, step {self.step}")
        self.scheduler.on_validation(result.loss)
        self.seconds = time.perf_counter() - started
        train_loss = float(np.mean(self._train_losses)) if self._train_losses else math.nan
        grad_norm = float(np.mean(self._grad_norms)) if self._grad_norms else math.nan
        self._train_losses.clear()
        self._grad_norms.clear()
        emit("validation", epoch=epoch, step=self.step, train_loss=train_loss,
             val_loss=result.loss, val_mel_loss=result.mel_loss, val_gate_loss=result.gate_loss,
             val_guided_attention_loss=result.guided_attention_loss, grad_norm=grad_norm,
             lr=self.scheduler.lr, alignment_score=result.alignment_score,
             attention_focus=result.attention_focus,
             attention_progress=result.attention_progress,
             attention_coverage=result.attention_coverage, stop_rate=result.stop_rate,
             length_ratio=result.length_ratio, seconds=self.seconds, epoch_end=epoch_end)
        log.info("epoch %d step %d: train %.4f val %.4f (mel %.4f gate %.4f) align %.3f "
                 "(focus %.2f progress %.2f coverage %.2f) stop %s length %s lr %.2e %.1fs",
                 epoch, self.step, train_loss, result.loss, result.mel_loss, result.gate_loss,
                 result.alignment_score, result.attention_focus, result.attention_progress,
                 result.attention_coverage, format_stop_metric(result.stop_rate),
                 format_stop_metric(result.length_ratio),
                 self.scheduler.lr, self.seconds)

        is_best = result.loss < self.best_val_loss
        if is_best:
            self.best_val_loss = result.loss
        # Mid-epoch validations record the previous epoch as completed and the batches
        # trained of this one (epoch_batches), where a resume goes on.
        completed = epoch if epoch_end else epoch - 1
        self._save("last", completed, result, is_best=is_best)
        if is_best:
            self._save("best", completed, result, is_best=True)
        if self.hp.artifacts == "validation" and self._stop_signal is None:
            self._write_artifacts(epoch)

    # --- checkpoints, artifacts, events ------------------------------------------------
    def _checkpoint_path(self, kind: str) -> Path:
        return self.run_dir / f"{kind}.pt"

    def _save(self, kind: str, completed_epochs: int, validation: Validation | None = None,
              is_best: bool = False) -> None:
        val_loss = validation.loss if validation is not None else None
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": completed_epochs,
            "epoch_batches": self.epoch_batches,
            "step": self.step,
            # The means of the next validation event take in the steps before a resume too.
            "train_losses": self._train_losses,
            "grad_norms": self._grad_norms,
            "best_val_loss": self.best_val_loss,
            "first_loss": self.first_loss,
            "val_loss": val_loss,
            # What the model scored when saved: synthesize reports it beside what it says.
            "validation": dataclasses.asdict(validation) if validation is not None else None,
            "hparams": self.hp.to_dict(),
            "rng": rng_states(),
        }
        path = save_checkpoint(self._checkpoint_path(kind), state, keep_previous=kind == "last")
        emit("checkpoint", epoch=completed_epochs, step=self.step, path=str(path), kind=kind,
             is_best=is_best, val_loss=val_loss)

    def _restore(self) -> str:
        state, source = load_resumable(self.resume, map_location=self.device)
        saved = HParams.from_dict(state["hparams"])
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:  # a size mismatch, a missing or unexpected layer
            raise CheckpointError(f"{source}: {self._model_change(saved, state['model'])}"
                                  ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        self._apply_changed_hparams(saved)
        self.epoch, self.step = state["epoch"], state["step"]
        # Checkpoints from before the batch position was kept resume at the epoch's start.
        self.epoch_batches = state.get("epoch_batches", 0)
        self._train_losses[:] = state.get("train_losses", [])
        self._grad_norms[:] = state.get("grad_norms", [])
        self.best_val_loss = state["best_val_loss"]
        # Checkpoints from before it was kept measure growth from the first step resumed.
        self.first_loss = state.get("first_loss")
        restore_rng_states(state["rng"])
        if source != self.resume and (
                self.resume.resolve() == self._checkpoint_path("last").resolve()):
            # The next save would keep the damaged file as the fallback, over the good one.
            damaged = self.resume.with_suffix(".damaged.pt")
            self.resume.replace(damaged)
            log.warning("moved the damaged %s aside to %s", self.resume.name, damaged.name)
        log.info("resumed from %s at epoch %d, batch %d of the next, step %d", source,
                 self.epoch, self.epoch_batches, self.step)
        return str(source)

    def _model_change(self, saved: HParams, weights: dict[str, torch.Tensor]) -> str:
        """Which hyperparameters make this run's model unlike the checkpoint's, in words."""
        checkpoint = {name: tuple(tensor.shape) for name, tensor in weights.items()}
        before = saved.to_dict()
        changed = [name for name, value in self.hp.to_dict().items() if before[name] != value]
        culprits = []
        for name in changed:  # one at a time, on the meta device: no memory, no compute
            try:
                with torch.device("meta"):
                    model = Tacotron2(HParams.from_overrides({name: getattr(self.hp, name)},
                                                             base=saved))
                unlike = {key: tuple(t.shape) for key, t in model.state_dict().items()
                          } != checkpoint
            except (ValueError, RuntimeError):  # not a valid model with the others
                unlike = True
            if unlike:
                culprits.append(f"{name} (checkpoint {getattr(saved, name)}, "
                                f"now {getattr(self.hp, name)})")
        if not culprits:
            return "the checkpoint's model does not fit these hyperparameters"
        return (f"a resumed run cannot change the model's size: {', '.join(culprits)}; "
                "keep the checkpoint's value or start a new run")

    def _apply_changed_hparams(self, saved: HParams) -> None:
        """Let a resumed run take new optimiser settings (the tuner's adaptations).

        A new learning rate rescales the schedule, keeping its position and any
        plateau cuts; weight decay is simply replaced.
        """
        ratio = self.hp.learning_rate / saved.learning_rate if saved.learning_rate else 1.0
        for i, group in enumerate(self.optimizer.param_groups):
            self.scheduler.shape.base_lrs[i] *= ratio
            group["lr"] *= ratio
            group["weight_decay"] = self.hp.weight_decay

    def _write_artifacts(self, epoch: int | None = None) -> None:
        """Plots and an audio sample for people; a failure here never fails the run."""
        epoch = epoch or self.epoch
        try:
            self._render_artifacts(epoch)
        except Exception as exc:  # e.g. librosa refusing a non-finite mel
            log.warning("could not write the artifacts of epoch %d: %s: %s", epoch,
                        type(exc).__name__, exc)

    def _render_artifacts(self, epoch: int) -> None:
        paths = artifacts.render(self.model, self.hp, self.val_loader.dataset,
                                 self.run_dir / "artifacts", epoch, self.step, self.run_dir.name)
        for kind, path in paths.items():
            emit("artifact", epoch=epoch, step=self.step, kind=kind, path=str(path))

    def _end(self, status: str, reason: str) -> None:
        best, last = self._checkpoint_path("best"), self._checkpoint_path("last")
        emit("end", status=status, epoch=self.epoch, step=self.step,
             best_val_loss=self.best_val_loss if math.isfinite(self.best_val_loss) else None,
             best_checkpoint=str(best) if best.exists() else None,
             last_checkpoint=str(last) if last.exists() else None,
             reason=reason, seconds=self.seconds)
        log.info("%s: %s", status, reason)

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: object) -> None:
            log.warning("received %s: stopping after this step", signal.Signals(signum).name)
            self._stop_signal = signum

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
