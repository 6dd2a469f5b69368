"""Failures as a request's reply carries them."""

import os


def fail(code):
    """The OSError for errno *code*, which fs.py turns into the reply."""
    return OSError(code, os.strerror(code))
