"""Analysis of quantized models: per-layer quantization sensitivity."""
