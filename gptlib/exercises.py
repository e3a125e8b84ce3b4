"""Exercises that check themselves: a hint when not attempted, what is wrong when
wrong, a confirmation when right. A chapter's exercise cell names its exercise and
passes the answer; what the answer should be, the hint and the reason behind it are
kept in :mod:`gptlib.answers` (spoilers: look there only after trying). The worked
answers are in ``solutions/``.

    >>> check("10.4", None)
    Not attempted yet (the answer is None). Hint: layers x batch x heads x T x T
"""

from __future__ import annotations

import math

from gptlib import answers


def check(exercise: str, answer) -> None:
    """Print whether ``answer`` is right for ``exercise`` ("CC.N": chapter CC's
    exercise N), and nothing else: a notebook cell shows only the message.

    An exercise that the registry does not know raises ValueError.
    """
    print(assess(exercise, answer))


def assess(exercise: str, answer) -> str:
    """What :func:`check` prints: the :func:`verdict` of ``answer`` against the entry of
    ``exercise`` in :mod:`gptlib.answers`. The expected value is computed (where it is
    computed at all) only when there is an answer to compare with it."""
    entry = answers.answer(exercise)
    if answer is not None and entry.judge is not None:
        answer = entry.judge(answer)  # an answer that is a function: whether it computes the reference
    expected = None if answer is None else answers.expected(exercise)
    return verdict(answer, expected, hint=entry.hint, why=entry.why, tolerance=entry.tolerance)


def verdict(answer, expected, *, hint: str, why: str = "", tolerance: float = 1e-3) -> str:
    """Whether ``answer`` matches ``expected``: starts with "Correct", "Not yet" or "Not attempted".

    Whole numbers (counts) match exactly, other numbers within ``tolerance``
    (relative); strings without regard to case and surrounding spaces; anything else
    by ``==``. ``hint`` is given when the answer is missing or wrong, ``why`` (the
    reason behind the answer) when right.
    """
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
