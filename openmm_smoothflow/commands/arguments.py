"""Argument types of the ``smoothflow`` commands: a bad value is a usage error (exit code 2) naming
the flag, before anything runs."""
from __future__ import annotations

import argparse


def _number(kind, low: float, strict: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value or (value <= low if strict else value < low) or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


positive_int = _number(int, 0, True, "a positive integer")
non_negative_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a number > 0")
non_negative_float = _number(float, 0.0, False, "a number >= 0")
