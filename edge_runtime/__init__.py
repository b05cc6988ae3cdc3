"""edge_runtime: run an edgecomplete bundle on a device.

Imports numpy, the standard library and, when a bundle is loaded, one
interpreter (onnxruntime, ai-edge-litert or tflite-runtime). Nothing else.
"""

from edge_runtime.text import normalise, words
from edge_runtime.vocab import Vocab

__all__ = ["Vocab", "normalise", "words"]
