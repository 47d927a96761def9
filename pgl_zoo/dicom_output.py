"""Label maps as DICOM objects that reference their source series: DICOM Segmentation and RT Structure Set.

Axis order and units: label arrays are (z, y, x) like every array in pgl-zoo; SimpleITK images are
indexed (x, y, z); positions and spacings are in millimetres in the patient coordinate system of
the DICOM series (LPS). The label map is given on the grid of the series as SimpleITK reads it (what
:func:`pgl_zoo.inference.segment_files` computes), as an image or as a (z, y, x) array whose index z
counts the slices in ascending order along the slice normal (row direction x column direction of
ImageOrientationPatient, ITK's order). Slices are matched to the series' instances by their
ImagePositionPatient, never by file name or order; a label map that does not lie on the series'
grid is refused.

Both writers describe every class of the model's card (``label_names``: class id as a string ->
name) whether the prediction contains it or not, so that a reader sees the model's whole label set
and a class the model did not find is explicit:

* :func:`write_dicom_seg`: a DICOM Segmentation (highdicom, BINARY), one segment per class whose
  segment number is the class id, labelled with the class name and coded with SNOMED CT
  (:data:`SNOMED_CODES`; a name without a code gets the generic category and type "Tissue",
  SCT 85756007, and one warning naming the class). Each segment has a frame for every source slice
  it appears in (empty frames are omitted; a class absent from the prediction is a segment without
  frames). The algorithm identification is the model's name, family "Artificial Intelligence" and,
  as version, the sha256 of its weights ("unverified" when unknown).
* :func:`write_rtstruct`: an RT Structure Set (rt-utils), one ROI per class named as in the card
  (a class absent from the prediction is an ROI without contours), ROI generation algorithm
  AUTOMATIC, interpreted type ORGAN, approval status UNAPPROVED. Each slice's outline is traced at
  twice the in-plane resolution, so it runs a quarter pixel inside the pixel edges, and every point
  is placed from the position of the slice it references: a reader that fills the pixels whose
  centre lies inside (planning systems) and one that fills the polygon with its outline (rt-utils)
  both get the label map's pixels back (tests/test_dicom_output.py measures it).

Every file is written to a temporary name, read back with pydicom and compared, then renamed
(:func:`pgl_zoo.atomic.atomic_write`). highdicom and rt-utils are the extra ``pgl-zoo[dicom]``,
imported on first use.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .errors import ImageReadError, ImageWriteError, PglZooError
from .messages import caveat

__all__ = ["SNOMED_CODES", "GENERIC_CODE", "CodedClass", "coded_class", "series_files", "write_dicom_seg",
           "write_rtstruct"]

INSTALL_HINT = 'install the extra: pip install "pgl-zoo[dicom]"'


@dataclass(frozen=True)
class CodedClass:
    """The SNOMED CT concepts of one class, as keywords of pydicom's code dictionary
    (``pydicom.sr.codedict.codes.SCT``): the segmented property category and type, and an optional
    modifier of the type (laterality, part). :meth:`codes` gives the codes (value, meaning)."""

    category: str
    type: str
    modifier: str | None = None

    def codes(self) -> tuple[Any, Any, Any | None]:
        """(category, type, modifier) as pydicom ``Code`` objects (modifier None when there is none)."""
        from pydicom.sr.codedict import codes

        return (getattr(codes.SCT, self.category), getattr(codes.SCT, self.type),
                getattr(codes.SCT, self.modifier) if self.modifier else None)


def _organ(type_: str, modifier: str | None = None) -> CodedClass:
    return CodedClass("AnatomicalStructure", type_, modifier)


# The zoo's class names (compared lower-case, letters and digits only) -> SNOMED CT concepts, named by
# their keywords in pydicom's dictionary so that no code is typed by hand. Laterality and part are
# modifiers of the type, as DICOM SEG and 3D Slicer's terminologies code them (Lung + Bilateral for
# both lungs as one class).
SNOMED_CODES: dict[str, CodedClass] = {
    "lung": _organ("Lung"),
    "lungs": _organ("Lung", "Bilateral"),
    "leftlung": _organ("Lung", "Left"),
    "lungleft": _organ("Lung", "Left"),
    "rightlung": _organ("Lung", "Right"),
    "lungright": _organ("Lung", "Right"),
    "hippocampus": _organ("Hippocampus"),
    "anteriorhippocampus": _organ("Hippocampus", "Anterior"),
    "hippocampusanterior": _organ("Hippocampus", "Anterior"),
    "posteriorhippocampus": _organ("Hippocampus", "Posterior"),
    "hippocampusposterior": _organ("Hippocampus", "Posterior"),
    "brainstem": _organ("BrainStem"),
    "spinalcord": _organ("SpinalCord"),
    "parotid": _organ("ParotidGland"),
    "parotidgland": _organ("ParotidGland"),
    "rightparotid": _organ("ParotidGland", "Right"),
    "parotidright": _organ("ParotidGland", "Right"),
    "leftparotid": _organ("ParotidGland", "Left"),
    "parotidleft": _organ("ParotidGland", "Left"),
    "esophagus": _organ("Esophagus"),
    "oesophagus": _organ("Esophagus"),
    "larynx": _organ("Larynx"),
    "mandible": _organ("Mandible"),
}
# A class whose name has no code: category and type "Tissue" (SCT 85756007; 3D Slicer's default for a
# new segment), and a warning naming the class.
GENERIC_CODE = CodedClass("Tissue", "Tissue")


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def coded_class(name: str) -> CodedClass | None:
    """The SNOMED CT concepts of a class name (:data:`SNOMED_CODES`), or None when the table has none."""
    return SNOMED_CODES.get(_key(name))


def _require(module: str) -> Any:
    """Import highdicom or rt_utils, or raise the one line that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PglZooError(f"writing DICOM output needs {module.replace('_', '-')}: {INSTALL_HINT}") from None


