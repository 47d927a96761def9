"""The text headers of NRRD (.nrrd/.nhdr) and MetaImage (.mha/.mhd) volumes: where their pixels lie.

Read as text up to the first pixel byte; used by :mod:`pgl_zoo.imaging.header_checks` to compare the
pixel data a header claims with what its file(s) hold, before ITK reads any pixel.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ImageReadError

METAIMAGE_REQUIRED = ("NDims", "DimSize", "ElementType", "ElementDataFile")


def _header_lines(path: Path, limit: int = 1 << 16) -> list[tuple[str, int]]:
    """The text lines at the start of a file and the byte offset after each (NRRD, MetaImage headers)."""
    with open(path, "rb") as handle:
        head = handle.read(limit)
    lines, position = [], 0
    for raw in head.split(b"\n"):
        position += len(raw) + 1
        if position > len(head) + 1:
            break
        lines.append((raw.decode("latin-1").rstrip("\r"), min(position, len(head))))
    return lines


def _metaimage_fields(path: Path) -> tuple[dict[str, str], int]:
    """The ``Key = Value`` fields of a MetaImage header (.mha/.mhd) up to ElementDataFile, and the offset
    after that line (where the pixel data of ``ElementDataFile = LOCAL`` begin)."""
    fields: dict[str, str] = {}
    end = 0
    for line, after in _header_lines(path):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            end = after
            break
    return fields, end


def check_metaimage_header(path: Path) -> None:
    """A truncated .mhd/.mha header is named as such (ITK says "No such file or directory")."""
    fields, _ = _metaimage_fields(path)
    missing = [k for k in METAIMAGE_REQUIRED if k not in fields]
    if missing:
        raise ImageReadError(f"{path}: MetaImage header is truncated or incomplete (no {', '.join(missing)})")


def pixel_data(path: Path) -> tuple[Path, int, str] | None:
    """Where the pixels of a NRRD or MetaImage volume lie and how they are encoded: (data file, offset
    of the first pixel byte, "raw" | "deflate" | "text" | "hex"); None when unknown (NIfTI, DICOM, file
    lists, bzip2)."""
    name = path.name.lower()
    if name.endswith((".mha", ".mhd")):
        fields, end = _metaimage_fields(path)
        data = fields.get("ElementDataFile", "")
        if not data or data.upper().startswith("LIST") or "%" in data or " " in data:
            return None
        compressed = fields.get("CompressedData", "False").lower() in ("true", "1")
        encoding = "deflate" if compressed else "raw"
        if data.upper() == "LOCAL":
            return path, end, encoding
        skip = fields.get("HeaderSize", "0")
        offset = int(skip) if skip.lstrip("-").isdigit() and int(skip) > 0 else 0
        return path.parent / data, offset, encoding
    if name.endswith((".nrrd", ".nhdr")):
        fields: dict[str, str] = {}
        end = None
        for line, after in _header_lines(path):
            if not line.strip():
                end = after
                break
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                fields[key.strip().lower()] = value.lstrip("=").strip()
        encoding = {"raw": "raw", "gzip": "deflate", "gz": "deflate", "ascii": "text", "text": "text",
                    "txt": "text", "hex": "hex"}.get(fields.get("encoding", "").lower())
        data = fields.get("data file") or fields.get("datafile")
        if encoding is None or (data and (data.upper().startswith("LIST") or " " in data or "%" in data)):
            return None
        skip = fields.get("byte skip", "0")
        offset = int(skip) if skip.isdigit() else 0
        if data:
            return path.parent / data, offset, encoding
        if end is None:
            return None
        return path, end + offset, encoding
    return None
