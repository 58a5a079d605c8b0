"""Baselines under the shared protocol; importing this package registers them."""

from baselines import ar_sft  # noqa: F401
