"""Does the demo's champion speak? Its CER ratio against CPU minutes of training, on one core.

    .venv/bin/python bench/speech_curve.py [--minutes 30] [--every 3] [--decay-epochs 800]
                                           [--out .state/speech_curve]
                                           [--png bench/curves/speech_curve.png]

The demo's best configuration is taken from the recorded table (bench/curves/demo.json.gz):
among the configurations that align, the lowest mean final objective over seeds, as
bench/replay_pruning.py's Truth computes it. It is trained once, by the real trainer
(``python -m train``) on the demo corpus with config/demo.yaml's fixed hyperparameters and
one torch thread, for ``--minutes`` of the trainer's CPU time (read from /proc, so other
jobs on the machine do not stretch the x axis). A long run gets a cosine learning-rate decay
to the profile's ``lr_min_ratio`` over ``--decay-epochs``, held there after.

Every ``--every`` CPU minutes (and at the first, about the demo's own 24 epochs) the
trainer's latest checkpoint is copied aside; each copy is judged by ``python -m
train.evaluate`` (its default vocoder and recogniser) on the corpus's held-out and hard
sentences while training goes on, and on nine sentences of the run's own training split
(does it speak text it has seen?); the curve (CER, CER ratio, stop rate, MCD, skips and
repeats against CPU minutes) is printed and drawn, beside the CER of other sentences'
recordings (speech in the corpus's words that does not say the sentence). Rerunning
resumes: the training from its last checkpoint, the judging from the first copy without a
verdict.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml
from replay_pruning import Truth

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
TABLE = ROOT / "bench" / "curves" / "demo.json.gz"
CORPUS = ROOT / ".state" / "demo_corpus"
CORPUS_SIZE = 100  # as the Makefile's demo corpus
STEPS_PER_EPOCH = 12  # 90 training utterances in batches of 8
# train.evaluate's summary measures (--json), by the names this curve gives them.
MEASURES = {"n": "sentences", "stopped": "stopped", "stop_rate": "stop_rate",
            "length": "length_ratio", "cer": "cer", "reference_cer": "cer_reference",
            "ratio": "cer_ratio", "mcd": "mcd", "skips": "skipped", "repeats": "repeated"}


def champion() -> tuple[int, dict[str, Any]]:
    """The recorded table's best aligning configuration: its index and values."""
    with gzip.open(TABLE, "rt") as table_file:
        table = json.load(table_file)
    truth = Truth.of(table, yaml.safe_load(DEMO_CONFIG.read_text()))
    index = min((i for i, aligned in enumerate(truth.aligned) if aligned),
                key=lambda i: truth.true_values[i])
    return index, table["configs"][index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_thread() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def train(hparams: dict[str, Any], out: Path, minutes: float, every: float,
          snapshots: list[dict[str, Any]], lock: threading.Lock) -> None:
    """Train until ``minutes`` of CPU time, copying the last checkpoint at each mark."""
    run_dir, progress = out / "run", out / "progress.json"
    spent = json.loads(progress.read_text())["cpu_s"] if progress.is_file() else 0.0
    if spent >= minutes * 60:
        return
    resume = ["--resume", str(run_dir / "last.pt")] if (run_dir / "last.pt").is_file() else []
    marks = [mark for mark in [60.0, *(m * 60.0 for m in _frange(every, minutes))]
             if mark > spent]
    with open(out / "trainer.log", "a") as log:
        trainer = subprocess.Popen(
            ["nice", "-n", "5", sys.executable, "-m", "train", "--data", str(CORPUS),
             "--out", str(run_dir), "--cache-dir", str(out / "mel_cache"),
             "--hparams", json.dumps(hparams), "--no-log-file", *resume],
            cwd=ROOT, env=one_thread(), stdout=subprocess.PIPE, stderr=log, text=True)
    start, validation = spent, {}
    for line in trainer.stdout:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event["event"] == "validation":
            validation = event
        if event["event"] != "checkpoint" or event["kind"] != "last":
            continue
        spent = start + cpu_seconds(trainer.pid)
        progress.write_text(json.dumps({"cpu_s": spent, "epoch": event["epoch"]}))
        if marks and spent >= marks[0]:
            while marks and spent >= marks[0]:
                marks.pop(0)
            copy = out / "snapshots" / f"cpu-{spent:06.0f}s.pt"
            copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(event["path"], copy)
            snapshot = {"path": str(copy), "cpu_s": spent, "epoch": event["epoch"],
                        "step": event["step"], "lr": validation["lr"],
                        "val_loss": validation["val_loss"],
                        "alignment_score": validation["alignment_score"]}
            with (out / "snapshots.jsonl").open("a") as index:
                index.write(json.dumps(snapshot) + "\n")
            with lock:
                snapshots.append(snapshot)
            print(f"{spent / 60:5.1f} CPU min: epoch {event['epoch']}, val_loss "
                  f"{validation['val_loss']:.3f}, alignment {validation['alignment_score']:.2f},"
                  f" lr {validation['lr']:.2e}", flush=True)
        if spent >= minutes * 60:
            trainer.terminate()  # the trainer saves and exits on SIGTERM
    trainer.wait()


def _frange(step: float, stop: float) -> list[float]:
    return [step * k for k in range(1, int(stop / step + 1e-9) + 1)]


def seen_corpus(hparams: dict[str, Any], out: Path, n: int = 9) -> Path:
    """A corpus folder whose "held-out" sentences are the first ``n`` of the run's training
    split: what the model makes of text it was trained on, beside text it never saw."""
    from train.tacotron2.data import read_utterances, split_utterances
    from train.tacotron2.hparams import HParams

    corpus = out / "seen_corpus"
    if not (corpus / "heldout.csv").is_file():
        hp = HParams.from_overrides(hparams)
        trained, _ = split_utterances(read_utterances(CORPUS), hp.val_fraction, hp.split_seed)
        chosen = {u.audio_path.stem for u in sorted(trained, key=lambda u: u.audio_path)[:n]}
        rows = [row for row in (CORPUS / "metadata.csv").read_text(encoding="utf-8").splitlines()
                if row.split("|")[0] in chosen]
        (corpus / "heldout").mkdir(parents=True, exist_ok=True)
        for clip_id in chosen:
            shutil.copyfile(CORPUS / "wavs" / f"{clip_id}.wav",
                            corpus / "heldout" / f"{clip_id}.wav")
        # train.evaluate's recogniser vocabulary comes from the whole corpus, as for CORPUS.
        shutil.copyfile(CORPUS / "metadata.csv", corpus / "metadata.csv")
        (corpus / "heldout.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return corpus


def evaluate(snapshot: dict[str, Any], corpus: Path = CORPUS,
             suffix: str = ".evaluate.json") -> dict[str, Any]:
    """``train.evaluate``'s summary of a copied checkpoint on ``corpus`` (cached beside it)."""
    verdict = Path(snapshot["path"]).with_suffix(suffix)
    if not verdict.is_file():
        done = subprocess.run(
            ["nice", "-n", "5", sys.executable, "-m", "train.evaluate", "--checkpoint",
             snapshot["path"], "--held-out", str(corpus), "--json", str(verdict)],
            cwd=ROOT, env=one_thread(), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{snapshot['path']}: train.evaluate exited with "
                               f"{done.returncode}: {done.stderr[-1500:]}")
    measures = json.loads(verdict.read_text())
    return {**snapshot, **{key: measures[name] for key, name in MEASURES.items()}}


def judge_as_they_come(snapshots: list[dict[str, Any]], lock: threading.Lock,
                       training: threading.Thread, seen: Path,
                       points: list[dict[str, Any]]) -> None:
    """Evaluate each snapshot in turn, on unseen and on seen sentences, while the training
    makes more."""
    while True:
        with lock:
            todo = snapshots[len(points):]
        if not todo:
            if not training.is_alive():
                return
            training.join(timeout=5)
            continue
        point = evaluate(todo[0])
        trained_on = evaluate(todo[0], seen, ".seen.json")
        point.update({f"seen_{key}": trained_on[key] for key in ("cer", "ratio", "mcd")})
        points.append(point)
        print(f"judged {Path(point['path']).name}: CER {point['cer']:.2f}, ratio "
              f"{point['ratio']:.2f}, stop {point['stop_rate']:.2f}, MCD {point['mcd']:.1f}, "
              f"skips {point['skips']:.0f}, repeats {point['repeats']:.0f}; seen sentences: "
              f"CER {point['seen_cer']:.2f}, ratio {point['seen_ratio']:.2f}", flush=True)


def mismatched_cer(out: Path) -> float:
    """The recogniser's CER when each sentence is scored on the recordings of the others
    (mean over every shift): what speech in the corpus's words that does not say the
    sentence scores. A model below it says some of the sentence's words."""
    cached = out / "mismatched_cer.json"
    if not cached.is_file():
        from train.evaluate import corpus_sentences
        from train.tacotron2.audio import load_wav
        from train.tacotron2.hparams import HParams
        from train.tacotron2.intelligibility import (
            bundled_model,
            character_error_rate,
            open_recognizer,
            vocabulary,
        )

        rate = HParams().sampling_rate
        sentences = corpus_sentences(CORPUS)
        texts = [s.text for s in sentences]
        recognizer = open_recognizer(bundled_model(), vocabulary(texts + [
            line.split("|")[1] for line in
            (CORPUS / "metadata.csv").read_text(encoding="utf-8").splitlines() if line]))
        heard = [recognizer(load_wav(s.recording, rate), rate) for s in sentences]
        cers = [character_error_rate(texts, heard[k:] + heard[:k]) for k in range(1, len(heard))]
        cached.write_text(json.dumps(sum(cers) / len(cers)))
    return json.loads(cached.read_text())


def table(points: list[dict[str, Any]]) -> str:
    rows = ["CPU min  epoch  val_loss  align   CER  ratio  stop   MCD  skips  repeats"
            "  | seen: CER  ratio   MCD"]
    rows += [f"{p['cpu_s'] / 60:7.1f}  {p['epoch']:5d}  {p['val_loss']:8.3f}  "
             f"{p['alignment_score']:5.2f}  {p['cer']:4.2f}  {p['ratio']:5.2f}  "
             f"{p['stop_rate']:4.2f}  {p['mcd']:4.1f}  {p['skips']:5.0f}  {p['repeats']:7.0f}"
             f"  |       {p['seen_cer']:4.2f}  {p['seen_ratio']:5.2f}  {p['seen_mcd']:4.1f}"
             for p in points]
    return "\n".join(rows)


def draw(points: list[dict[str, Any]], mismatched: float, title: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["cpu_s"] / 60 for p in points]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    (cer, stop), (mcd, faults) = axes
    cer.plot(minutes, [p["ratio"] for p in points], "o-",
             label="CER ratio (model / recordings), unseen sentences")
    cer.plot(minutes, [p["cer"] for p in points], "s--", label="CER of the model")
    cer.plot(minutes, [p["seen_ratio"] for p in points], "o-", color="tab:green",
             label="CER ratio on trained-on sentences")
    cer.axhline(points[0]["reference_cer"], color="grey", lw=1,
                label=f"CER of the recordings ({points[0]['reference_cer']:.2f})")
    cer.axhline(mismatched, color="tab:red", lw=1, ls=":",
                label=f"CER of other sentences' recordings ({mismatched:.2f})")
    cer.axhline(1.0, color="black", lw=0.5)
    cer.set_ylabel("character error rate")
    cer.set_ylim(0, None)
    cer.legend(fontsize=7, loc="lower left")
    stop.plot(minutes, [p["stop_rate"] for p in points], "o-", label="gate stop rate")
    stop.plot(minutes, [p["length"] for p in points], "s--", label="length ratio")
    stop.plot(minutes, [p["alignment_score"] for p in points], "^:",
              label="alignment (validation)")
    stop.set_ylim(0, 1.3)
    stop.legend(fontsize=8)
    mcd.plot(minutes, [p["mcd"] for p in points], "o-", label="unseen sentences")
    mcd.plot(minutes, [p["seen_mcd"] for p in points], "o-", color="tab:green",
             label="trained-on sentences")
    mcd.legend(fontsize=8)
    mcd.set_ylabel("MCD with DTW (dB)")
    faults.plot(minutes, [p["skips"] for p in points], "o-", label="with skipped words")
    faults.plot(minutes, [p["repeats"] for p in points], "s--", label="with repeated words")
    faults.set_ylabel(f"sentences of {points[0]['n']:.0f}")
    faults.set_ylim(-0.5, points[0]["n"] + 0.5)
    faults.legend(fontsize=8)
    for axis in (mcd, faults):
        axis.set_xlabel("CPU minutes of training (one thread)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="CPU minutes of training")
    parser.add_argument("--every", type=float, default=3.0, help="CPU minutes between copies")
    parser.add_argument("--decay-epochs", type=int, default=800,
                        help="epochs of the cosine decay (about 30 CPU minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / ".state" / "speech_curve")
    parser.add_argument("--png", type=Path, default=ROOT / "bench" / "curves" / "speech_curve.png")
    args = parser.parse_args()

    index, config = champion()
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    hparams = {**demo["trainer"]["hparams"], **config, "epochs": 100_000, "seed": 1,
               "lr_schedule": "cosine", "lr_decay_steps": args.decay_epochs * STEPS_PER_EPOCH,
               "artifacts": "none"}
    print(f"the recorded table's best aligning configuration, {index}: {config}; trained "
          f"with a cosine decay over {args.decay_epochs} epochs", flush=True)
    if not (CORPUS / "hard.csv").is_file():  # deterministic: existing clips stay as they are
        subprocess.run([sys.executable, "-m", "train.corpus", "--out", str(CORPUS),
                        "--n", str(CORPUS_SIZE)], cwd=ROOT, check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    index_file = args.out / "snapshots.jsonl"
    snapshots = ([json.loads(line) for line in index_file.read_text().splitlines()]
                 if index_file.is_file() else [])
    lock, points = threading.Lock(), []
    training = threading.Thread(target=train, args=(hparams, args.out, args.minutes,
                                                    args.every, snapshots, lock))
    training.start()
    judge_as_they_come(snapshots, lock, training, seen_corpus(hparams, args.out), points)
    mismatched = mismatched_cer(args.out)
    print(table(points))
    print(f"recordings {points[0]['reference_cer']:.2f}, other sentences' recordings "
          f"{mismatched:.2f}")
    title = (f"demo champion (config {index}: lr {config['learning_rate']:.4f} cosine, "
             f"guided attention {config['guided_attention_weight']}, decoder dropout "
             f"{config['p_decoder_dropout']:.2f}), through train.evaluate")
    draw(points, mismatched, title, args.png)
    print(f"curve: {args.png}")


if __name__ == "__main__":
    main()
