"""Does pruning pay at equal compute? The demo's pruned study against an unpruned one, both
replayed on the recorded learning curves (bench/record_curves.py) by the real tuner.

    .venv/bin/python bench/replay_pruning.py [--pairs 50] [--budget-trials 12] [--jobs 2]
        [--set optimization.pruner.n_warmup_steps=4 ...] [--confirm 2,2] [--real | --foresight]

Each pair runs config/demo.yaml twice with the same sampler seed (and the same draw of
recorded training seeds): as it is (the pruned study), and with no pruner and no early
stopping (the unpruned one), each until it has spent the same compute, the epochs of
``--budget-trials`` full trials (a trial that ends past the budget does not count);
``--set`` changes the pruned study's config. The tuner is the real one (sampler, pruner,
criteria, runner, SQLite storage); only the trainer is ``python -m train.replay``, or,
with ``--real``, the real one on the demo corpus (minutes a study, not seconds).

A study is scored by the true value of the configuration it picked: the mean of that
configuration's final objective over the table's seeds, not the lucky draw the study saw.
Its pick is its best completed trial that aligns (final alignment score at least the demo
criterion's ``min_score``), as a person would pick: the objective (a teacher-forced loss)
alone prefers models without guided attention that never learn to read. Regret is the
true value minus the table's best true value among configurations that align (on the mean
of their seeds).

It prints the regrets (median, IQR), the share of pairs where the pruned pick is at least
as good, the epochs each needs to first pick a configuration as good as the unpruned
study's median final pick, Spearman's rank correlation of each epoch's objective with the
final values, and, with ``--confirm TOP_K,SEEDS``, what confirming the pruned study's
champions over seeds changes. It draws the anytime curves and the rung correlations as
PNGs (``--out``). The last line is the verdict.

With ``--foresight`` the pruned study prunes as no real pruner can, knowing how each
replayed run ends (:class:`ForesightPruner`), and has no early-stopping criteria: how far
an ideal pruner would get on the table, with the same sampler and the same picks.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import yaml
from optuna.trial import TrialState
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.replay import SEED_BLOCK, load_table, nearest_config, recorded_seed  # noqa: E402
from tuner_core.config import Config, load_config  # noqa: E402
from tuner_core.storage import BUDGET_ATTR, CONFIRMS_ATTR, confirmed_best  # noqa: E402
from tuner_core.study import create_study, run_worker  # noqa: E402
from tuner_core.trial.listener import TrialListener  # noqa: E402
from tuner_core.trial.runner import objective_value  # noqa: E402

TABLE = ROOT / "bench" / "curves" / "demo.json.gz"
DEMO_CORPUS = ROOT / ".state" / "demo_corpus"  # as bench/record_curves.py
MEL_CACHE = ROOT / ".state" / "curves_mel_cache"


# --- The table's truth -----------------------------------------------------------------

@dataclass
class Truth:
    """Each recorded configuration's true value, and the objective of every run's epochs."""

    table: dict[str, Any]
    curves: dict[tuple[int, int], list[float]]  # (config, seed) -> objective per epoch
    true_values: list[float]  # per configuration: mean over seeds of the final objective
    aligned: list[bool]  # per configuration: its mean final alignment reaches min_alignment
    min_alignment: float

    @classmethod
    def of(cls, table: dict[str, Any], settings: dict[str, Any]) -> Truth:
        opt = settings["optimization"]
        curves, finals, alignments = {}, {}, {}
        for run in table["runs"]:
            validations = [v for v in run["validations"] if v["epoch_end"]]
            curve = [objective_value(v, opt["objective_metric"], opt["overfitting_penalty"],
                                     opt["direction"]) for v in validations]
            curves[run["index"], run["seed"]] = curve
            finals.setdefault(run["index"], []).append(final_value(curve))
            alignments.setdefault(run["index"], []).append(
                validations[-1]["alignment_score"] or 0.0)
        min_alignment = settings["early_stopping"]["alignment"]["min_score"]
        return cls(table, curves, [statistics.fmean(finals[i]) for i in sorted(finals)],
                   [statistics.fmean(alignments[i]) >= min_alignment for i in sorted(finals)],
                   min_alignment)

    @property
    def best(self) -> float:
        return min(value for value, aligned in zip(self.true_values, self.aligned,
                                                   strict=True) if aligned)

    def of_params(self, params: dict[str, Any]) -> float:
        """The true value of the recorded configuration nearest to a trial's ``params``."""
        return self.true_values[nearest_config(self.table, params)]


