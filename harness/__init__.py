"""ladir-bench harness: CLI, configs, run directories, the Method protocol, training and evaluation."""
