"""The checks of option values that several commands share, in one place each.

Sizes in voxels (``--patch-size``, ``--window-size``: z, y, x) must be whole numbers >= 1 and a patch
or window at most :data:`MAX_PATCH_VOXELS` voxels (256^3: a typo such as ``100000,16,16`` would
otherwise allocate tens of GB before anything says why); spacings (``--spacing``: x, y, z mm) finite
and > 0; intensity windows (``--window``: low, high) finite with low < high. Each check raises
:class:`OptionError` (a ValueError) with one line naming the option; the click types below turn it into
a usage error, the configuration classes (``FinetuneConfig``, ``PretrainConfig``) into PglZooError, so
the Python API refuses what the command line refuses.

Torch-free, like the command line's start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import click

MAX_PATCH_VOXELS = 256**3

__all__ = ["MAX_PATCH_VOXELS", "OptionError", "voxel_sizes", "spacing", "window", "in_range", "SizesType",
           "SpacingType", "WindowType", "FiniteFloatRange", "OVERLAP", "PROBABILITY", "NON_NEGATIVE_INT",
           "NON_NEGATIVE_FLOAT"]


class OptionError(ValueError):
    """An option value outside what the option allows (the message names the option)."""


def _numbers(values: Sequence, count: int, option: str, what: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise OptionError(f"{option}: expected {count} numbers ({what}), got {values!r}") from None
    if len(numbers) != count:
        raise OptionError(f"{option}: expected {count} numbers ({what}), got {len(numbers)}: {values!r}")
    if not all(math.isfinite(n) for n in numbers):
        raise OptionError(f"{option}: values must be finite numbers, got {values!r}")
    return numbers


def voxel_sizes(values: Sequence, option: str = "--patch-size", minimum: int = 1,
                limit: int = MAX_PATCH_VOXELS) -> tuple[int, int, int]:
    """(z, y, x) voxel counts: whole numbers >= ``minimum`` whose product is at most ``limit``."""
    numbers = _numbers(values, 3, option, "z, y, x voxels")
    for n in numbers:
        if n != int(n):
            raise OptionError(f"{option}: {n:g} is not a whole number of voxels")
        if n < minimum:
            raise OptionError(f"{option}: sizes must be >= {minimum} voxels, got {','.join(f'{v:g}' for v in numbers)}")
    sizes = tuple(int(n) for n in numbers)
    total = math.prod(sizes)
    if total > limit:
        raise OptionError(f"{option}: {'x'.join(map(str, sizes))} is {total:,} voxels per patch, more than the limit "
                          f"{limit:,} (256^3)")
    return sizes  # type: ignore[return-value]


def spacing(values: Sequence, option: str = "--spacing") -> tuple[float, float, float]:
    """(x, y, z) voxel spacing in mm: finite and > 0."""
    numbers = _numbers(values, 3, option, "x, y, z mm")
    if min(numbers) <= 0:
        raise OptionError(f"{option}: spacings must be > 0 mm, got {','.join(f'{v:g}' for v in numbers)}")
    return numbers  # type: ignore[return-value]


def window(values: Sequence, option: str = "--window") -> tuple[float, float]:
    """(low, high) intensity window in scan units: finite, low < high."""
    low, high = _numbers(values, 2, option, "low, high")
    if not low < high:
        raise OptionError(f"{option}: low must be below high, got {low:g},{high:g}")
    return low, high


def in_range(value, option: str, low: float | None = None, high: float | None = None,
             high_open: bool = False) -> None:
    """``low <= value <= high`` (``< high`` with ``high_open``), for a scalar option; None: unbounded."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            bound = f"in [{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            bound = f">= {low:g}"
        else:
            bound = f"<= {high:g}"
        raise OptionError(f"{option} must be {bound}, got {value!r}")


def _split(text: str) -> list[str]:
    return [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]


class _Checked(click.ParamType):
    """A click type that parses "a,b,c" (or "axbxc") and applies one of the checks above; ``keywords``
    (e.g. "native", "none") pass through as lower-case strings."""

    def __init__(self, check, keywords: tuple[str, ...] = (), **kwargs) -> None:
        self.check, self.keywords, self.kwargs = check, keywords, kwargs

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        text = str(value).strip()
        if text.lower() in self.keywords:
            return text.lower()
        option = param.opts[0] if param is not None and param.opts else "value"
        try:
            return self.check(_split(text), option, **self.kwargs)
        except OptionError as exc:
            extra = f" (or {'/'.join(self.keywords)})" if self.keywords else ""
            self.fail(f"{str(exc).split(': ', 1)[-1]}{extra}", param, ctx)


class SizesType(_Checked):
    name = "z,y,x"

    def __init__(self, minimum: int = 1) -> None:
        super().__init__(voxel_sizes, minimum=minimum)


class SpacingType(_Checked):
    name = "x,y,z"

    def __init__(self, keywords: tuple[str, ...] = ()) -> None:
        super().__init__(spacing, keywords)


class WindowType(_Checked):
    name = "low,high"

    def __init__(self, keywords: tuple[str, ...] = ()) -> None:
        super().__init__(window, keywords)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false against any bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


OVERLAP = FiniteFloatRange(0, 1, max_open=True)  # sliding-window overlap, [0, 1)
PROBABILITY = FiniteFloatRange(0, 1)
NON_NEGATIVE_INT = click.IntRange(min=0)
NON_NEGATIVE_FLOAT = FiniteFloatRange(min=0)


def config_default(config_class: type, name: str) -> Any:
    """The default of field ``name`` of a config dataclass, for a command-line option (one home for every
    default: the command shows and uses what the Python API uses)."""
    from dataclasses import MISSING, fields

    field = next(f for f in fields(config_class) if f.name == name)
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    raise KeyError(f"{config_class.__name__}.{name} has no default")
