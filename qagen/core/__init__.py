"""Core types: documents, chunks, pairs, their content IDs, the record types, errors and progress."""
