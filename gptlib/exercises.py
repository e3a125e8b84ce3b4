"""Exercises that check themselves: a hint when not attempted, what is wrong when
wrong, a confirmation when right. Used by the chapters' exercise cells; the worked
answers are in ``solutions/``.

    >>> check(None, 2.0, hint="divide by ln 2")
    Not attempted yet (the answer is None). Hint: divide by ln 2
"""

from __future__ import annotations

import math


def check(answer, expected, *, hint: str, why: str = "", tolerance: float = 1e-3) -> bool:
    """Print whether ``answer`` matches ``expected``; return True when it does.

    Numbers match within ``tolerance`` (relative); strings without regard to case
    and surrounding spaces; anything else by ``==``. ``hint`` is printed when the
    answer is missing or wrong, ``why`` (the reason behind the answer) when right.
    """
    if answer is None:
        print(f"Not attempted yet (the answer is None). Hint: {hint}")
        return False
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            right = math.isclose(float(answer), expected, rel_tol=tolerance, abs_tol=tolerance)
        except (TypeError, ValueError):
            print(f"Not yet: expected a number, got {answer!r}. Hint: {hint}")
            return False
    elif isinstance(expected, str):
        right = str(answer).strip().lower() == expected.strip().lower()
    else:
        right = answer == expected
    if right:
        print(f"Correct: {answer!r}. {why}".rstrip())
    else:
        print(f"Not yet: {answer!r} is not it. Hint: {hint}")
    return right
