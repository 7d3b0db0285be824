"""ragtune: retrieval first, fine-tuning when retrieval is not enough, agents that use both."""

__version__ = "0.1.0"
