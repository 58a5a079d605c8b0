"""The outside engines: vLLM (sampling for AR-based methods) and lm-evaluation-harness (the harness's
runs as an lm-eval model, its tasks as lm-eval task files)."""
