"""Georeferencing of GeoTIFF scenes, checked on import, and boxes in scene pixels as GeoJSON.

A scene's georeferencing is ``{"geotransform": [x0, dx, rx, y0, ry, dy], "crs": "EPSG:32633" |
WKT, "citation": str | None, "raster_type": "area" | "point"}``. The geotransform is GDAL's:
the world position of pixel corner (col, row) is ``(x0 + col*dx + row*rx, y0 + col*ry + row*dy)``
(a north-up image has rx = ry = 0 and dy < 0). It comes from the GeoTIFF tags (ModelTiepoint +
ModelPixelScale, or ModelTransformation) read with tifffile; a PixelIsPoint raster is shifted by
half a pixel as GDAL does, so the transform always refers to pixel corners. The CRS is an EPSG
code, or, for a user-defined projection (MODIS sinusoidal, ...), a WKT built from its geokeys.

Tags that cannot place the picture (non-finite or zero scale, a malformed tiepoint, a CRS that
cannot be read or converted to longitude/latitude) never become a half-usable georeference:
``read_geotiff`` gives ``{"geotransform": None, "problem": reason}``, the picture imports as a
plain one and the reason is shown wherever georeferencing is asked for.

GeoJSON (``feature_collection``) follows RFC 7946 by default: WGS84 longitude/latitude through
pyproj, counter-clockwise exterior rings, no foreign top-level members. ``crs="native"`` keeps
the scene's own CRS and names it in the legacy ``crs`` member (GDAL and QGIS read it);
``crs="pixels"`` gives scene pixels under an engineering CRS that GDAL reads as a local,
non-geographic system, so no GIS tool mistakes pixels for degrees.
"""

from __future__ import annotations

import math

import numpy as np
import tifffile

USER_DEFINED = 32767
CRS_MODES = ("wgs84", "native", "pixels")
# Scene pixels as a CRS GIS tools read as local (GDAL: LOCAL_CS), never as degrees.
PIXEL_CRS = (
    'ENGCRS["scene pixels (x right, y down)",EDATUM["scene"],CS[Cartesian,2],'
    'AXIS["x",east,ORDER[1],LENGTHUNIT["pixel",1]],AXIS["y",south,ORDER[2],LENGTHUNIT["pixel",1]]]'
)

# GeoTIFF coordinate transformation codes -> PROJ: (projection, {PROJ parameter: geokey}).
_CT = {
    1: ("tmerc", {"lat_0": "ProjNatOriginLatGeoKey", "lon_0": "ProjNatOriginLongGeoKey",
                  "k_0": "ProjScaleAtNatOriginGeoKey"}),
    7: ("merc", {"lon_0": "ProjNatOriginLongGeoKey", "k_0": "ProjScaleAtNatOriginGeoKey"}),
    8: ("lcc", {"lat_1": "ProjStdParallel1GeoKey", "lat_2": "ProjStdParallel2GeoKey",
                "lat_0": "ProjFalseOriginLatGeoKey", "lon_0": "ProjFalseOriginLongGeoKey"}),
    10: ("laea", {"lat_0": "ProjCenterLatGeoKey", "lon_0": "ProjCenterLongGeoKey"}),
    11: ("aea", {"lat_1": "ProjStdParallel1GeoKey", "lat_2": "ProjStdParallel2GeoKey",
                 "lat_0": "ProjNatOriginLatGeoKey", "lon_0": "ProjNatOriginLongGeoKey"}),
    17: ("eqc", {"lat_ts": "ProjStdParallel1GeoKey", "lon_0": "ProjCenterLongGeoKey"}),
    24: ("sinu", {"lon_0": "ProjCenterLongGeoKey"}),
}  # fmt: skip
_METRE, _DEGREE = 9001, 9102


class GeorefError(ValueError):
    """Georeferencing that cannot be used or asked-for output it cannot give (says why)."""


def usable(georef: dict | None) -> bool:
    """Whether ``georef`` places the scene (not None, not a recorded problem)."""
    return bool(georef and georef.get("geotransform") and georef.get("crs"))


def describe(georef: dict | None) -> str:
    """One line for the import log."""
    if not georef:
        return "no georeferencing"
    if not usable(georef):
        return f"georeferencing ignored, the picture imports without it: {georef.get('problem')}"
    crs = georef["crs"]
    return f"georeferenced: {crs if crs.startswith('EPSG:') else 'a user-defined CRS (WKT kept)'}"


def _int(value) -> int:
    return int(value)  # tifffile gives enums for known codes, ints otherwise


def _number(tags: dict, key: str, default: float | None = None) -> float:
    value = tags.get(key, default)
    if value is None:
        raise GeorefError(f"the user-defined projection lacks {key}")
    value = float(value)
    if not math.isfinite(value):
        raise GeorefError(f"{key} is {value}, not a finite number")
    return value


