"""Command-line values that start with a minus sign (``--timeout -5``, ``--params -7e9``).

argparse reads ``-7e9`` or ``-inf`` as an option and answers "expected one argument", which
hides what was wrong. Joining such a value to its option (``--params=-7e9``) lets the option's
own check refuse it with a message that names the value.
"""
from __future__ import annotations

import argparse


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with ``--opt -<number>`` written as ``--opt=-<number>`` for options that take a value."""
    takes_value = set()
    for action in parser._actions:  # argparse has no public view of its options
        if action.option_strings and action.nargs is None and not isinstance(
                action, (argparse._StoreConstAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
            takes_value.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                takes_value.update(o for a in sub._actions if a.option_strings and a.nargs is None
                                   and not isinstance(a, (argparse._StoreConstAction, argparse._StoreTrueAction,
                                                          argparse._StoreFalseAction))
                                   for o in a.option_strings)
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-") and _numeric(argv[i + 1]):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out
