"""GeoJSON that GIS tools read right (issue 38, point 5): georeferencing is checked on import
(non-finite, zero or malformed tags are ignored with their reason, never stored, never raw SQL);
every export parses as strict JSON; the default export is RFC 7946 (WGS84 longitude/latitude,
read by GDAL as EPSG:4326 at the right place, counter-clockwise rings, no foreign top-level
members); ``crs=native`` names the scene's CRS, a user-defined one (MODIS sinusoidal) included;
a scene without georeferencing exports pixels only when asked, under a local CRS; boxes are
clipped to the image."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pyogrio
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile
from helpers_data import run_worker_burst
from pyproj import CRS, Transformer

from labeling.models import Detection, JobRecord, ModelVersion, Scene, ScoringRun
from mlcore.ingest.georef import GeorefError, feature_collection, read_geotiff

WIDTH, HEIGHT = 160, 96
UTM = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633]
ORIGIN = (500_000.0, 4_650_000.0)
# MODIS sinusoidal (no EPSG code): user-defined geokeys, sphere of radius R, as GDAL writes them.
R = 6371007.181
SINU = [1, 1, 0, 15,
        1024, 0, 1, 1, 1025, 0, 1, 1, 2048, 0, 1, 32767, 2050, 0, 1, 32767,
        2054, 0, 1, 9102, 2056, 0, 1, 32767, 2057, 34736, 1, 0, 2058, 34736, 1, 1,
        3072, 0, 1, 32767, 3074, 0, 1, 32767, 3075, 0, 1, 24, 3076, 0, 1, 9001,
        3082, 34736, 1, 2, 3083, 34736, 1, 3, 3088, 34736, 1, 4]  # fmt: skip
SINU_DOUBLES = (R, R, 0.0, 0.0, 0.0)
MODIS_ORIGIN, MODIS_PIXEL = (1111950.519667, 5559752.598333), 463.312716528


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def geotiff(path, scale=(0.5, 0.5, 0.0), tie=(0, 0, 0, *ORIGIN, 0), keys=UTM, doubles=None,
            transform=None):  # fmt: skip
    tags = [(34735, "H", len(keys), keys)]
    if doubles:
        tags.append((34736, "d", len(doubles), doubles))
    if transform is not None:
        tags.append((34264, "d", 16, transform))
    else:
        tags += [(33550, "d", len(scale), scale), (33922, "d", len(tie), tie)]
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    pixels = np.stack([x & 255, y & 255, (x + y) & 255], axis=-1).astype(np.uint8)
    tifffile.imwrite(path, pixels, photometric="rgb", extratags=tags)
    return path


def ring_points(wkb: bytes) -> list[tuple[float, float]]:
    """The exterior ring of a little-endian WKB polygon, as GDAL returns it."""
    order, kind, rings, count = struct.unpack_from("<BIII", wkb)
    assert (order, kind % 1000, rings) == (1, 3, 1)
    values = struct.unpack_from(f"<{2 * count}d", wkb, 13)
    return list(zip(values[0::2], values[1::2], strict=True))


def signed_area(ring) -> float:
    (ox, oy), pairs = ring[0], zip(ring, ring[1:], strict=False)
    return sum((a[0] - ox) * (b[1] - oy) - (b[0] - ox) * (a[1] - oy) for a, b in pairs) / 2


BAD = {
    "scale 1e308": ({"scale": (1e308, 1e308, 0.0)}, "finite"),
    "NaN scale": ({"scale": (float("nan"), 0.5, 0.0)}, "pixel scale is nan"),
    "infinite tiepoint": ({"tie": (0, 0, 0, math.inf, 4.65e6, 0)}, "tiepoint is inf"),
    "zero scale": ({"scale": (0.0, 0.0, 0.0)}, "zero scale"),
    "3-value tiepoint": ({"tie": ORIGIN + (0.0,)}, "ModelTiepoint holds 3 values"),
    "pixels too small to tell apart": ({"scale": (1e-150, 1e-150, 0.0)}, "too small"),
    "singular transformation": (
        {"transform": (1.0, 2.0, 0, 5e5, 2.0, 4.0, 0, 4.65e6, 0, 0, 0, 0, 0, 0, 0, 1)},
        "singular",
    ),
    "latitude past the pole": (
        {
            "keys": [1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326],
            "scale": (1.0, 1.0, 0.0),
            "tie": (0, 0, 0, 10.0, 120.0, 0),
        },
        "outside the area",
    ),  # fmt: skip
}
GOOD = {
    "UTM 33N": {},
    "lon/lat": {"keys": [1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326],
                "scale": (1e-5, 1e-5, 0.0), "tie": (0, 0, 0, 15.0, 42.0, 0)},
    "web mercator, huge pixels": {"keys": UTM[:-1] + [3857], "scale": (1e5, 1e5, 0.0)},
    "millimetre pixels": {"scale": (1e-3, 1e-3, 0.0)},
    "rotated transformation": {
        "transform": (0.4, 0.3, 0, 5e5, 0.3, -0.4, 0, 4.65e6, 0, 0, 0, 0, 0, 0, 0, 1)
    },
    "pixel is point": {"keys": [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 2, 3072, 0, 1, 32633]},
    "MODIS sinusoidal": {"keys": SINU, "doubles": SINU_DOUBLES,
                         "scale": (MODIS_PIXEL, MODIS_PIXEL, 0.0),
                         "tie": (0, 0, 0, *MODIS_ORIGIN, 0)},
}  # fmt: skip
BOXES = [
    {"x": 10, "y": 20, "w": 32, "h": 32, "label": "car", "score": 0.9},
    {"x": 150, "y": 80, "w": 32, "h": 32, "label": "boat", "score": float("nan")},  # overhangs
]


@pytest.mark.parametrize("case", BAD)
def test_unusable_georeferencing_is_refused_with_its_reason(tmp_path, case):
    tags, reason = BAD[case]
    georef = read_geotiff(geotiff(tmp_path / "bad.tif", **tags))
    assert georef["geotransform"] is None and reason in georef["problem"], georef
    for crs in ("wgs84", "native"):
        with pytest.raises(GeorefError, match="no usable georeferencing.*crs=pixels"):
            feature_collection(BOXES, georef, WIDTH, HEIGHT, crs=crs)
    strict_loads(json.dumps(feature_collection(BOXES, georef, WIDTH, HEIGHT, crs="pixels")))


@pytest.mark.parametrize("case", GOOD)
def test_every_accepted_georeference_exports_strict_counter_clockwise_clipped_geojson(
    tmp_path, case
):
    georef = read_geotiff(geotiff(tmp_path / "good.tif", **GOOD[case]))
    assert georef["geotransform"] and georef["crs"], georef
    for crs in ("wgs84", "native", "pixels"):
        data = strict_loads(
            json.dumps(feature_collection(BOXES, georef, WIDTH, HEIGHT, crs=crs), allow_nan=False)
        )
        assert set(data) == ({"type", "features"} | ({"crs"} if crs != "wgs84" else set()))
        for feature in data["features"]:
            ring = feature["geometry"]["coordinates"][0]
            assert ring[0] == ring[-1] and signed_area(ring) > 0, (crs, ring)
        edge = data["features"][1]["properties"]
        assert edge["pixel_box"] == [150, 80, 10, 16] and edge["score"] is None


def test_a_user_defined_crs_is_kept_as_wkt_and_named_in_the_native_export(tmp_path):
    tags = GOOD["MODIS sinusoidal"]
    georef = read_geotiff(geotiff(tmp_path / "modis.tif", **tags))
    sinusoidal = CRS.from_proj4(f"+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R={R} +units=m +no_defs")
    assert not georef["crs"].startswith("EPSG:") and CRS(georef["crs"]).equals(sinusoidal)
    native = tmp_path / "native.geojson"
    native.write_text(json.dumps(feature_collection(BOXES, georef, WIDTH, HEIGHT, "native")))
    assert CRS(pyogrio.read_info(native)["crs"]).equals(sinusoidal)  # GDAL reads the WKT
    # The default export puts pixel (10, 20) where the sinusoidal formulas put it.
    default = feature_collection(BOXES, georef, WIDTH, HEIGHT)
    x, y = MODIS_ORIGIN[0] + 10 * MODIS_PIXEL, MODIS_ORIGIN[1] - 20 * MODIS_PIXEL
    lat = y / R
    expected = (math.degrees(x / (R * math.cos(lat))), math.degrees(lat))
    assert default["features"][0]["geometry"]["coordinates"][0][0] == pytest.approx(
        expected, abs=1e-8
    )


def gdal_geotiff(path):
    """The same picture and georeferencing (UTM 33N, 0.5 m pixels from ORIGIN), written by GDAL
    itself (rasterio), tiled and JPEG-compressed as GIS tools write them."""
    import rasterio
    from rasterio.transform import from_origin

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    pixels = np.stack([x & 255, y & 255, (x + y) & 255]).astype(np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", width=WIDTH, height=HEIGHT, count=3, dtype="uint8",
        crs="EPSG:32633", transform=from_origin(*ORIGIN, 0.5, 0.5), tiled=True,
        blockxsize=32, blockysize=32, compress="jpeg", photometric="ycbcr",
    ) as out:  # fmt: skip
        out.write(pixels)
    return path


def upload(client, project, path) -> Scene:
    r = client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile(path.name, path.read_bytes(), "image/tiff")},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    return Scene.objects.get(pk=r.json()["id"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", ["scale 1e308", "NaN scale", "zero scale", "3-value tiepoint"])
def test_a_geotiff_with_bad_georeferencing_imports_as_a_plain_picture_and_says_why(
    alice_client, project, storage_dir, case
):
    tags, reason = BAD[case]
    scene = upload(alice_client, project, geotiff(storage_dir.parent / "bad.tif", **tags))
    job = JobRecord.objects.get(kind="import_scene", project=project)
    assert job.status == "done" and scene.width == WIDTH, (job.status, job.error)
    assert "georeferencing ignored" in job.log and reason in job.log
    r = alice_client.get(f"/api/scenes/{scene.pk}/geojson")
    assert r.status_code == 409 and reason in r.json()["error"], r.content
    assert "crs=pixels" in r.json()["error"]
    pixels = alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=pixels")
    assert pixels.status_code == 200
    strict_loads(pixels.content)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("writer", [geotiff, gdal_geotiff], ids=["tifffile", "gdal"])
def test_gdal_reads_the_default_export_as_wgs84_at_the_right_place(
    alice_client, project, storage_dir, tmp_path, writer
):
    scene = upload(alice_client, project, writer(storage_dir.parent / "utm.tif"))
    version = ModelVersion.objects.create(project=project, number=1, status="ready",
                                          is_current=True, classes=project.class_names)  # fmt: skip
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="done")
    for box in BOXES:
        Detection.objects.create(run=run, kind="merged", **box)

    r = alice_client.get(f"/api/scenes/{scene.pk}/geojson")
    assert r.status_code == 200 and r["Content-Type"] == "application/geo+json"
    data = strict_loads(r.content)
    assert set(data) == {"type", "features"}  # RFC 7946: no crs, no foreign members
    path = tmp_path / "default.geojson"
    path.write_bytes(r.content)
    info = pyogrio.read_info(path)
    assert CRS(info["crs"]).equals(CRS("EPSG:4326")) and info["features"] == 2
    _meta, _fids, geometry, _fields = pyogrio.raw.read(path)
    utm = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)

    def lonlat(px, py):  # 0.5 m pixels from the corner ORIGIN, y down = south
        return utm.transform(ORIGIN[0] + 0.5 * px, ORIGIN[1] - 0.5 * py)

    # The second box overhangs the image's corner: clipped to (150, 80)-(160, 96).
    for wkb, (x0, y0, x1, y1) in zip(geometry, [(10, 20, 42, 52), (150, 80, 160, 96)],
                                     strict=True):  # fmt: skip
        ring = ring_points(wkb)
        assert signed_area(ring) > 0  # counter-clockwise
        expected = {lonlat(x, y) for x in (x0, x1) for y in (y0, y1)}
        assert len(set(ring)) == 4
        for got in set(ring):
            assert min(math.dist(got, e) for e in expected) < 1e-8, (got, expected)

    # The scene's own CRS on request, named so GDAL places it in UTM 33N.
    native = alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=native")
    path.write_bytes(native.content)
    assert CRS(pyogrio.read_info(path)["crs"]).equals(CRS("EPSG:32633"))
    ring = ring_points(pyogrio.raw.read(path)[2][0])
    assert (ORIGIN[0] + 5, ORIGIN[1] - 10) in ring and (ORIGIN[0] + 21, ORIGIN[1] - 26) in ring
    assert alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=mercator").status_code == 400


@pytest.mark.django_db(transaction=True)
def test_a_scene_without_georeferencing_exports_pixels_only_on_request(
    alice_client, project, storage_dir, tmp_path
):
    scene = upload(alice_client, project, geotiff(storage_dir.parent / "plain.tif"))
    scene.georef = None
    scene.save(update_fields=["georef"])
    r = alice_client.get(f"/api/scenes/{scene.pk}/geojson")
    assert r.status_code == 409 and "no usable georeferencing" in r.json()["error"]
    # Stored before the import checked it (a zero scale, an unnamed CRS): refused the same way.
    for georef, reason in [
        ({"geotransform": [5e5, 0.0, 0.0, 4.65e6, 0.0, 0.0], "crs": "EPSG:32633"}, "singular"),
        ({"geotransform": [5e5, 0.5, 0.0, 4.65e6, 0.0, -0.5], "crs": None}, "no coordinate"),
    ]:
        scene.georef = georef
        scene.save(update_fields=["georef"])
        r = alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=native")
        assert r.status_code == 409 and reason in r.json()["error"], r.content
    scene.georef = None
    scene.save(update_fields=["georef"])
    pixels = alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=pixels")
    assert pixels.status_code == 200
    path = tmp_path / "pixels.geojson"
    path.write_bytes(pixels.content)
    crs = CRS(pyogrio.read_info(path)["crs"])  # GDAL sees a local CRS, not degrees
    assert not crs.is_geographic and not crs.is_projected and "pixel" in crs.name
