"""qagen: turn a folder of documents into question/answer fine-tuning data."""

__version__ = "0.1.0"
