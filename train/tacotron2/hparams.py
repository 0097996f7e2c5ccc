"""Every tunable size and setting of the trainer, with NVIDIA's Tacotron2 defaults.

``HParams()`` is the full-size model of NVIDIA's reference implementation
(``hparams.py`` in NVIDIA/tacotron2). Overrides come as ``k=v,k=v`` strings, as
on NVIDIA's ``train.py --hparams`` command line::

    hp = HParams.from_overrides("epochs=10,batch_size=16,lr_schedule=cosine")

An unknown key or a value of the wrong type or range raises :class:`HParamsError`,
whose message names the key and, for an unknown key, suggests the closest one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from train.tacotron2.schedules import SCHEDULES  # the schedule registry owns its names (no torch)
from train.tacotron2.symbols import PROJECT, SYMBOL_SETS

# The hyperparameters that change a mel spectrogram: a neural vocoder is trained on one set.
MEL_HPARAMS = ("sampling_rate", "filter_length", "hop_length", "win_length",
               "n_mel_channels", "mel_fmin", "mel_fmax")


class HParamsError(ValueError):
    """A bad hyperparameter key or value; the message names it."""


def _p(default: Any, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None, doc: str = "") -> Any:
    """A dataclass field carrying its valid range (``lo <= v <= hi``) or choices."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc})


