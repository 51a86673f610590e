"""Using a finished model: load a checkpoint (model.py), transcribe audio (transcribe.py), score it on
an evaluation split (evaluate.py). The command-line side of `fastctc transcribe`/`eval` is in cli.py."""
