"""Georeferencing of GeoTIFF scenes, and boxes in scene pixels as GeoJSON in the scene's CRS.

A scene's georeferencing is ``{"geotransform": [x0, dx, rx, y0, ry, dy], "crs": "EPSG:32633" |
None, "citation": str | None, "raster_type": "area" | "point"}``. The geotransform is GDAL's:
the world position of pixel corner (col, row) is ``(x0 + col*dx + row*rx, y0 + col*ry + row*dy)``
(a north-up image has rx = ry = 0 and dy < 0). It comes from the GeoTIFF tags (ModelTiepoint +
ModelPixelScale, or ModelTransformation) read with tifffile; a PixelIsPoint raster is shifted by
half a pixel as GDAL does, so the transform always refers to pixel corners.
"""

from __future__ import annotations

import tifffile

USER_DEFINED = 32767


class GeorefError(ValueError):
    """GeoTIFF tags that cannot be turned into a geotransform (the message says which)."""


def _crs(tags: dict) -> str | None:
    for key in ("ProjectedCSTypeGeoKey", "GeographicTypeGeoKey"):
        code = tags.get(key)
        if code is not None and 0 < int(code) < USER_DEFINED:
            return f"EPSG:{int(code)}"
    return None


def _geotransform(tags: dict) -> list[float]:
    if tags.get("ModelTransformation") is not None:
        m = [float(v) for v in list(tags["ModelTransformation"])[:8]]
        if len(m) < 8:
            raise GeorefError("ModelTransformation needs 16 values")
        return [m[3], m[0], m[1], m[7], m[4], m[5]]
    tie, scale = tags.get("ModelTiepoint"), tags.get("ModelPixelScale")
    if tie is None or scale is None or len(tie) < 6 or len(scale) < 2:
        raise GeorefError("neither ModelTransformation nor ModelTiepoint + ModelPixelScale")
    i, j, _k, x, y = (float(v) for v in tie[:5])
    sx, sy = float(scale[0]), float(scale[1])
    return [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]


def read_geotiff(path) -> dict | None:
    """The georeferencing of a GeoTIFF's full-resolution image, or None (not a GeoTIFF, or
    tags that place it nowhere)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if not page.is_geotiff:
            return None
        tags = page.geotiff_tags or {}
    try:
        gt = _geotransform(tags)
    except (GeorefError, TypeError, ValueError):
        return None
    point = int(tags.get("GTRasterTypeGeoKey", 1)) == 2
    if point:  # the tiepoint names a pixel's centre: move it to the corner
        gt[0] -= 0.5 * (gt[1] + gt[2])
        gt[3] -= 0.5 * (gt[4] + gt[5])
    citation = tags.get("PCSCitationGeoKey") or tags.get("GTCitationGeoKey")
    return {
        "geotransform": gt,
        "crs": _crs(tags),
        "citation": str(citation) if citation else None,
        "raster_type": "point" if point else "area",
    }


def to_world(georef: dict | None, x: float, y: float) -> tuple[float, float]:
    """Scene pixel (x, y) -> the scene's coordinates (pixels as they are without georef)."""
    if not georef:
        return float(x), float(y)
    x0, dx, rx, y0, ry, dy = georef["geotransform"]
    return x0 + x * dx + y * rx, y0 + x * ry + y * dy


def box_polygon(georef: dict | None, x: float, y: float, w: float, h: float) -> list:
    """A box in scene pixels as a closed GeoJSON polygon ring (corners, clockwise in pixels)."""
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]
    return [[list(to_world(georef, cx, cy)) for cx, cy in corners]]


def feature_collection(boxes: list[dict], georef: dict | None, name: str = "") -> dict:
    """GeoJSON of ``boxes`` ({x, y, w, h, **properties}). With georeferencing the coordinates are
    in the scene's CRS (named in the legacy ``crs`` member that GDAL and QGIS read); without,
    they are scene pixels (x right, y down) and ``coordinates`` says so."""
    features = []
    for box in boxes:
        props = {k: v for k, v in box.items() if k not in ("x", "y", "w", "h")}
        props.update(pixel_box=[box["x"], box["y"], box["w"], box["h"]])
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": box_polygon(georef, **_xywh(box))},
                "properties": props,
            }
        )
    out = {"type": "FeatureCollection", "name": name, "features": features}
    if georef and georef.get("crs"):
        code = georef["crs"].split(":", 1)[1]
        out["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{code}"}}
    out["coordinates"] = "crs" if georef else "pixels"
    if georef:
        out["geotransform"] = georef["geotransform"]
    return out


def _xywh(box: dict) -> dict:
    return {k: float(box[k]) for k in ("x", "y", "w", "h")}