def final_value(curve: list[float]) -> float:
    """What a full trial records: its best objective (NaN and inf never count)."""
    finite = [value for value in curve if math.isfinite(value)]
    return min(finite) if finite else math.inf


class ForesightPruner(optuna.pruners.BasePruner):
    """An ideal that no real pruner reaches: it knows how each replayed run ends, and stops
    at its first epoch every trial that will not become the study's pick (its run does not
    align, or ends no better than the best pick so far). It is not a strict bound: a real
    pruner may, by luck, stop a trial whose lucky draw would have made a worse pick."""

    def __init__(self, table: dict[str, Any], truth: Truth, seed: int):
        self.table, self.truth, self.seed = table, truth, seed
        self.alignments = {(run["index"], run["seed"]): run["validations"][-1]["alignment_score"]
                           or 0.0 for run in table["runs"]}

    def ending(self, params: dict[str, Any]) -> tuple[float, bool]:
        """How the run that a trial with ``params`` replays ends: its value, and whether
        it aligns."""
        config = nearest_config(self.table, params)
        run = (config, recorded_seed(self.table, config, self.seed))
        return (final_value(self.truth.curves[run]),
                self.alignments[run] >= self.truth.min_alignment)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.last_step is None:
            return False
        value, aligns = self.ending(trial.params)
        picks = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if (t.user_attrs.get("last_metrics") or {}).get("alignment_score", 0.0)
                 >= self.truth.min_alignment]
        return not aligns or (bool(picks) and value >= min(picks))


# --- One study ---------------------------------------------------------------------------

class ComputeBudget(TrialListener):
    """Closes the study's trial budget once its trials have been judged at ``epochs``
    validations: the trial running then ends as it would, and the study ends as a study
    does (its champions' confirmation included), not as a stopped one."""

    def __init__(self, epochs: int):
        self.epochs, self.spent = epochs, 0

    def trainer_event(self, trial, event, objective):
        if event["event"] == "validation" and CONFIRMS_ATTR not in trial.user_attrs:
            self.spent += 1
            if self.spent == self.epochs:
                trial.study.set_user_attr(BUDGET_ATTR, trial.number + 1)


def study_settings(demo: dict[str, Any], table: Path | None, state_dir: Path, pair: int,
                   pruned: bool, confirm: tuple[int, int] | None) -> dict[str, Any]:
    """The pair's pruned or unpruned study; replayed from ``table``, or really trained."""
    settings = json.loads(json.dumps(demo))
    settings.update(dataset_path=str(DEMO_CORPUS), state_dir=str(state_dir),
                    mlflow={"enabled": False}, telegram={"enabled": False})
    trainer = settings["trainer"]
    if table is not None:
        trainer.update(replay=str(table), preload=False, grace_period_s=5)
    trainer["hparams"].update(artifacts="none", seed=pair * SEED_BLOCK)
    settings["optimization"]["seed"] = pair
    if pruned:
        if confirm:
            settings["optimization"]["confirm"] = {"top_k": confirm[0], "seeds": confirm[1]}
    else:
        settings["optimization"]["pruner"] = {"type": "none"}
        settings["early_stopping"] = {}
    return settings


def write_config(settings: dict[str, Any], overrides: list[str]) -> Config:
    path = Path(settings["state_dir"]) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return load_config(path, overrides=overrides)


def run_study(settings: dict[str, Any], budget_epochs: int, overrides: list[str] = (),
              pruner: optuna.pruners.BasePruner | None = None) -> list[dict[str, Any]]:
    """Run a study to its compute budget (with ``pruner`` instead of its config's, if
    given); its trials in the order they ended."""
    config = write_config(settings, list(overrides))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tuner_core").setLevel(logging.ERROR)  # no per-trial anomaly warnings
    study = create_study(config, "replay", 10**6)
    if pruner is not None:
        study.pruner = pruner
    run_worker(config, study, ComputeBudget(budget_epochs), poll_s=0.05)
    every = study.get_trials(deepcopy=False)
    # The champion the tuner itself names once its confirmations end (None without them).
    confirmed = confirmed_best(every, minimize=True)
    trials = sorted((t for t in every if t.datetime_complete is not None),
                    key=lambda t: t.datetime_complete)
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "epochs": len(t.intermediate_values), "confirms": t.user_attrs.get(CONFIRMS_ATTR),
             "alignment": (t.user_attrs.get("last_metrics") or {}).get("alignment_score"),
             "confirmed_champion": confirmed is not None and confirmed.trial == t.number}
            for t in trials]


