"""charrnn: character-level recurrent language models, torch-rnn's modern successor.

The Python API mirrors the CLI; heavy modules load on first use::

    import charrnn
    charrnn.preprocess("data/speeches.txt")
    result = charrnn.train(input_h5="data/speeches.h5", input_json="data/speeches.json", gpu=-1)
    print(charrnn.sample(result.checkpoint, length=500, temperature=0.9))
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "preprocess": "preprocessing", "Vocabulary": "vocab", "load_splits": "data", "make_batches": "data",
    "CharRNN": "model", "ModelConfig": "model", "Trainer": "training.loop", "TrainConfig": "training.options",
    "train": "training.loop", "evaluate": "training.step", "build_model": "training.step",
    "build_optimizer": "training.step", "train_step": "training.step",
    "load_checkpoint": "checkpoint", "Sampler": "sampling.sampler", "sample": "sampling.sampler",
    "select_device": "device", "CharRNNError": "errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
