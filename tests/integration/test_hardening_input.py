"""Malformed or oversized input answers a 400 JSON with the reason and stores nothing: Unicode
digits, huge numbers, deep nesting, non-id query strings, long storage keys, huge crops, a JPEG
whose data cannot cover its declared size, a huge body; a logged-out POST hears 401 JSON (not a
CSRF page); a refused storage key's message names the key, never where the server keeps it.
Real PostgreSQL and Redis, the real middleware stack (CSRF enforced where it matters)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from django.test import Client
from helpers_data import scene_png, storage_files
from PIL import Image
from review_helpers import make_scored_scene

from labeling.models import Annotation, Dataset, JobRecord, Scene
from labeling.review import cache, crops

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir, redis_conn):
    cache._cache.clear()
    return make_scored_scene(project, 256, 320, seed=1)


def post_json(client, url, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data, content_type="application/json", **extra)


def assert_400(response, *words):
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    for word in words:
        assert word in error, error
    return error


ANNOTATION = {"kind": "false_negative", "label": "car", "x": 10, "y": 10, "w": 32, "h": 32}


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"x": "²"}, ["x (scene pixels) must be an integer", "'²'"]),
        ({"y": "٣"}, ["y (scene pixels) must be an integer"]),
        ({"w": "9" * 5000}, ["w (scene pixels) must be an integer"]),
        ({"h": 10**40}, ["h (scene pixels) must be between"]),
        ({"x": [1]}, ["must be an integer"]),
        ({"detection": "²"}, ["does not exist"]),
        ({"detection": 10**30}, ["does not exist"]),
    ],
)
def test_annotation_fields_that_are_no_numbers(alice_client, scored, changes, words):
    scene, _ = scored
    r = post_json(alice_client, f"/api/scenes/{scene.pk}/annotations", ANNOTATION | changes)
    assert_400(r, *words)
    assert not Annotation.objects.exists()


def test_json_bodies_with_huge_numbers_or_deep_nesting(alice_client, scored, project):
    scene, _ = scored
    url = f"/api/scenes/{scene.pk}/annotations"
    body = json.dumps(ANNOTATION).replace('"x": 10', '"x": ' + "7" * 5000)
    assert_400(post_json(alice_client, url, body), "not valid JSON", "4300")
    deep = "[" * 100_000 + "]" * 100_000
    assert_400(post_json(alice_client, url, deep), "nested too deeply")
    deep_object = '{"kind": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_400(post_json(alice_client, url, deep_object), "nested too deeply")
    assert_400(post_json(alice_client, f"/api/projects/{project.pk}/retrain", deep), "JSON")
    assert_400(post_json(alice_client, "/api/projects", deep), "JSON")
    assert not Annotation.objects.exists()


@pytest.mark.parametrize("value", ["abc", "1.5", "²", "-1", "9" * 30])
def test_scene_query_parameter_must_be_an_id(alice_client, scored, project, value):
    for route in ("queue", "runs"):
        r = alice_client.get(f"/api/projects/{project.pk}/{route}", {"scene": value})
        assert_400(r, "scene must be")


@pytest.mark.parametrize(
    "query, words",
    [
        ("x=²&y=0", ["x (scene pixels) must be an integer"]),
        ("x=0&y=0&size=²", ["size (scene pixels) must be an integer"]),
        ("x=0&y=0&size=2048&context=0&scale=8", ["16384x16384", "above the limit"]),
        ("x=0&y=0&size=2048&context=2048&scale=8", ["49152x49152", "above the limit"]),
        ("x=0&y=0&size=1024&context=512&scale=2", ["4096x4096"]),
        ("x=0&y=0&size=" + "9" * 5000, ["size (scene pixels) must be an integer"]),
    ],
)
def test_window_crop_refuses_what_it_cannot_afford(alice_client, scored, query, words):
    scene, _ = scored
    assert_400(alice_client.get(f"/api/scenes/{scene.pk}/window.png?{query}"), *words)


def test_window_crop_at_the_cap_is_served(alice_client, scored):
    scene, _ = scored
    r = alice_client.get(f"/api/scenes/{scene.pk}/window.png?x=0&y=0&size=256&context=0&scale=8")
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (2048, 2048)
    r = alice_client.get(f"/api/scenes/{scene.pk}/window.png?x=0&y=0&size=256&context=1&scale=8")
    assert_400(r, "2064x2064")


def test_crop_reads_wide_scenes_in_bands(project, storage_dir, redis_conn, settings):
    """A band of rows at a time: the crop equals the scene's pixels whatever the band size."""
    import numpy as np

    from labeling.projects.storage_keys import get_storage
    from mlcore.ingest.scenes import NpyScene

    scene, _ = make_scored_scene(project, 96, 128, seed=2)
    pixels = NpyScene(get_storage(), scene.pixels_key).read_rows(0, 96)
    whole = crops.window_crop(scene, 40, 30, size=32, context=16, outline=False)
    saved = crops.CROP_READ_BYTES
    crops.CROP_READ_BYTES = 128 * 3 * 5  # five rows per band
    try:
        banded = crops.window_crop(scene, 40, 30, size=32, context=16, outline=False)
    finally:
        crops.CROP_READ_BYTES = saved
    assert np.array_equal(whole, banded)
    assert np.array_equal(banded[:, :], pixels[14:78, 24:88])


