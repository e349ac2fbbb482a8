"""ftlang: a declarative language for LLM fine-tuning pipelines."""

__version__ = "0.1.0"