def _ellipsoid(tags: dict) -> str:
    """The PROJ ellipsoid of a user-defined CRS (datum shifts are not carried)."""
    from pyproj import CRS
    from pyproj.crs import Ellipsoid

    code = tags.get("GeographicTypeGeoKey")
    if code is not None and 0 < _int(code) < USER_DEFINED:
        ell = CRS.from_epsg(_int(code)).ellipsoid
        return f"+a={ell.semi_major_metre!r} +rf={ell.inverse_flattening!r}"
    code = tags.get("GeogEllipsoidGeoKey")
    if code is not None and 0 < _int(code) < USER_DEFINED:
        ell = Ellipsoid.from_epsg(_int(code))
        return f"+a={ell.semi_major_metre!r} +rf={ell.inverse_flattening!r}"
    if tags.get("GeogSemiMajorAxisGeoKey") is None:
        return "+ellps=WGS84"  # GDAL's assumption too
    a = _number(tags, "GeogSemiMajorAxisGeoKey")
    if tags.get("GeogInvFlatteningGeoKey") not in (None, 0, 0.0):
        return f"+a={a!r} +rf={_number(tags, 'GeogInvFlatteningGeoKey')!r}"
    return f"+a={a!r} +b={_number(tags, 'GeogSemiMinorAxisGeoKey', a)!r}"


def _user_defined_proj(tags: dict) -> str:
    """A PROJ string for the geokeys of a CRS without an EPSG code."""
    projected = _int(tags.get("GTModelTypeGeoKey", 1)) == 1
    angular = tags.get("GeogAngularUnitsGeoKey")
    if angular is not None and _int(angular) != _DEGREE:
        raise GeorefError(f"angular unit {_int(angular)} is not supported (degrees are)")
    if not projected:
        return f"+proj=longlat {_ellipsoid(tags)} +no_defs"
    proj_code = tags.get("ProjectionGeoKey")
    if proj_code is not None and 0 < _int(proj_code) < USER_DEFINED:
        raise GeorefError(
            f"projection code {_int(proj_code)} without a projected CRS code is not supported"
        )
    transform = tags.get("ProjCoordTransGeoKey")
    if transform is None or _int(transform) not in _CT:
        raise GeorefError(
            f"the user-defined projection (coordinate transformation {transform}) is not one "
            "this app can read (transverse Mercator, Mercator, Lambert conformal conic, Lambert "
            "azimuthal equal-area, Albers, equirectangular, sinusoidal)"
        )
    units = tags.get("ProjLinearUnitsGeoKey")
    if units is not None and _int(units) != _METRE:
        raise GeorefError(f"linear unit {_int(units)} is not supported (metres are)")
    name, params = _CT[_int(transform)]
    parts = [f"+proj={name}"]
    for param, key in params.items():
        default = 1.0 if param == "k_0" else 0.0
        parts.append(f"+{param}={_number(tags, key, default)!r}")
    easting = "ProjFalseOriginEastingGeoKey" if name == "lcc" else "ProjFalseEastingGeoKey"
    northing = "ProjFalseOriginNorthingGeoKey" if name == "lcc" else "ProjFalseNorthingGeoKey"
    parts += [f"+x_0={_number(tags, easting, 0.0)!r}", f"+y_0={_number(tags, northing, 0.0)!r}"]
    return " ".join([*parts, _ellipsoid(tags), "+units=m +no_defs"])