def require_dicom_extra(output_format: str) -> None:
    """Fail early (before any inference) when the library of ``output_format`` is missing."""
    _require("pydicom")
    _require("highdicom" if output_format == "dicom-seg" else "rt_utils")


def series_files(source: str | Path | Sequence[str | Path], series_uid: str | None = None) -> list[Path]:
    """The files of one DICOM series: a folder (with ``series_uid`` when it holds several series), or
    the files themselves. Chosen as :func:`pgl_zoo.imaging.read.read_image` chooses them
    (:func:`pgl_zoo.imaging.dicom.dicom_series_files`)."""
    from .imaging.dicom import dicom_series_files

    if not isinstance(source, (str, Path)):
        return [Path(p) for p in source]
    folder = Path(source)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a DICOM series folder")
    return [Path(p) for p in dicom_series_files(folder, series_uid)]


def _read_headers(files: Sequence[Path], where: str) -> list:
    pydicom = _require("pydicom")
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(str(path), stop_before_pixels=True))
        except Exception as exc:  # noqa: BLE001 - pydicom raises several kinds; one line names the file
            raise ImageReadError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    for ds, path in zip(headers, files, strict=True):
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default repertoire; highdicom refuses the empty value
        missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                               "Columns", "SOPInstanceUID", "SOPClassUID") if k not in ds]
        if missing:
            raise ImageReadError(f"{path}: DICOM slice of {where} lacks {', '.join(missing)}")
    return headers


