"""Turn a trained checkpoint into a bundle: one-step ONNX and TFLite graphs, fp32 and int8, verified."""