def _crs(tags: dict) -> str:
    """The CRS as ``EPSG:n`` or WKT; GeorefError when the tags name none that PROJ reads."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    model = _int(tags.get("GTModelTypeGeoKey", 0) or 0)  # 1 projected, 2 geographic
    keys = {1: ("ProjectedCSTypeGeoKey",), 2: ("GeographicTypeGeoKey",)}.get(
        model, ("ProjectedCSTypeGeoKey", "GeographicTypeGeoKey")
    )
    for key in keys:
        code = tags.get(key)
        if code is not None and 0 < _int(code) < USER_DEFINED:
            try:
                CRS.from_epsg(_int(code))
            except CRSError:
                raise GeorefError(
                    f"{key} names EPSG:{_int(code)}, which PROJ does not know"
                ) from None
            return f"EPSG:{_int(code)}"
    if model not in (1, 2):
        raise GeorefError("the GeoTIFF names no coordinate reference system")
    proj = _user_defined_proj(tags)
    try:
        return CRS.from_proj4(proj).to_wkt()
    except CRSError as exc:
        raise GeorefError(f"the user-defined CRS cannot be built ({exc})") from None


def _geotransform(tags: dict) -> list[float]:
    if tags.get("ModelTransformation") is not None:
        # tifffile gives the 4 x 4 matrix as rows: flatten it, row-major as the tag stores it
        m = [float(v) for v in np.asarray(tags["ModelTransformation"], dtype=float).ravel()[:8]]
        if len(m) < 8:
            raise GeorefError("ModelTransformation needs 16 values")
        return [m[3], m[0], m[1], m[7], m[4], m[5]]
    tie, scale = tags.get("ModelTiepoint"), tags.get("ModelPixelScale")
    if tie is None or scale is None:
        raise GeorefError("neither ModelTransformation nor ModelTiepoint + ModelPixelScale")
    if len(tie) < 6 or len(scale) < 2:
        raise GeorefError(
            f"ModelTiepoint needs 6 values (I, J, K, X, Y, Z) and ModelPixelScale 3; they have "
            f"{len(tie)} and {len(scale)}"
        )
    i, j, _k, x, y = (float(v) for v in list(tie)[:5])
    sx, sy = float(scale[0]), float(scale[1])
    for what, value in (("pixel scale", sx), ("pixel scale", sy), ("tiepoint", x), ("tiepoint", y)):
        if not math.isfinite(value):
            raise GeorefError(f"the {what} is {value}, not a finite number")
    if sx == 0 or sy == 0:
        raise GeorefError(f"the pixel scale is ({sx:g}, {sy:g}): a zero scale places no pixel")
    return [x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy]


def check(georef: dict, width: int, height: int) -> None:
    """GeorefError unless the geotransform is finite and invertible, and every image corner has
    a finite place in its CRS and in WGS84 (so every box inside the image has one too)."""
    gt = georef["geotransform"]
    if len(gt) != 6 or not all(math.isfinite(v) for v in gt):
        raise GeorefError(f"the geotransform {gt} has values that are not finite numbers")
    if gt[1] * gt[5] - gt[2] * gt[4] == 0:
        raise GeorefError(
            f"the geotransform {gt} is singular: every pixel would fall on one line or point"
        )
    corners = [to_world(georef, x, y) for x, y in _corners(width, height)]
    if not all(math.isfinite(v) for xy in corners for v in xy):
        raise GeorefError(
            f"the image's corners fall beyond any finite coordinate in {_crs_label(georef)} "
            f"(pixel scale {gt[1]:g} x {gt[5]:g} over {width} x {height} pixels)"
        )
    steps = [to_world(georef, x, y) for x, y in ((0, 0), (1, 0), (0, 1))]
    lonlat = _to_lonlat(georef, corners + steps)
    if len({*steps}) < 3 or len({*lonlat[4:]}) < 3:
        raise GeorefError(
            f"the pixel scale ({gt[1]:g} x {gt[5]:g}) is too small to tell neighbouring pixels "
            "apart: every box would collapse to a point"
        )
    lonlat = lonlat[:4]
    if not all(math.isfinite(v) for xy in lonlat for v in xy) or any(
        abs(lat) > 90 for _lon, lat in lonlat
    ):
        raise GeorefError(
            f"the image's corners {corners} lie outside the area where {_crs_label(georef)} "
            "converts to longitude/latitude"
        )


def _corners(width: float, height: float) -> list[tuple[float, float]]:
    return [(0, 0), (width, 0), (width, height), (0, height)]


def _crs_label(georef: dict) -> str:
    crs = georef.get("crs") or ""
    return crs if crs.startswith("EPSG:") else "the scene's user-defined CRS"


def read_geotiff(path) -> dict | None:
    """The georeferencing of a GeoTIFF's full-resolution image; None when it is not a GeoTIFF;
    ``{"geotransform": None, "problem": reason}`` when its tags cannot place it."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if not page.is_geotiff:
            return None
        width, height = page.imagewidth, page.imagelength
        try:
            tags = page.geotiff_tags or {}
        except Exception as exc:  # tifffile's own parse of a malformed tag (a 3-value tiepoint)
            return {"geotransform": None, "problem": _unreadable(page, exc)}
    try:
        gt = _geotransform(tags)
        point = _int(tags.get("GTRasterTypeGeoKey", 1)) == 2
        if point:  # the tiepoint names a pixel's centre: move it to the corner
            gt[0] -= 0.5 * (gt[1] + gt[2])
            gt[3] -= 0.5 * (gt[4] + gt[5])
        citation = tags.get("PCSCitationGeoKey") or tags.get("GTCitationGeoKey")
        georef = {
            "geotransform": gt,
            "crs": _crs(tags),
            "citation": str(citation) if citation else None,
            "raster_type": "point" if point else "area",
        }
        check(georef, width, height)
    except (GeorefError, TypeError, ValueError) as exc:
        return {"geotransform": None, "problem": str(exc)}
    return georef