def _normal(ds) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def _series_geometry(headers: Sequence) -> sitk.Image:
    """An empty image on the series' grid as ITK stacks it: slices ascending along the normal."""
    normal = _normal(headers[0])
    ordered = sorted(headers, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    first = np.asarray(ordered[0].ImagePositionPatient, float)
    last = np.asarray(ordered[-1].ImagePositionPatient, float)
    gap = float(np.dot(normal, last - first)) / (len(ordered) - 1) if len(ordered) > 1 else 1.0
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    row_mm, col_mm = (float(v) for v in headers[0].PixelSpacing)
    image = sitk.Image(int(headers[0].Columns), int(headers[0].Rows), len(headers), sitk.sitkUInt8)
    image.SetOrigin(tuple(first))
    image.SetSpacing((col_mm, row_mm, gap if gap > 0 else 1.0))
    image.SetDirection(tuple(np.stack([iop[:3], iop[3:], normal], axis=1).ravel()))
    return image


def _label_on_series(label: sitk.Image | np.ndarray, headers: Sequence, where: str) -> tuple[np.ndarray, list[int]]:
    """The (z, y, x) label array and, for each header, the z index of its slice, found from the
    slice's ImagePositionPatient in the label image's geometry. Raises ImageWriteError (one line)
    when the label map does not lie on the series' grid: in-plane to 0.01 pixel, along z to the
    nearest plane within a quarter of the slice gap (a series that ITK stacked onto a uniform grid
    although its gaps vary a little), one plane per slice."""
    if isinstance(label, sitk.Image):
        image = label
        array = sitk.GetArrayFromImage(label)
    else:
        array = np.asarray(label)
        image = _series_geometry(headers)
        if array.shape != tuple(reversed(image.GetSize())):
            raise ImageWriteError(f"{where}: label array of shape {array.shape} (z, y, x) does not fit the series' "
                                  f"{'x'.join(map(str, reversed(image.GetSize())))} slices")
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
        raise ImageWriteError(f"{where}: the label map must be a 3D array of non-negative integers")
    size, spacing = image.GetSize(), image.GetSpacing()
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    indices: list[int] = []
    for ds in headers:
        iop = np.asarray(ds.ImageOrientationPatient, float)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        index = image.TransformPhysicalPointToContinuousIndex([float(v) for v in ds.ImagePositionPatient])
        k = int(round(index[2]))
        problem = None
        if (int(ds.Rows), int(ds.Columns)) != (size[1], size[0]):
            problem = f"slice of {ds.Rows}x{ds.Columns} pixels, label planes of {size[1]}x{size[0]}"
        elif not (np.allclose(iop[:3], direction[:, 0], atol=1e-4) and np.allclose(iop[3:], direction[:, 1],
                                                                                  atol=1e-4)):
            problem = f"slice orientation {list(iop)} differs from the label map's"
        elif not np.allclose((col_mm, row_mm), spacing[:2], rtol=1e-4):
            problem = f"pixel spacing {row_mm}x{col_mm} mm differs from the label map's"
        elif max(abs(index[0]), abs(index[1])) > 0.01 or abs(index[2] - k) > 0.25 or not 0 <= k < size[2]:
            problem = f"slice at {list(ds.ImagePositionPatient)} mm lies at index {tuple(round(i, 3) for i in index)}"
        if problem:
            raise ImageWriteError(f"{where}: the label map does not lie on the DICOM series' grid "
                                  f"(instance {ds.SOPInstanceUID}: {problem})")
        indices.append(k)
    if sorted(indices) != list(range(size[2])):
        raise ImageWriteError(f"{where}: the series' {len(headers)} slices do not map one to one onto the label "
                              f"map's {size[2]} planes")
    return array, indices


def _class_names(label_names: dict[str, str] | None, array: np.ndarray) -> dict[int, str]:
    """Class id -> name for every foreground class of the card and every value in the label map."""
    names: dict[int, str] = {}
    for key, name in (label_names or {}).items():
        if int(key) > 0:
            names[int(key)] = str(name)
    top = max([int(array.max(initial=0)), *names])
    return {c: names.get(c, f"class {c}") for c in range(1, top + 1)}


def _codes_of(names: dict[int, str]) -> dict[int, CodedClass]:
    coded = {}
    for class_id, name in names.items():
        code = coded_class(name)
        if code is None:
            generic = GENERIC_CODE.codes()[1]
            caveat(f"class {class_id} {name!r} has no SNOMED CT code in pgl-zoo's table; coded with the "
                   f"generic {generic.meaning} (SCT {generic.value})", stacklevel=3)
            code = GENERIC_CODE
        coded[class_id] = code
    return coded


def _software_version() -> str:
    from . import __version__

    return __version__


def _write_verified(dataset, out_path: str | Path, check) -> Path:
    """Save ``dataset`` to a temporary file beside ``out_path``, read it back with pydicom, ``check``
    the copy (returns a problem or None), then rename it to ``out_path``."""
    pydicom = _require("pydicom")
    out_path = Path(out_path)

    def write(tmp: str) -> None:
        try:
            dataset.save_as(tmp, enforce_file_format=True)  # pydicom >= 3: preamble and file meta, always
        except TypeError:
            dataset.save_as(tmp, write_like_original=False)  # pydicom 2
        try:
            back = pydicom.dcmread(tmp)
        except Exception as exc:  # noqa: BLE001
            raise ImageWriteError(f"{out_path}: write failed (the file does not read back: {exc}); "
                                  "nothing was replaced") from None
        problem = None if back.SOPInstanceUID == dataset.SOPInstanceUID else "another SOP instance read back"
        problem = problem or check(back)
        if problem:
            raise ImageWriteError(f"{out_path}: write failed ({problem}; disk full?); nothing was replaced")

    try:
        return atomic_write(out_path, write, suffix=".dcm")
    except OSError as exc:
        raise ImageWriteError(f"{out_path}: cannot be written ({exc.strerror or exc}); nothing was replaced") from None


@dataclass
class _SeriesLabels:
    """A label map matched to the DICOM series it was computed on: ``headers`` the slices' headers (no
    pixels; in the order of :func:`series_files`), ``where`` the series as messages name it, ``array`` the
    (z, y, x) label map, ``indices`` the z index of each header's slice in it, ``names`` class id -> name
    of every class."""

    headers: list
    where: str
    array: np.ndarray
    indices: list[int]
    names: dict[int, str]


def _match_series(label: sitk.Image | np.ndarray, source: str | Path | Sequence[str | Path],
                  label_names: dict[str, str] | None, series_uid: str | None) -> _SeriesLabels:
    """Read the headers of the series ``source`` (``series_uid`` picks one of several) and match ``label``'s
    slices to them (ImageWriteError when it does not lie on the series' grid)."""
    files = series_files(source, series_uid)
    where = str(source if isinstance(source, (str, Path)) else files[0].parent)
    headers = _read_headers(files, where)
    array, indices = _label_on_series(label, headers, where)
    return _SeriesLabels(headers, where, array, indices, _class_names(label_names, array))


def write_dicom_seg(
    label: sitk.Image | np.ndarray,
    source: str | Path | Sequence[str | Path],
    out_path: str | Path,
    label_names: dict[str, str] | None,
    algorithm_name: str,
    algorithm_version: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """Write a DICOM Segmentation (BINARY) of ``label`` that references the slices of ``source``.

    ``label``: the label map on the series' grid (see the module docstring for the axis order);
    ``source``: the series folder (``series_uid`` picks one of several) or its files;
    ``label_names``: the card's class id (as a string) -> name; ``algorithm_name`` and
    ``algorithm_version`` (the weights' sha256; None writes "unverified") identify the model.
    Segment number = class id. Returns ``out_path``, written atomically and read back.
    """
    hd = _require("highdicom")
    series = _match_series(label, source, label_names, series_uid)
    headers, where, names = series.headers, series.where, series.names
    descriptions = _segment_descriptions(hd, names, algorithm_name, algorithm_version)
    frames = np.stack([series.array[k] for k in series.indices])
    frames = frames.astype(np.uint8 if len(names) < 256 else np.uint16, copy=False)
    version = algorithm_version or "unverified"
    with warnings.catch_warnings():  # about the scan's own patient name, which the SEG copies as it is
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        try:
            seg = hd.seg.Segmentation(
                source_images=headers, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                series_number=int(headers[0].get("SeriesNumber") or 0) + 1000, sop_instance_uid=hd.UID(),
                instance_number=1, manufacturer="pgl-zoo", manufacturer_model_name=algorithm_name[:64],
                software_versions=_software_version(), device_serial_number=version[:64],
                series_description=f"pgl-zoo {algorithm_name}"[:64], content_label="PGLZOO",
                content_description=f"{algorithm_name} (sha256 {version})"[:64],
            )
        except (ValueError, TypeError, AttributeError) as exc:  # a source header highdicom does not accept
            raise ImageWriteError(f"{out_path}: highdicom cannot build a DICOM SEG on the series {where} "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None

    def check(back) -> str | None:
        if int(back.NumberOfFrames) != int(seg.NumberOfFrames) or back.PixelData != seg.PixelData:
            return "the frames read back differ"
        if len(back.SegmentSequence) != len(descriptions):
            return "the segments read back differ"
        return None

    return _write_verified(seg, out_path, check)


def _segment_descriptions(hd, names: dict[int, str], algorithm_name: str, algorithm_version: str | None) -> list:
    """highdicom's SegmentDescription of every class (segment number = class id), coded with SNOMED CT
    (one warning per name without a code) and identified as the model's automatic segmentation."""
    from pydicom.sr.codedict import codes

    coded = _codes_of(names)
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, family=codes.cid7162.ArtificialIntelligence,
                                                   version=algorithm_version or "unverified")
    descriptions = []
    for class_id, name in names.items():
        category, type_, modifier = coded[class_id].codes()
        description = hd.seg.SegmentDescription(
            segment_number=class_id, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=type_, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        if modifier is not None:  # inside the type's item, as DICOM places it
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept.from_code(modifier)]
        descriptions.append(description)
    return descriptions


def write_rtstruct(
    label: sitk.Image | np.ndarray,
    source: str | Path | Sequence[str | Path],
    out_path: str | Path,
    label_names: dict[str, str] | None,
    algorithm_name: str,
    algorithm_version: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """Write an RT Structure Set with one ROI per class, contours on the slices of ``source``.

    Arguments as :func:`write_dicom_seg`. ROI number = position among the classes (1, 2, ...), ROI
    name = the class name. rt-utils builds the structure set and traces the outlines (OpenCV), on a
    mask upsampled 2 x 2 in-plane; each traced point is then recomputed from the referenced slice's
    own ImagePositionPatient, ImageOrientationPatient and PixelSpacing (rt-utils places points from
    the first slice and the mean slice gap, with PixelSpacing's two values swapped), so the contours
    run a quarter pixel inside the pixel edges of the label map on every slice.
    """
    rt_utils = _require("rt_utils")
    from rt_utils import ds_helper, image_helper

    series = _match_series(label, source, label_names, series_uid)
    headers, array, indices, names = series.headers, series.array, series.indices, series.names
    _codes_of(names)  # the same warning as for DICOM SEG for a name without a code
    for ds in headers:  # attributes rt-utils copies unconditionally
        for keyword in ("StudyID", "StudyDate", "StudyTime"):
            if keyword not in ds:
                setattr(ds, keyword, "")
    # rt-utils' RTStructBuilder.create_new(folder), with this series' headers only (create_new reads every
    # DICOM file under the folder, other series included): slices ascending along the normal.
    order = sorted(range(len(headers)), key=lambda i: float(image_helper.get_slice_position(headers[i])))
    series_data = [headers[i] for i in order]
    plane_of = [array[indices[i]] for i in order]
    with _quiet_pydicom():  # rt-utils sets FileDataset.is_little_endian, deprecated in pydicom 3
        rtstruct = rt_utils.RTStruct(series_data, ds_helper.create_rtstruct_dataset(series_data))
    version = algorithm_version or "unverified"
    for class_id, name in names.items():
        mask = np.stack([(plane == class_id).repeat(2, axis=0).repeat(2, axis=1) for plane in plane_of], axis=-1)
        with contextlib.redirect_stdout(io.StringIO()):  # rt-utils prints "[INFO]: ROI mask is empty"
            rtstruct.add_roi(mask=mask, name=name[:64], description=f"{algorithm_name} class {class_id}"[:1024],
                             approximate_contours=True, roi_generation_algorithm="AUTOMATIC")
        del mask
    _anchor_contours(rtstruct.ds, series_data, image_helper.get_pixel_to_patient_transformation_matrix(series_data))
    ds = rtstruct.ds
    _describe_structure_set(ds, series_data[0], algorithm_name, version)
    contours = sum(len(getattr(roi, "ContourSequence", [])) for roi in ds.ROIContourSequence)

    def check(back) -> str | None:
        if [r.ROIName for r in back.StructureSetROISequence] != [n[:64] for n in names.values()]:
            return "the ROIs read back differ"
        if sum(len(getattr(roi, "ContourSequence", [])) for roi in back.ROIContourSequence) != contours:
            return "the contours read back differ"
        return None

    return _write_verified(ds, out_path, check)


def _describe_structure_set(ds, first, algorithm_name: str, version: str) -> None:
    """The attributes of the structure set ``ds`` that rt-utils leaves out or sets otherwise: character set
    and type 2 attributes from the series' ``first`` slice, the model (name, weights' sha256 ``version``) as
    manufacturer, device and structure set names, series number 1001 above the scan's, ROIs of type ORGAN."""
    if first.get("SpecificCharacterSet"):  # else rt-utils' ISO_IR 100, a superset of the default repertoire
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    for keyword in ("ReferringPhysicianName", "AccessionNumber"):  # type 2 attributes rt-utils leaves out
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Manufacturer = "pgl-zoo"
    ds.ManufacturerModelName = algorithm_name[:64]
    ds.SoftwareVersions = _software_version()
    ds.DeviceSerialNumber = version[:64]
    if "InstitutionName" in ds:
        del ds.InstitutionName
    ds.SeriesDescription = f"pgl-zoo {algorithm_name}"[:64]
    ds.SeriesNumber = int(first.get("SeriesNumber") or 0) + 1001
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "pgl-zoo"
    ds.StructureSetName = algorithm_name[:64]
    ds.StructureSetDescription = f"{algorithm_name} (sha256 {version}), pgl-zoo {_software_version()}"
    for observation in ds.RTROIObservationsSequence:
        observation.ROIObservationDescription = ""
        observation.RTROIInterpretedType = "ORGAN"


@contextlib.contextmanager
def _quiet_pydicom():
    """No deprecation warnings from pydicom meanwhile (it also logs them, on stderr without a handler)."""
    import logging

    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _anchor_contours(ds, series_data: Sequence, rt_matrix: np.ndarray) -> None:
    """Recompute every contour point from its slice's geometry.

    rt-utils wrote each point as ``rt_matrix @ (u, v, i, 1)`` (u, v: column and row in the 2 x 2
    upsampled plane; i: index in ``series_data``). The exact position is the slice's
    ImagePositionPatient + column * column spacing * row direction + row * row spacing * column
    direction, with (column, row) = (u / 2 - 1/4, v / 2 - 1/4) in pixels of the slice.
    """
    inverse = np.linalg.inv(np.asarray(rt_matrix, dtype=np.float64))
    index_of = {s.SOPInstanceUID: i for i, s in enumerate(series_data)}
    for roi in ds.ROIContourSequence:
        for contour in getattr(roi, "ContourSequence", []):
            points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            uvi = (np.c_[points, np.ones(len(points))] @ inverse.T)[:, :3]
            grid = np.round(uvi)
            if np.abs(uvi - grid).max() > 0.05 or len(set(grid[:, 2].tolist())) != 1:
                raise ImageWriteError("rt-utils traced a contour off the pixel grid; the structure set was not written")
            if index_of.get(contour.ContourImageSequence[0].ReferencedSOPInstanceUID) != int(grid[0, 2]):
                raise ImageWriteError("rt-utils referenced another slice than the one contoured; nothing was written")
            slice_ds = series_data[int(grid[0, 2])]
            iop = np.asarray(slice_ds.ImageOrientationPatient, dtype=np.float64)
            row_mm, col_mm = (float(v) for v in slice_ds.PixelSpacing)
            columns = grid[:, 0] / 2 - 0.25
            rows = grid[:, 1] / 2 - 0.25
            exact = (np.asarray(slice_ds.ImagePositionPatient, dtype=np.float64)
                     + np.outer(columns * col_mm, iop[:3]) + np.outer(rows * row_mm, iop[3:]))
            contour.ContourData = [round(float(v), 4) for v in exact.ravel()]
            contour.NumberOfContourPoints = len(exact)