def with_foresight(settings: dict[str, Any], table: dict[str, Any], demo: dict[str, Any]
                   ) -> ForesightPruner:
    """The ideal pruner of a pair's pruned study (``settings``), whose early-stopping
    criteria it replaces."""
    settings["early_stopping"] = {}
    return ForesightPruner(table, Truth.of(table, demo), settings["trainer"]["hparams"]["seed"])


def run_one(job: tuple[int, bool, dict[str, Any], Path | None, list[str], int,
                       tuple[int, int] | None, bool]) -> tuple[list[dict[str, Any]], float]:
    """One study of a pair (pruned or not); its trials and its wall seconds."""
    pair, pruned, demo, table, overrides, budget, confirm, foresight = job
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        settings = study_settings(demo, table, Path(tmp), pair, pruned, confirm)
        if table is None:  # real trainings share the recordings' mel cache
            (Path(tmp) / "mel_cache").symlink_to(MEL_CACHE, target_is_directory=True)
        pruner = with_foresight(settings, load_table(table), demo) if foresight and pruned else None
        trials = run_study(settings, budget, overrides if pruned else [], pruner)
    return trials, time.perf_counter() - started


# --- Scoring -----------------------------------------------------------------------------

def anytime(trials: list[dict[str, Any]], truth: Truth, budget: int
            ) -> tuple[list[int], list[float]]:
    """Epochs spent after each trial, and the true value of the study's pick then (inf
    before it has one), up to the budget: a trial that ends past it does not count.
    Confirmation trials are left out (they are spent after the budget)."""
    spent, best, xs, ys = 0, None, [0], [math.inf]
    for trial in trials:
        if trial["confirms"] is not None:
            continue
        spent += trial["epochs"]
        if spent > budget:
            break
        if picked(trial, truth) and (best is None or trial["value"] < best["value"]):
            best = trial
        xs.append(spent)
        ys.append(truth.of_params(best["params"]) if best else math.inf)
    return xs, ys


def picked(trial: dict[str, Any], truth: Truth) -> bool:
    """Whether a trial may be a study's pick: it completed, and it aligns."""
    return trial["state"] == "COMPLETE" and (trial["alignment"] or 0.0) >= truth.min_alignment


