"""Placeholders for exercise answers in the student notebooks (``make student``).

A student notebook replaces each solution cell by a stub. When later cells use a name that
the solution defined (``my_augmentation``, say), the stub defines it as
``not_written("my_augmentation", "ex-aug-own")``: an object that raises
``NotImplementedError`` as soon as it is called or used, so every cell that depends on the
missing answer says so, and checks such as :func:`cxrlib.checks.check_augmentation` report
"not written yet" instead of crashing.
"""

from __future__ import annotations

from typing import Any, NoReturn


class NotWritten:
    """Stands for an answer that is not written yet; any real use raises NotImplementedError."""

    __slots__ = ("_name", "_label")

    def __init__(self, name: str, label: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_label", label)

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            f"Exercise {self._label}: `{self._name}` is not written yet; write it in the exercise's cell and run it"
        )

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):  # protocols (__array__, _repr_html_, ...): "not supported"
            raise AttributeError(attribute)
        self._fail()

    def __repr__(self) -> str:
        return f"<exercise {self._label}: {self._name} not written yet>"

    __call__ = __getitem__ = __iter__ = __len__ = __bool__ = __float__ = __int__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __lt__ = __le__ = __gt__ = __ge__ = __contains__ = __setattr__ = _fail


def not_written(name: str, label: str) -> NotWritten:
    """A placeholder for ``name``, the answer to exercise ``label``."""
    return NotWritten(name, label)
