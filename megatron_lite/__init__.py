"""megatron_lite: GPT-NeoX-style GPT training on DeepSpeed, in readable Python."""

__version__ = "0.1.0"
