"""Partial labels: which classes each case has contoured.

Radiotherapy data is contoured organ by organ, and not every organ in every patient: an organ nobody
drew is *unknown* in that case, not background. A labelled-classes file says, per case, which classes
were drawn; :class:`pgl_zoo.finetune.losses.DiceCELoss` then trains with the marginal loss (the
probabilities of a case's uncontoured classes are merged into background) and
:func:`pgl_zoo.evaluate.evaluate_folders` scores a class only on the cases that contour it.

Accepted JSON forms (class names resolve through the data set's label names; ids are integers):

* ``{"case_001": ["Brainstem", "SpinalCord"], "case_002": [1, 2, 7]}``: case -> class names or ids;
* ``{"case_001": {"structures": ["Brainstem", ...], ...}, ...}``: the shape of OpenKBP's
  ``structures.json`` (other keys of each entry are ignored).

Background (class 0) is always labelled. Every case that is trained or scored must be listed: a case
missing from the file is refused, never taken as fully contoured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["LabelledClasses", "read_labelled_classes"]


@dataclass(frozen=True)
class LabelledClasses:
    """``by_case[name]``: the class ids (0..num_classes-1, 0 included) contoured in that case."""

    by_case: Mapping[str, frozenset[int]]
    num_classes: int
    source: str = "labelled classes"

    def of(self, case: str) -> frozenset[int]:
        try:
            return self.by_case[case]
        except KeyError:
            raise DataError(f"{self.source}: case {case!r} is not listed (every case must say which classes "
                            "were contoured)") from None

    def mask(self, case: str) -> np.ndarray:
        """A bool vector of ``num_classes``: True where the class is contoured in ``case``."""
        out = np.zeros(self.num_classes, dtype=bool)
        out[list(self.of(case))] = True
        return out

    def check_label(self, case: str, label: np.ndarray) -> None:
        """Refuse a label map that holds a class the file says was not contoured in that case."""
        present = {int(v) for v in np.unique(label)}
        extra = sorted(present - self.of(case))
        if extra:
            raise DataError(f"{self.source}: case {case!r} has voxels of class(es) {extra} in its label map, but "
                            "they are not listed as contoured there")

    def check_cases(self, cases: Iterable[str]) -> None:
        missing = sorted(set(cases) - set(self.by_case))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{self.source}: {len(missing)} case(s) not listed: {shown} (every case must say which "
                            "classes were contoured)")


def _class_id(value: object, ids_by_name: Mapping[str, int], num_classes: int, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: {value!r} is not a class name or id")
    if isinstance(value, int):
        if not 0 <= value < num_classes:
            raise DataError(f"{where}: class id {value} is not in 0..{num_classes - 1}")
        return value
    if isinstance(value, str):
        if value in ids_by_name:
            return ids_by_name[value]
        if value.isdigit() and int(value) < num_classes:
            return int(value)
        raise DataError(f"{where}: unknown class {value!r} (known: {', '.join(sorted(ids_by_name))})")
    raise DataError(f"{where}: {value!r} is not a class name or id")


def labelled_classes_from(data: object, label_names: Mapping[str, str] | None, num_classes: int,
                          source: str = "labelled classes") -> LabelledClasses:
    """A :class:`LabelledClasses` from the parsed JSON ``data``; ``label_names`` maps str(id) -> name."""
    if not isinstance(data, dict) or not data:
        raise DataError(f"{source}: expected an object of case -> contoured classes")
    ids_by_name = {str(name): int(i) for i, name in (label_names or {}).items()}
    by_case: dict[str, frozenset[int]] = {}
    for case, entry in data.items():
        classes = entry.get("structures") if isinstance(entry, dict) else entry
        if not isinstance(classes, list):
            raise DataError(f"{source}: case {case!r}: expected a list of class names or ids (or an object with "
                            "'structures')")
        by_case[str(case)] = frozenset({0} | {_class_id(c, ids_by_name, num_classes, f"{source}: case {case!r}")
                                              for c in classes})
    return LabelledClasses(by_case, num_classes, source)


def read_labelled_classes(path: str | Path, label_names: Mapping[str, str] | None,
                          num_classes: int) -> LabelledClasses:
    """Read a labelled-classes JSON file (see the module docstring); DataError names the file and the fault."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not a readable labelled-classes JSON file ({exc})") from None
    return labelled_classes_from(data, label_names, num_classes, str(path))