@dataclass
class HParams:
    # --- Run ---------------------------------------------------------------
    epochs: int = _p(500, lo=1)
    seed: int = _p(1234, doc="weights, batch order and dropout")
    # Apart from seed, so trials that search seed are judged on the same clips.
    split_seed: int = _p(1234, doc="the train/validation split")
    device: str = _p("auto", choices=("auto", "cpu", "cuda"))
    amp: bool = _p(False, doc="mixed precision (CUDA only; ignored on the CPU)")
    val_every_steps: int = _p(0, lo=0, doc="0 = validate at the end of every epoch")
    val_fraction: float = _p(0.05, lo=0.0, hi=0.5, doc="share of utterances held out")
    artifacts: str = _p("validation", choices=("validation", "end", "none"),
                        doc="when to write alignment/mel plots and an audio sample")
    test_sentence: str = _p("Printing, in the only sense with which we are at present concerned.")
    vocoder: str = _p("auto", doc="what speaks the audio samples: griffin_lim, "
                      "hifigan_universal, hifigan_ljspeech, a HiFi-GAN generator checkpoint, "
                      "or auto (hifigan_universal where its weights are installed and the mel "
                      "features are HiFi-GAN's, else griffin_lim); see train.tacotron2.vocoder")
    griffin_lim_iters: int = _p(60, lo=1)
    free_running_utterances: int = _p(4, lo=0, doc="validation utterances decoded without "
                                      "teacher forcing at each validation, for stop_rate and "
                                      "length_ratio; 0 = none")
    num_workers: int = _p(0, lo=0)

    # --- Audio (identical to NVIDIA's) ---------------------------------------
    max_wav_value: float = _p(32768.0, lo=1.0)
    sampling_rate: int = _p(22050, lo=8000)
    filter_length: int = _p(1024, lo=64)
    hop_length: int = _p(256, lo=16)
    win_length: int = _p(1024, lo=64)
    n_mel_channels: int = _p(80, lo=1)
    mel_fmin: float = _p(0.0, lo=0.0)
    mel_fmax: float = _p(8000.0, lo=1.0)

    # --- Model -----------------------------------------------------------------
    symbol_set: str = _p("project", choices=tuple(SYMBOL_SETS), doc="text front end and symbol "
                         "table (train.tacotron2.symbols); nvidia = NVIDIA's english_cleaners "
                         "and ids")
    n_symbols: int = _p(len(PROJECT.symbols), lo=1, doc="the size of symbol_set's table; "
                        "follows symbol_set when only that is given")
    symbols_embedding_dim: int = _p(512, lo=1)
    encoder_kernel_size: int = _p(5, lo=1)
    encoder_n_convolutions: int = _p(3, lo=1)
    encoder_embedding_dim: int = _p(512, lo=2, doc="even: the BiLSTM splits it in two")
    n_frames_per_step: int = _p(1, lo=1)
    decoder_rnn_dim: int = _p(1024, lo=1)
    prenet_dim: int = _p(256, lo=1)
    p_prenet_dropout: float = _p(0.5, lo=0.0, hi=0.99, doc="kept on at inference, as in the paper")
    max_decoder_steps: int = _p(1000, lo=1)
    gate_threshold: float = _p(0.5, lo=0.0, hi=1.0)
    p_attention_dropout: float = _p(0.1, lo=0.0, hi=0.99)
    p_decoder_dropout: float = _p(0.1, lo=0.0, hi=0.99)
    attention_rnn_dim: int = _p(1024, lo=1)
    attention_dim: int = _p(128, lo=1)
    attention_location_n_filters: int = _p(32, lo=1)
    attention_location_kernel_size: int = _p(31, lo=1)
    postnet_embedding_dim: int = _p(512, lo=1)
    postnet_kernel_size: int = _p(5, lo=1)
    postnet_n_convolutions: int = _p(5, lo=2)
    mask_padding: bool = _p(True)

    # --- Optimisation ------------------------------------------------------------
    learning_rate: float = _p(1e-3, lo=0.0)
    weight_decay: float = _p(1e-6, lo=0.0)
    adam_eps: float = _p(1e-8, lo=0.0, doc="Adam's epsilon: PyTorch's default, which NVIDIA's "
                         "train.py uses")
    grad_clip_thresh: float = _p(1.0, lo=0.0)
    batch_size: int = _p(64, lo=1)
    gate_pos_weight: float = _p(1.0, lo=0.0, doc="BCE weight of the rare 'stop' steps")
    guided_attention_weight: float = _p(0.0, lo=0.0, doc="weight of Tachibana et al.'s "
                                        "guided-attention loss; 0 = off (NVIDIA's loss)")
    guided_attention_sigma: float = _p(0.4, lo=0.01, hi=1.0, doc="width of its diagonal band, "
                                       "as a share of the text and of the decoder steps")
    guided_attention_fade_steps: int = _p(0, lo=0, doc="steps over which its weight fades "
                                          "linearly to 0; 0 = it never fades")
    max_loss_growth: float = _p(100.0, lo=0.0, doc="the run ends diverged (exit 3) when a "
                                "training step's or a validation's loss (mel + gate) exceeds "
                                "this many times the run's first training step's (an "
                                "untrained model's, or the warm start's); 0 = only a NaN/inf "
                                "loss ends it")

    # --- Learning-rate schedule (see train.tacotron2.schedules) -------------------
    lr_schedule: str = _p("constant", doc="one of train.tacotron2.schedules.SCHEDULES")
    warmup_steps: int = _p(0, lo=0, doc="linear warm-up from ~0 to learning_rate")
    lr_decay_steps: int = _p(0, lo=0, doc="decay horizon after warm-up; 0 = the whole run")
    lr_min_ratio: float = _p(0.01, lo=0.0, hi=1.0, doc="final lr / learning_rate of a decay")
    plateau_patience: int = _p(0, lo=0, doc="validations without improvement before the lr "
                                           "is cut; 0 = no plateau adaptation")
    plateau_factor: float = _p(0.5, lo=0.01, hi=0.99)

    # ------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_overrides(cls, overrides: str | dict[str, Any] | None = None,
                       base: HParams | None = None) -> HParams:
        """``base`` (or the defaults) with ``overrides`` applied and validated.

        ``overrides`` is ``"k=v,k=v"``, a JSON object, or a mapping of keys to values
        (strings are parsed).
        """
        values = dataclasses.asdict(base or cls())
        pairs = _split_overrides(overrides)
        for key, raw in pairs.items():
            values[key] = _coerce(key, raw)
        table = SYMBOL_SETS.get(values["symbol_set"])
        if "symbol_set" in pairs and "n_symbols" not in pairs and table is not None:
            values["n_symbols"] = len(table.symbols)  # the embedding follows the table
        hp = cls(**values)
        hp.validate()
        return hp

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HParams:
        """Rebuild from :meth:`to_dict` output (e.g. from a checkpoint); validated."""
        return cls.from_overrides(values, base=cls())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
            if lo is not None and value < lo:
                raise HParamsError(f"{f.name}={value}: must be >= {lo}")
            if hi is not None and value > hi:
                raise HParamsError(f"{f.name}={value}: must be <= {hi}")
            if choices is not None and value not in choices:
                raise HParamsError(f"{f.name}={value!r}: must be one of {', '.join(choices)}")
        table_size = len(SYMBOL_SETS[self.symbol_set].symbols)
        if self.n_symbols != table_size:
            raise HParamsError(f"n_symbols={self.n_symbols}: symbol_set={self.symbol_set!r} has "
                               f"{table_size} symbols (leave n_symbols out to follow it)")
        if self.lr_schedule not in SCHEDULES:
            raise HParamsError(f"lr_schedule={self.lr_schedule!r}: must be one of "
                               f"{', '.join(SCHEDULES)}")
        from train.tacotron2.vocoder import spec_problem  # the vocoders own their names

        if problem := spec_problem(self.vocoder):
            raise HParamsError(f"vocoder={self.vocoder!r}: {problem}")
        if self.encoder_embedding_dim % 2:
            raise HParamsError(f"encoder_embedding_dim={self.encoder_embedding_dim}: must be even")
        if self.win_length > self.filter_length:
            raise HParamsError(f"win_length={self.win_length}: must be <= filter_length "
                               f"({self.filter_length})")
        if self.mel_fmax > self.sampling_rate / 2:
            raise HParamsError(f"mel_fmax={self.mel_fmax}: must be <= sampling_rate / 2 "
                               f"({self.sampling_rate / 2})")
        odd = ("encoder_kernel_size", "postnet_kernel_size", "attention_location_kernel_size")
        for name in odd:
            if getattr(self, name) % 2 == 0:
                raise HParamsError(f"{name}={getattr(self, name)}: must be odd ('same' padding)")