def lying_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    """A valid 16x16 JPEG (end marker included) whose frame header claims width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(
        buffer, "JPEG", quality=50, progressive=progressive
    )
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_whose_data_cannot_cover_its_size_is_refused(
    alice_client, project, storage_dir, progressive
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = lying_jpeg(12000, 12000, progressive)
    assert len(data) < 1000
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("tiny.jpg", data, "image/jpeg")},
    )
    assert_400(r, "tiny.jpg is truncated", "12000x12000")
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []


@pytest.mark.django_db(transaction=True)
def test_a_lying_jpeg_in_the_storage_fails_its_import(alice_client, project, storage_dir):
    from helpers_data import run_worker_burst

    from labeling.models import Scene as SceneModel

    (storage_dir / "incoming").mkdir()
    (storage_dir / "incoming" / "tiny.jpg").write_bytes(lying_jpeg(9000, 9000))
    r = post_json(
        alice_client, f"/api/projects/{project.pk}/scenes", {"storage_key": "incoming/tiny.jpg"}
    )
    assert r.status_code == 202
    run_worker_burst()
    r = alice_client.get(f"/api/projects/{project.pk}/scenes/{r.json()['id']}/import")
    assert r.status_code == 410 and "truncated" in r.json()["job"]["error"]
    assert not SceneModel.objects.exists()
    assert storage_files(storage_dir) == ["incoming/tiny.jpg"]  # no pixels.npy, no tiles


def test_genuine_jpegs_pass_the_coverage_check(tmp_path):
    """Flat pictures compress best; even they carry more than one bit per 8x8 block."""
    from labeling.ingest.image_checks import check_picture

    for size, kwargs in [((4000, 3000), {}), ((4000, 3000), {"progressive": True}),
                         ((333, 77), {"quality": 5}), ((8, 8), {})]:  # fmt: skip
        path = tmp_path / "flat.jpg"
        Image.new("RGB", size, (200, 200, 200)).save(path, "JPEG", optimize=True, **kwargs)
        check_picture(path, "flat.jpg")


@pytest.mark.parametrize("route", ["datasets", "scenes"])
def test_long_or_refused_storage_keys(alice_client, project, storage_dir, settings, route):
    url = f"/api/projects/{project.pk}/{route}"
    error = assert_400(post_json(alice_client, url, {"storage_key": "a" * 600}), "480")
    for key in ("a/" + "b" * 300 + "/c.png", "../outside.png", "/etc/passwd", "missing/x.png"):
        error += assert_400(post_json(alice_client, url, {"storage_key": key}))
    # Which key was refused, never where the server keeps its storage.
    assert str(storage_dir) not in error and settings.STORAGE_URL not in error
    assert "'../outside.png'" in error and "'missing/x.png'" in error
    assert not Dataset.objects.exists() and not Scene.objects.exists()
    assert not JobRecord.objects.exists()


def test_long_names_are_refused(alice_client, project, storage_dir):
    (storage_dir / "in.png").write_bytes(scene_png(64, 64))
    r = post_json(
        alice_client,
        f"/api/projects/{project.pk}/scenes",
        {"storage_key": "in.png", "name": "n" * 201},
    )
    assert_400(r, "at most 200")
    assert not Scene.objects.exists()


def test_logged_out_post_gets_401_json_not_a_csrf_page(project):
    client = Client(enforce_csrf_checks=True)
    for url in (
        f"/api/projects/{project.pk}/retrain",
        "/api/projects",
        "/api/scenes/1/annotations",
    ):
        r = post_json(client, url, {})
        assert r.status_code == 401, (url, r.status_code)
        assert "authentication required" in r.json()["error"]


def test_csrf_is_still_checked_for_a_logged_in_post(project, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    r = post_json(client, f"/api/projects/{project.pk}/retrain", {"profile": "tiny"})
    assert r.status_code == 403 and "X-CSRFToken" in r.json()["error"]


def test_an_oversized_body_is_a_json_400(alice_client, project, settings):
    big = b'{"name": "' + b"x" * (25 * 1024 * 1024) + b'"}'
    r = post_json(alice_client, "/api/projects", big)
    assert_400(r, "above the limit")
    r = alice_client.post(
        "/api/projects", b"a=" + b"x" * (25 * 1024 * 1024),
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert_400(r, "above the limit")
    # Under the middleware's limit but over Django's own (a lower setting): still JSON.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = post_json(alice_client, "/api/projects", {"name": "y" * 2000})
    assert_400(r)


LONE_SURROGATE = "car\udcff"  # json.dumps writes it as the escape "\udcff", as a client may


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"name": LONE_SURROGATE}, ["name contains a lone surrogate (U+DCFF)"]),
        ({"description": LONE_SURROGATE}, ["description contains a lone surrogate"]),
        ({"negative_class": LONE_SURROGATE}, ["negative class contains a lone surrogate"]),
        ({"negative_class": "neg\x00"}, ["Null characters are not allowed"]),
        ({"classes": [{"name": "car", "color": "#e6194b", "sources": ["auto\x00mobile"]}]},
         ["'auto\\x00mobile' contains a NUL character"]),
        ({"classes": [{"name": "car", "color": "#e6194b", "sources": [LONE_SURROGATE]}]},
         ["'car\\udcff' contains a lone surrogate"]),
    ],
)  # fmt: skip
def test_text_the_database_cannot_store_is_refused(alice_client, project, changes, words):
    from labeling.models import Project

    r = post_json(alice_client, "/api/projects", {"name": "fresh"} | changes)
    assert_400(r, *words)
    assert list(Project.objects.values_list("name", flat=True)) == [project.name]


def test_unstorable_text_is_refused_by_the_command_too(alice):
    from django.core.management import CommandError, call_command

    from labeling.models import Project

    with pytest.raises(CommandError, match="lone surrogate"):
        call_command("create_project", "p\udcff", "--user", "alice", "--class", "car:#e6194b:x")
    with pytest.raises(CommandError, match="NUL character"):
        call_command("create_project", "p", "--user", "alice", "--class", "car:#e6194b:a\x00")
    assert not Project.objects.exists()


@pytest.mark.parametrize("text", [LONE_SURROGATE, "a\x00b"])
def test_unstorable_names_and_keys_of_scenes_and_datasets(alice_client, project, storage_dir,
                                                          text):  # fmt: skip
    (storage_dir / "in.png").write_bytes(scene_png(64, 64))
    scenes, datasets = f"/api/projects/{project.pk}/scenes", f"/api/projects/{project.pk}/datasets"
    problem = "lone surrogate" if "\udcff" in text else "NUL character"
    for url, body, field in [
        (scenes, {"collage": {"tiles": "demo", "cols": 4}, "name": text}, "the name"),
        (scenes, {"storage_key": "in.png", "name": text}, "the name"),
        (datasets, {"storage_key": "in.png", "name": text}, "the name"),
        (scenes, {"storage_key": f"in{text}.png"}, "the storage key"),
        (datasets, {"storage_key": f"in{text}.png"}, "the storage key"),
    ]:
        assert_400(post_json(alice_client, url, body), f"{field} contains a {problem}")
    assert not Scene.objects.exists() and not Dataset.objects.exists()
    assert not JobRecord.objects.exists()


def test_a_collage_above_the_pixel_limit_is_refused_before_it_is_queued(
    alice_client, project, storage_dir, redis_conn, settings
):
    """Columns are not the only measure: a tall target turns each into many tile rows."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = f"/api/projects/{project.pk}/scenes"

    def collage(cols, target=None):
        if target is None:  # the demo Mona Lisa (518x799)
            return post_json(alice_client, url, {"collage": {"tiles": "demo", "cols": cols}})
        upload = SimpleUploadedFile("tall.png", target, "image/png")
        return alice_client.post(
            url, {"source": "collage", "tiles": "demo", "cols": cols, "target": upload}
        )

    tall = scene_png(1, 300)
    assert_400(collage(400, tall), "12800x3840000 = 49,152,000,000 pixels", "COLLAGE_MAX_PIXELS")
    assert_400(collage(400), "12800x19744 = 252,723,200 pixels", "at most 308 column")
    settings.COLLAGE_MAX_PIXELS = 1_000_000
    assert_400(collage(2, tall), "64x19200 = 1,228,800 pixels", "above the limit of 1,000,000")
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []
    settings.COLLAGE_MAX_PIXELS = 150_000_000
    assert collage(308).status_code == 202


