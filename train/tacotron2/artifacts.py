"""Artifacts for people: attention and mel plots of a validation utterance and a spoken
sample (WAV) through ``hp.vocoder``; the drawing itself is in :mod:`train.tacotron2.figures`,
the vocoders in :mod:`train.tacotron2.vocoder`."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from train.tacotron2 import figures
from train.tacotron2.audio import NonFiniteAudio, save_wav
from train.tacotron2.data import TextMelCollate, TextMelDataset
from train.tacotron2.free_running import gate_stops
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2, evaluating
from train.tacotron2.text import text_to_sequence
from train.tacotron2.vocoder import Vocoder, VocoderError, load_vocoder

# Decoding stops after this many frames per text token even if the gate never fires:
# about three times a normal speaking pace (LJSpeech and the demo corpus speak 5-6
# frames per character), so an untrained model costs seconds, not max_decoder_steps.
MAX_FRAMES_PER_TOKEN = 18

log = logging.getLogger(__name__)


class Speech(NamedTuple):
    wav: np.ndarray  # the vocoder's waveform, at hp.sampling_rate
    alignment: np.ndarray  # attention (decoder steps, text tokens)
    stopped: bool  # True when the gate ended it, False when the cap cut it off
    frames: int  # mel frames spoken
    mel: torch.Tensor  # the log mel spoken (n_mel_channels, frames), the vocoder's input


@torch.no_grad()
def synthesize(model: Tacotron2, hp: HParams, text: str, vocoder: Vocoder | None = None
               ) -> Speech:
    """Speak ``text`` from the model's own predictions (free-running, capped), through
    ``vocoder`` (default: ``hp.vocoder``, on the model's device)."""
    device = next(model.parameters()).device
    vocoder = vocoder or load_vocoder(hp.vocoder, hp, device)
    ids = torch.tensor([text_to_sequence(text, hp.symbol_set)], dtype=torch.long,
                       device=device)
    cap = math.ceil(ids.size(1) * MAX_FRAMES_PER_TOKEN / hp.n_frames_per_step)
    with evaluating(model):
        _, mel_postnet, gate, alignments = model.infer(ids, max_steps=cap)
    stopped, frames = (int(x[0]) for x in gate_stops(gate, hp.n_frames_per_step,
                                                      hp.gate_threshold))
    mel = mel_postnet[0, :, :frames].float()
    steps = frames // hp.n_frames_per_step
    return Speech(vocoder(mel), alignments[0, :steps].float().cpu().numpy(), bool(stopped),
                  frames, mel)


def write_audio_sample(model: Tacotron2, hp: HParams, path: Path, text: str | None = None) -> Path:
    save_wav(path, synthesize(model, hp, text or hp.test_sentence).wav, hp.sampling_rate)
    return path


@torch.no_grad()
def render(model: Tacotron2, hp: HParams, validation: TextMelDataset, folder: Path, epoch: int,
           step: int, run_name: str) -> dict[str, Path]:
    """The plots of the first validation utterance (teacher-forced) and a spoken sample.

    Files are named by ``epoch``; titles name the run, the utterance and the step. Returns
    the written files by kind (``alignment_plot``, ``mel_plot``, ``audio``). A model whose
    spoken output is not finite (a diverged one), or whose vocoder cannot be used, gets no
    ``audio``, and one warning line.
    """
    utterance = validation.utterances[0]
    device = next(model.parameters()).device
    batch = TextMelCollate(hp.n_frames_per_step)([validation[0]]).to(device)
    with evaluating(model):
        _, mel_postnet, _, alignments = model(batch.text_padded, batch.input_lengths,
                                              batch.mel_padded, batch.output_lengths)
    frames = int(batch.output_lengths[0])
    alignment = alignments[0, : -(-frames // hp.n_frames_per_step)].float().cpu().numpy()
    title = f"{run_name}, {utterance.audio_path.stem}: epoch {epoch}, step {step}"
    figures.save_alignment_matrix(alignment, folder / f"alignment_e{epoch:04d}.npy")
    paths = {
        "alignment_plot": figures.plot_alignment(alignment, folder / f"alignment_e{epoch:04d}.png",
                                                 title),
        "mel_plot": figures.plot_mels(batch.mel_padded[0, :, :frames].float().cpu().numpy(),
                                      mel_postnet[0, :, :frames].float().cpu().numpy(),
                                      folder / f"mel_e{epoch:04d}.png", title),
    }
    try:
        paths["audio"] = write_audio_sample(model, hp, folder / f"sample_e{epoch:04d}.wav")
    except (NonFiniteAudio, VocoderError) as error:
        log.warning("no audio sample of epoch %d: %s", epoch, error)
    return paths
