"""llmcls: classify scientific abstracts into arXiv categories with LLMs and encoders, scored by one metrics module."""

__version__ = "0.1.0"
