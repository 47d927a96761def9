"""Image I/O: reading (every format, header checks), finding scans, writing, and grids.

One module a concern (preprocessing lives apart, in :mod:`pgl_zoo.preprocessing`):

* :mod:`.read`: :func:`read_image`, the one way pgl-zoo reads a scan or a label map;
* :mod:`.header_checks`: size limit (``PGL_ZOO_MAX_VOXELS``), spacing and pixel byte counts, before any
  pixel is read; :mod:`.nifti_header` (raw NIfTI header parsing) and :mod:`.text_headers` (NRRD,
  MetaImage) behind it;
* :mod:`.dicom`: listing, choosing and reading DICOM series;
* :mod:`.files`: volume suffixes, nnU-Net's image names, special files (FIFOs);
* :mod:`.discover`: :class:`~.discover.VolumeRef` and :func:`~.discover.discover_volumes`;
* :mod:`.geometry`: :class:`~.geometry.ImageGeometry` and :func:`~.geometry.geometry_differences`;
* :mod:`.scan_checks`: a scan that is a label map, a CT not in HU;
* :mod:`.write`: :func:`~.write.write_image`, atomic and read back.

Axis order: numpy/torch arrays are (z, y, x); SimpleITK sizes, spacings and origins are (x, y, z).
Spacings are in millimetres. ``sitk.GetArrayFromImage`` is the one place the two orders meet.
"""

from .read import read_image

__all__ = ["read_image"]
