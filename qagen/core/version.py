"""qagen's version: part of every run's input fingerprint (a new qagen re-checks an unchanged corpus)."""

VERSION = "0.5.0"
