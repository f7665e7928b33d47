"""Gen Studio: a no-code studio for adapting generative models."""

__version__ = "0.1.0"