def confirmed_pick(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The champion the tuner named by its mean over seeds, if it confirmed one."""
    return next((t for t in trials if t["confirmed_champion"]), None)


def epochs_to_reach(xs: list[int], ys: list[float], target: float) -> float:
    return next((x for x, y in zip(xs, ys, strict=True) if y <= target), math.inf)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(q2), float(q3)


def rung_correlations(truth: Truth) -> dict[int, tuple[float, float]]:
    """Per epoch: Spearman of that epoch's objective with the run's final value, and with
    its configuration's true value, over every recorded run."""
    epochs = min(len(curve) for curve in truth.curves.values())
    keys = sorted(truth.curves)
    result = {}
    for epoch in range(1, epochs + 1):
        at = [truth.curves[key][epoch - 1] for key in keys]
        at = [value if math.isfinite(value) else 1e9 for value in at]
        final = [final_value(truth.curves[key]) for key in keys]
        true = [truth.true_values[key[0]] for key in keys]
        result[epoch] = (spearmanr(at, final).statistic, spearmanr(at, true).statistic)
    return result


def draw_anytime(curves: dict[str, list[tuple[list[int], list[float]]]], truth: Truth,
                 budget: int, path: Path, shown: dict[str, str]) -> None:
    grid = np.arange(0, budget + 1)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for (label, runs), color in zip(curves.items(), ("crimson", "steelblue"), strict=True):
        regrets = []
        for xs, ys in runs:
            # The regret of the pick held at each epoch (a step function of epochs spent).
            at = np.full(len(grid), np.nan)
            for x, y in zip(xs, ys, strict=True):
                at[grid >= x] = y - truth.best
            regrets.append(at)
        # A study without a pick yet (inf) is drawn from its first pick on.
        regrets = np.where(np.isinf(regrets), np.nan, regrets)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # epochs where none has a pick
            q1, q2, q3 = np.nanpercentile(regrets, [25, 50, 75], axis=0)
        ax.plot(grid, q2, color=color, label=f"{shown[label]}: median")
        ax.fill_between(grid, q1, q3, color=color, alpha=0.2, label=f"{shown[label]}: IQR")
    ax.set_xlabel("epochs spent")
    ax.set_ylabel("regret of the pick (true value − best true value)")
    ax.set_title(f"Anytime regret over {len(next(iter(curves.values())))} paired replays")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_correlations(correlations: dict[int, tuple[float, float]], rungs: list[int],
                      path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    epochs = list(correlations)
    ax.plot(epochs, [c[0] for c in correlations.values()], marker="o",
            label="with the run's final value")
    ax.plot(epochs, [c[1] for c in correlations.values()], marker="s",
            label="with its configuration's true value")
    for rung in rungs:
        ax.axvline(rung, color="grey", linestyle=":")
    ax.set_xlabel("epoch (dotted: the pruner's rungs)" if rungs else "epoch")
    ax.set_ylabel("Spearman's rank correlation")
    ax.set_ylim(-0.2, 1.0)
    ax.set_title("How well an epoch's objective ranks the final values")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pruner_rungs(config: Config, epochs: int) -> list[int]:
    """The epochs at which successive halving (or Hyperband's first bracket) compares."""
    pruner = config.optimization.pruner
    if pruner.type not in ("successive_halving", "hyperband"):
        return []
    rung, rungs = max(1, pruner.n_warmup_steps), []
    while rung <= epochs:
        rungs.append(rung)
        rung *= pruner.reduction_factor
    return rungs


def report_confirmation(results: list[tuple], truth: Truth, budget: int,
                        confirm: tuple[int, int]) -> None:
    """How often confirming the pruned studies' champions changed the pick, and the regret
    it removed per extra epoch."""
    before, after, extra = [], [], []
    for pruned, _, _ in results:
        _, ys = anytime(pruned, truth, budget)
        confirmed = confirmed_pick(pruned)
        if confirmed is None:
            continue
        before.append(ys[-1] - truth.best)
        after.append(truth.of_params(confirmed["params"]) - truth.best)
        extra.append(sum(t["epochs"] for t in pruned if t["confirms"] is not None))
    if not before:
        print("confirmation: no study confirmed a champion")
        return
    changed = sum(a != b for a, b in zip(after, before, strict=True))
    removed = statistics.fmean(before) - statistics.fmean(after)
    print(f"confirmation ({confirm[0]} champions x {confirm[1]} seeds): changed the pick in "
          f"{changed} of {len(before)} studies; median regret {statistics.median(before):.4f} "
          f"before, {statistics.median(after):.4f} after; mean regret removed {removed:.4f} for "
          f"{statistics.fmean(extra):.0f} extra epochs ({removed / statistics.fmean(extra):.2e} "
          "per epoch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--budget-trials", type=int, default=12,
                        help="the compute budget, in full trials' epochs")
    parser.add_argument("--jobs", type=int, default=2, help="pairs at a time")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="KEY.PATH=VALUE", help="a change to the pruned study's config")
    parser.add_argument("--confirm", help="TOP_K,SEEDS: confirm the pruned study's champions")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "curves")
    parser.add_argument("--foresight", action="store_true",
                        help="the pruned study prunes with foresight of each replayed run's end "
                             "(ForesightPruner): a bound on what any pruner could save")
    parser.add_argument("--real", action="store_true",
                        help="train for real (python -m train) instead of replaying; the "
                             "picks are still scored by the table's true values")
    args = parser.parse_args()

    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    table = load_table(args.table)
    truth = Truth.of(table, demo)
    epochs = demo["trainer"]["hparams"]["epochs"]
    budget = args.budget_trials * epochs
    confirm = tuple(int(n) for n in args.confirm.split(",")) if args.confirm else None
    with tempfile.TemporaryDirectory() as tmp:
        pruned_config = write_config(study_settings(demo, args.table, Path(tmp), 0, True, None),
                                     args.overrides)
    pruned_study = ("ForesightPruner, no criteria" if args.foresight
                    else pruned_config.optimization.pruner.model_dump_json())
    print(f"table {args.table.name}: {len(table['configs'])} configurations x "
          f"{len(table['settings']['seeds'])} seeds, code {table['code_version']}; best true "
          f"value {truth.best:.4f}; budget {budget} epochs; pruned study: "
          f"{pruned_study}"
          f"{' ' + ' '.join(args.overrides) if args.overrides else ''}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    started, cpu = time.perf_counter(), os.times()
    replayed = None if args.real else args.table
    if args.foresight and args.real:
        parser.error("--foresight knows replayed runs only; it cannot go with --real")
    jobs = [(pair, pruned, demo, replayed, args.overrides, budget, confirm, args.foresight)
            for pair in range(args.pairs) for pruned in (True, False)]
    with concurrent.futures.ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        studies = list(pool.map(run_one, jobs))
    results = [(studies[2 * i][0], studies[2 * i + 1][0],
                studies[2 * i][1] + studies[2 * i + 1][1]) for i in range(args.pairs)]
    wall, used = time.perf_counter() - started, os.times()
    busy = sum(getattr(used, f) - getattr(cpu, f)
               for f in ("user", "system", "children_user", "children_system"))
    print(f"{args.pairs} pairs in {wall:.0f} s wall, {busy:.0f} s CPU (the trainers included); "
          f"{statistics.median(r[2] for r in results):.1f} s a pair")
    if args.real:
        for pair, (pruned, unpruned, seconds) in enumerate(results):
            print(f"real pair {pair}: pruned pick true value "
                  f"{anytime(pruned, truth, budget)[1][-1]:.4f} ({len(pruned)} trials), "
                  f"unpruned {anytime(unpruned, truth, budget)[1][-1]:.4f} "
                  f"({len(unpruned)} trials); {seconds:.0f} s of studies")

    shown = {"pruned": "foresight" if args.foresight else "pruned", "unpruned": "unpruned"}
    curves = {"pruned": [anytime(r[0], truth, budget) for r in results],
              "unpruned": [anytime(r[1], truth, budget) for r in results]}
    final = {label: [ys[-1] for _, ys in runs] for label, runs in curves.items()}
    for label, values in final.items():
        q1, q2, q3 = quartiles([v - truth.best for v in values])
        trials = [len([t for t in r[0 if label == "pruned" else 1] if t["confirms"] is None])
                  for r in results]
        print(f"{shown[label]:9s} regret: median {q2:.4f}, IQR {q1:.4f}-{q3:.4f}; trials per "
              f"study: median {statistics.median(trials):.0f}")
    at_least = sum(p <= u for p, u in zip(final["pruned"], final["unpruned"], strict=True))
    share = round(100 * at_least / len(results))
    target = statistics.median(final["unpruned"])
    reach = {label: [epochs_to_reach(xs, ys, target) for xs, ys in runs]
             for label, runs in curves.items()}
    medians = {label: statistics.median(values) for label, values in reach.items()}
    for label, values in reach.items():
        reached = sum(math.isfinite(v) for v in values)
        print(f"{shown[label]:9s} epochs to reach the unpruned median final true value "
              f"({target:.4f}): median {medians[label]}, reached in {reached} of {len(values)}")
    # A pruned study that never reaches the target has no speed-up (0.0x), whatever the other.
    speedup = (medians["unpruned"] / medians["pruned"] if math.isfinite(medians["pruned"])
               else 0.0)

    correlations = rung_correlations(truth)
    rungs = [] if args.foresight else pruner_rungs(pruned_config, epochs)
    print("Spearman of the objective at epoch e with the final value / the true value:")
    print("  " + ", ".join(f"e{epoch}{'*' if epoch in rungs else ''} {c[0]:.2f}/{c[1]:.2f}"
                           for epoch, c in correlations.items()))
    if confirm:
        report_confirmation(results, truth, budget, confirm)

    args.out.mkdir(parents=True, exist_ok=True)
    draw_anytime(curves, truth, budget, args.out / "anytime.png", shown)
    draw_correlations(correlations, rungs, args.out / "rung_correlation.png")
    print(f"figures: {args.out / 'anytime.png'}, {args.out / 'rung_correlation.png'}")
    print(f"verdict: pruned at least as good in {share}% of {len(results)} pairs; "
          f"{speedup:.1f}x fewer epochs to the unpruned final")


if __name__ == "__main__":
    main()
