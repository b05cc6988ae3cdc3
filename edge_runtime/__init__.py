"""edge_runtime: run an edgecomplete bundle on a device.

Imports numpy, the standard library and, when a bundle is loaded, one
interpreter (onnxruntime, ai-edge-litert or tflite-runtime). Nothing else.

    import edge_runtime

    model = edge_runtime.load("artifacts/default")   # model.int8.onnx; backend="auto"
    model.suggest("see you tomor", k=3)               # [Suggestion(word='tomorrow', score=...), ...]
    model.complete("see you", n_words=3)              # ['tomorrow', ...]
    model.complete("see you", n_words=3, mbr=edge_runtime.MBR())   # best expected overlap, from samples
    session = model.session()                         # per keystroke: one step per finished word
    session.type("see you ")
    session.suggest(3)

Modules: model (load, Model, Suggestion), session (Session), search (beam
search), mbr (minimum-Bayes-risk completion), backends (the interpreters),
typed (finished words and the word in progress), manifest (the bundle
contract), vocab, text (normalisation).
"""

from edge_runtime.backends import BACKENDS, installed_backends
from edge_runtime.manifest import BundleError, load_manifest
from edge_runtime.mbr import MBR
from edge_runtime.model import DEFAULT_MODEL_FILE, MAX_CONTEXT_WORDS, Model, Suggestion, load
from edge_runtime.session import Session
from edge_runtime.text import normalise, words
from edge_runtime.vocab import Vocab

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL_FILE",
    "MAX_CONTEXT_WORDS",
    "MBR",
    "BundleError",
    "Model",
    "Session",
    "Suggestion",
    "Vocab",
    "installed_backends",
    "load",
    "load_manifest",
    "normalise",
    "words",
]
