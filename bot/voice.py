"""A trial's audio sample as a Telegram voice message: OGG with Opus, mono, 48 kHz.

Telegram plays a voice message inline in every client. ``sendVoice`` takes OGG/Opus;
``sendAudio`` is for MP3 and M4A, and a WAV sent there is not playable in the chat.
libsndfile (through soundfile) encodes Opus at 8, 12, 16, 24 or 48 kHz only, so the
trainer's 22.05 kHz sample is resampled to 48 kHz first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import soundfile

from tuner_core.lazy import LazyModule

librosa = LazyModule("librosa")  # seconds to load, and only a resampled sample needs it

OPUS_RATE = 48_000


@dataclass(frozen=True)
class VoiceNote:
    ogg: bytes
    duration_s: int  # whole seconds, as sendVoice takes it


def voice_note(wav: Path) -> VoiceNote:
    """The sound file ``wav`` as a voice message."""
    audio, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    duration_s = max(1, round(len(audio) / rate))
    mono = audio.mean(axis=1)
    if rate != OPUS_RATE:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=OPUS_RATE)
    buffer = io.BytesIO()
    soundfile.write(buffer, mono, OPUS_RATE, format="OGG", subtype="OPUS")
    return VoiceNote(buffer.getvalue(), duration_s)