def _unreadable(page, exc: Exception) -> str:
    tie = page.tags.get(33922)  # ModelTiepointTag
    if tie is not None and (len(tie.value) == 0 or len(tie.value) % 6):
        return f"ModelTiepoint holds {len(tie.value)} values; a tiepoint is 6 (I, J, K, X, Y, Z)"
    return f"the GeoTIFF tags cannot be read ({str(exc)[:200]})"


def to_world(georef: dict | None, x: float, y: float) -> tuple[float, float]:
    """Scene pixel (x, y) -> the scene's coordinates (pixels as they are without georef)."""
    if not usable(georef):
        return float(x), float(y)
    x0, dx, rx, y0, ry, dy = georef["geotransform"]
    return x0 + x * dx + y * rx, y0 + x * ry + y * dy


def _to_lonlat(georef: dict, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    from pyproj import Transformer

    if not points:
        return []
    transformer = Transformer.from_crs(georef["crs"], "EPSG:4326", always_xy=True)
    xs, ys = transformer.transform([p[0] for p in points], [p[1] for p in points])
    return list(zip(map(float, xs), map(float, ys), strict=True))


def clip_box(x: float, y: float, w: float, h: float, width: float, height: float):
    """The part of box (x, y, w, h) inside the image, or None when nothing of it is."""
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _ccw(ring: list) -> list:
    """``ring`` (closed) counter-clockwise, as RFC 7946 wants exterior rings."""
    ox, oy = ring[0]  # relative to a vertex: no cancellation between far-off coordinates
    area = sum(
        (a[0] - ox) * (b[1] - oy) - (b[0] - ox) * (a[1] - oy) for a, b in zip(ring, ring[1:])
    )
    return ring if area >= 0 else ring[::-1]


def feature_collection(boxes: list[dict], georef: dict | None, width: int, height: int,
                       crs: str = "wgs84") -> dict:  # fmt: skip
    """GeoJSON of ``boxes`` ({x, y, w, h, **properties}) clipped to the ``width`` x ``height``
    image (a box wholly outside it is left out), in ``crs``: "wgs84" (RFC 7946), "native" (the
    scene's CRS, named in ``crs``) or "pixels" (scene pixels, named as a local engineering CRS).
    GeorefError when the scene's georeferencing cannot give what was asked."""
    if crs not in CRS_MODES:
        raise GeorefError(f"crs must be one of {', '.join(CRS_MODES)}, got {str(crs)[:50]!r}")
    if crs != "pixels":
        why = None
        if not georef:
            why = "it was not imported from a GeoTIFF with georeferencing"
        elif georef.get("problem"):
            why = f"its GeoTIFF georeferencing was ignored on import: {georef['problem']}"
        elif not usable(georef):
            why = "its GeoTIFF names no coordinate reference system"
        else:
            try:  # stored before the import checked it
                check(georef, width, height)
            except GeorefError as exc:
                why = str(exc)
        if why:
            raise GeorefError(
                f"this scene has no usable georeferencing ({why}); ask for crs=pixels to export "
                "the boxes in scene pixels"
            )
    kept, rings = [], []
    for box in boxes:
        clipped = clip_box(*(float(box[k]) for k in ("x", "y", "w", "h")), width, height)
        if clipped is None:
            continue
        x, y, w, h = clipped
        kept.append((box, clipped))
        rings.append([(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)])
    if crs == "native":
        rings = [[to_world(georef, px, py) for px, py in ring] for ring in rings]
    elif crs == "wgs84":
        flat = _to_lonlat(georef, [to_world(georef, px, py) for ring in rings for px, py in ring])
        rings = [flat[i : i + 5] for i in range(0, len(flat), 5)]
    if not all(math.isfinite(v) for ring in rings for xy in ring for v in xy):
        raise GeorefError(
            "some boxes have no finite place in the asked coordinate system; ask for crs=native "
            "or crs=pixels"
        )
    features = []
    for (box, clipped), ring in zip(kept, rings, strict=True):
        props = {k: _finite(v) for k, v in box.items() if k not in ("x", "y", "w", "h")}
        props["pixel_box"] = [_plain(v) for v in clipped]
        coords = _ccw([[float(a), float(b)] for a, b in ring])
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [coords]},
                "properties": props,
            }
        )
    out = {"type": "FeatureCollection", "features": features}
    if crs == "native":
        name = georef["crs"]
        if name.startswith("EPSG:"):
            name = f"urn:ogc:def:crs:EPSG::{name.split(':', 1)[1]}"
        out["crs"] = {"type": "name", "properties": {"name": name}}
    elif crs == "pixels":
        out["crs"] = {"type": "name", "properties": {"name": PIXEL_CRS}}
    return out


def _finite(v):
    """A property value that strict JSON can carry (a NaN score becomes null)."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _plain(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)
