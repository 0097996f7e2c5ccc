"""Train and use one Tacotron2 model: the tools at the top, the library in train/tacotron2/.

The tools, each an entry point:

- ``python -m train`` (``__main__``, the ``smart-tuner-train`` script): one training run;
- ``python -m train.synthesize``: a checkpoint speaks, with its alignment and stop scores;
- ``python -m train.evaluate``: a checkpoint judged as a listener would (gate, length, CER,
  MCD, skipped and repeated words), or a vocoder by copy synthesis;
- ``python -m train.corpus``: a small synthetic corpus for the demo and the tests;
- ``python -m train.render``: the plots and audio of a run that stopped before drawing them;
- ``python -m train.launcher``: a warm process (the tuner's) that forks trainers without
  paying their imports again;
- ``arguments``: the value types the project's command lines share.

``train.tacotron2`` is the library they use: the model, its loss and hyperparameters, the
text and audio front end, the data pipeline, the training loop and its event schema,
checkpoints and artifacts.

train knows nothing of Optuna, MLflow or Telegram: the tuner (tuner_core) and the bot use
it, never the other way round. Nothing is imported here, so importing a tool or the
library pays only for what it uses.
"""