# Named starting points for ``--profile``; NVIDIA's full size is the default.
PROFILES: dict[str, dict[str, Any]] = {
    # A model small enough to train on a laptop CPU in minutes: the same architecture
    # with narrow layers, and 3 frames per decoder step to shorten the decoder loop.
    # Guided attention, small batches (more updates per CPU second) and a weighted stop
    # gate make it align and stop by itself within about 250 steps on the demo corpus.
    "tiny": {
        "symbols_embedding_dim": 64, "encoder_embedding_dim": 64, "attention_rnn_dim": 128,
        "decoder_rnn_dim": 128, "prenet_dim": 64, "attention_dim": 64,
        "attention_location_n_filters": 8, "postnet_embedding_dim": 64,
        "n_frames_per_step": 3, "batch_size": 8, "max_decoder_steps": 300,
        "guided_attention_weight": 2.0, "gate_pos_weight": 10.0,
        "val_fraction": 0.1, "learning_rate": 2e-3, "epochs": 24,
    },
}


def unknown_key_message(key: str, valid: list[str]) -> str:
    """``"foo: unknown key; did you mean fob?"`` (the suggestion only when one is close)."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{key}: unknown key{hint}"


def _split_overrides(overrides: str | dict[str, Any] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, str) and overrides.lstrip().startswith("{"):
        # JSON, for programs: values may then contain commas (test_sentence).
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise HParamsError(f"hparams JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise HParamsError("hparams JSON: expected an object of key: value")
    if isinstance(overrides, dict):
        pairs = dict(overrides)
    else:
        pairs = {}
        for item in filter(None, (s.strip() for s in overrides.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise HParamsError(f"{item!r}: expected key=value")
            pairs[key.strip()] = value.strip()
    valid = HParams.keys()
    for key in pairs:
        if key not in valid:
            raise HParamsError(unknown_key_message(key, valid))
    return pairs


def _coerce(key: str, raw: Any) -> Any:
    """Convert ``raw`` to the declared type of ``key``, or say why it cannot be."""
    kind = type(HParams.__dataclass_fields__[key].default)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            if isinstance(raw, str):
                number = float(raw)
                if not number.is_integer():
                    raise ValueError
                return int(number)
            return int(raw)
        if kind is float:
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise HParamsError(f"{key}={raw!r}: expected {kind.__name__}") from None
