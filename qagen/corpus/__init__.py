"""Stage 1: read a folder of documents and chunk them."""
