"""The tooling built on the protocol: ablation grids, the demo, bench."""