def padded_jpeg(width: int, height: int, junk: int, progressive: bool = False) -> bytes:
    """The headers of a 16x16 JPEG declaring width x height, then `junk` random bytes as its scan
    data (each 0xFF byte-stuffed, so the scan is well formed and no marker ends it) and the end
    marker: enough bytes per 8x8 block for the coverage check, noise for a decoder."""
    import numpy as np

    header = lying_jpeg(width, height, progressive)
    sos = header.find(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(header[sos + 2 : sos + 4], "big")
    noise = np.random.default_rng(7).integers(0, 256, junk, dtype=np.uint8).tobytes()
    return header[:scan] + noise.replace(b"\xff", b"\xff\x00") + b"\xff\xd9"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("progressive", [False, True])
def test_a_padded_jpeg_is_refused_not_stored_as_grey(alice_client, project, storage_dir,
                                                     progressive):  # fmt: skip
    """300 kB that would decode to 432 MB of pixels, nearly all of them the decoder's grey. The
    upload request reads only the header and the structure (which this file passes); the import
    job streams the pixels, refuses the grey with the reason and leaves nothing behind."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from helpers_data import run_worker_burst

    from labeling.ingest.image_checks import check_picture
    from labeling.models import Scene as SceneModel

    data = padded_jpeg(12000, 12000, 300_000, progressive)
    assert 300_000 < len(data) < 305_000
    path = storage_dir.parent / "padded.jpg"
    path.write_bytes(data)
    check_picture(path, "padded.jpg")  # the bytes-per-block floor alone lets it through
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("padded.jpg", data, "image/jpeg")},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    r = alice_client.get(f"/api/projects/{project.pk}/scenes/{r.json()['id']}/import")
    error = r.json()["job"]["error"]
    assert r.status_code == 410
    if progressive:  # libjpeg itself stops at the broken progressive scan
        assert "padded.jpg is corrupt or truncated: VipsJpeg: Corrupt JPEG data" in error
    else:
        for words in ("padded.jpg is corrupt or padded", "of its 12000x12000", "flat grey"):
            assert words in error
    assert str(storage_dir) not in error and "/tmp" not in error
    assert not SceneModel.objects.exists()
    assert storage_files(storage_dir) == []


def test_jpegs_pass_unless_their_bottom_half_is_decoder_grey(tmp_path):
    """Only a run of exactly mid-grey rows reaching the bottom counts, and only over half the
    image (a genuine picture that is mostly flat mid-grey is refused too, by design)."""
    from mlcore.ingest.scenes import SceneError, image_to_npy

    def validate_scene_image(path):
        size = image_to_npy(path, tmp_path / "grey.npy")
        return (*size, "JPEG")

    def grey_jpeg(coloured_rows: tuple[int, int]) -> Path:
        picture = Image.new("RGB", (800, 608), (128, 128, 128))
        picture.paste((30, 90, 200), (0, *coloured_rows[:1], 800, coloured_rows[1]))
        picture.save(tmp_path / "grey.jpg", "JPEG", quality=90)
        return tmp_path / "grey.jpg"

    assert validate_scene_image(grey_jpeg((592, 608))) == (800, 608, "JPEG")  # grey above
    assert validate_scene_image(grey_jpeg((0, 320))) == (800, 608, "JPEG")  # grey bottom 47%
    with pytest.raises(SceneError, match=r"rows 2\d\d to 607 of its 800x608 pixels are the flat"):
        validate_scene_image(grey_jpeg((0, 288)))
