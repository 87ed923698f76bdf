"""Immutable value classes without ``dataclasses``.

Every agent process (``serve``, the supervising process, a person's command) starts with the
agent's record classes. Made by ``@dataclasses.dataclass(frozen=True)`` they cost a start
~20 ms of CPU: importing ``dataclasses`` (with ``inspect``, ``ast``, ``dis`` and ``tokenize``,
~10 ms) and compiling every class's generated methods at import (3.5 ms for a class of 21
fields). :class:`Frozen` gives the same behaviour from methods compiled once, with the rest of
the agent's bytecode: equality and hash over the fields (only between instances of one class),
a ``Name(field=value, ...)`` repr, and no assignment once made. A subclass declares its fields
as annotations, in order, and sets them in its ``__init__`` with :func:`init_fields`.
"""

from __future__ import annotations

import operator
from typing import Callable, ClassVar, Tuple


class FrozenError(AttributeError):
    """An assignment to (or deletion of) a field of a :class:`Frozen` instance."""


class Frozen:
    """Base of an immutable value class whose fields are its annotations, in order."""

    __slots__ = ()
    #: The field names, in order (the subclass's own annotations).
    _fields: ClassVar[Tuple[str, ...]] = ()
    #: An instance's field values as one tuple, what is compared and hashed.
    _field_values: ClassVar[Callable[[object], Tuple[object, ...]]]

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._fields = tuple(cls.__dict__.get("__annotations__", ()))
        if len(cls._fields) < 2:
            raise TypeError(f"{cls.__name__} needs two fields or more (attrgetter gives a tuple only then)")
        cls._field_values = operator.attrgetter(*cls._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        values = type(self)._field_values
        return values(self) == values(other)

    def __hash__(self) -> int:
        return hash(type(self)._field_values(self))

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({values})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r}")


def init_fields(instance: Frozen, **values: object) -> None:
    """Set a :class:`Frozen` instance's fields (from its ``__init__``)."""
    vars(instance).update(values)
