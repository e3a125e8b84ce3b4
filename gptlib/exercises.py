"""Exercises that check themselves: a hint when not attempted, what is wrong when
wrong, a confirmation when right. Used by the chapters' exercise cells; the worked
answers are in ``solutions/``.

    >>> check(None, 2.0, hint="divide by ln 2")
    Not attempted yet (the answer is None). Hint: divide by ln 2
"""

from __future__ import annotations

import math


def check(answer, expected, *, hint: str, why: str = "", tolerance: float = 1e-3) -> None:
    """Print whether ``answer`` matches ``expected`` (and nothing else: a notebook cell
    shows only the message).

    Whole numbers (counts) match exactly, other numbers within ``tolerance``
    (relative); strings without regard to case and surrounding spaces; anything else
    by ``==``. ``hint`` is printed when the
    answer is missing or wrong, ``why`` (the reason behind the answer) when right.
    """
    print(verdict(answer, expected, hint=hint, why=why, tolerance=tolerance))


def verdict(answer, expected, *, hint: str, why: str = "", tolerance: float = 1e-3) -> str:
    """What :func:`check` prints: starts with "Correct", "Not yet" or "Not attempted"."""
    if answer is None:
        return f"Not attempted yet (the answer is None). Hint: {hint}"
    if isinstance(expected, int) and not isinstance(expected, bool):  # a count: exactly
        try:
            right = float(answer) == expected
        except (TypeError, ValueError):
            return f"Not yet: expected a whole number, got {answer!r}. Hint: {hint}"
    elif isinstance(expected, float):
        try:
            # Relative only: a learning rate of 6e-5 is not "close" to 0. (Exactly 0 needs 0.)
            right = math.isclose(float(answer), expected, rel_tol=tolerance, abs_tol=1e-12)
        except (TypeError, ValueError):
            return f"Not yet: expected a number, got {answer!r}. Hint: {hint}"
    elif isinstance(expected, str):
        right = str(answer).strip().lower() == expected.strip().lower()
    else:
        right = answer == expected
    if right:
        return f"Correct: {answer!r}. {why}".rstrip()
    return f"Not yet: {answer!r} is not it. Hint: {hint}"
