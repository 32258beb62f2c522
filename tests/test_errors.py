"""Every exception class in zarr_aac.errors survives pickling with its message and fields.

Errors cross process boundaries (import_files' worker pool, dask workers), where an exception
that cannot be rebuilt turns into a confusing failure of the pool itself. The classes are found
by inspection, so a class added to the module is tested without touching this file.
"""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest

from zarr_aac import errors

ERROR_CLASSES = sorted(
    (
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and not issubclass(cls, Warning) and cls.__module__ == errors.__name__
    ),
    key=lambda cls: cls.__name__,
)

SAMPLE_ARGUMENTS: dict[str, Any] = {
    "key": "recordings/site-a/audio/c/3/0",
    "reason": "checksum mismatch in frames 16-31",
    "source": "field/2024-05-01T06-00-00.wav",
    "failures": {
        "a.wav": errors.SourceError("a.wav", "truncated after 12 s"),
        "b.m4a": errors.CorruptSourceError("b.m4a", "stsz table ends at byte 4096"),
    },
}
"""A value for each constructor parameter of the error classes, by parameter name."""


def _constructor_parameters(cls: type[BaseException]) -> list[str] | None:
    """Parameter names of ``cls.__init__`` if the errors module defines one, else None (message only)."""
    for klass in cls.__mro__:
        if klass.__module__ == errors.__name__ and "__init__" in vars(klass):
            return [name for name in inspect.signature(klass.__init__).parameters if name != "self"]
    return None


def _make(cls: type[BaseException]) -> BaseException:
    parameters = _constructor_parameters(cls)
    if parameters is None:
        return cls(f"{cls.__name__}: something went wrong at sample 48000")
    missing = [name for name in parameters if name not in SAMPLE_ARGUMENTS]
    if missing:
        pytest.fail(f"{cls.__name__}({', '.join(parameters)}): add sample values for {missing} to SAMPLE_ARGUMENTS")
    return cls(**{name: SAMPLE_ARGUMENTS[name] for name in parameters})


def _comparable(value: Any) -> Any:
    """``value`` with exceptions (which compare by identity) replaced by their type, text and fields."""
    if isinstance(value, BaseException):
        return type(value), str(value), _comparable(value.args), _comparable(vars(value))
    if isinstance(value, dict):
        return {name: _comparable(item) for name, item in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_comparable(item) for item in value)
    return value


def test_every_class_is_found() -> None:
    assert errors.ZarrAACError in ERROR_CLASSES
    assert errors.CorruptChunkError in ERROR_CLASSES
    assert all(issubclass(cls, errors.ZarrAACError | UserWarning) for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_pickles_with_message_and_fields(cls: type[BaseException]) -> None:
    original = _make(cls)
    original.add_note("while reading recordings/site-a")

    restored = pickle.loads(pickle.dumps(original))

    assert type(restored) is cls
    assert str(restored) == str(original)
    assert _comparable(restored.args) == _comparable(original.args)
    assert _comparable(vars(restored)) == _comparable(vars(original))
    for name in _constructor_parameters(cls) or []:
        assert _comparable(getattr(restored, name)) == _comparable(getattr(original, name))
