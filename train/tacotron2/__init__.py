"""Tacotron2, as a library: everything a training run and a synthesis are made of.

- ``model``: Tacotron2 as in the paper (Shen et al., 2018); ``loss``: its loss;
- ``hparams``: every size and setting, with its profiles and validation;
- the text front end (``symbols``, ``text``) and the audio one (``audio``: log-mel
  features, Griffin-Lim; ``vocoder`` and ``hifigan``: the vocoders that speak them);
- ``data``: the corpus, its split, cached features, batches and loaders;
- the training loop (``trainer``, with ``schedules``, ``alignment``, ``free_running``
  and ``warm_start``) and its event schema (``events``);
- ``checkpoint``: checkpoints written atomically (``atomic``) and read back;
- ``artifacts`` and ``figures``: the plots and audio samples of a run.
- a listener's measures: ``intelligibility`` (a recogniser's CER), ``mcd`` (mel-cepstral
  distortion with DTW) and ``robustness`` (skipped and repeated words).

The rule of this package: it imports nothing from the tools above it (train/__main__,
synthesize, corpus, render, launcher, arguments), nor from tuner_core or bot. Nothing is
imported here, so importing one module pays only for that module.
"""
