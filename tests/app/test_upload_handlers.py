"""The upload handler keeps counting an oversized upload but stops writing it to the disk."""

from __future__ import annotations

from django.test import RequestFactory

from labeling.ingest.upload_handlers import SizeLimitedUploadHandler


def feed(handler, chunks):
    handler.new_file("scene", "big.png", "image/png", None)
    offset = 0
    for chunk in chunks:
        handler.receive_data_chunk(chunk, offset)
        offset += len(chunk)
    return handler.file_complete(offset)


def test_an_upload_within_the_limit_is_kept_whole(settings):
    settings.UPLOAD_MAX_BYTES = 1000
    upload = feed(SizeLimitedUploadHandler(RequestFactory().post("/")), [b"a" * 400] * 2)
    assert upload.size == 800 and upload.read() == b"a" * 800


def test_an_oversized_upload_is_counted_to_the_end_but_not_stored(settings):
    settings.UPLOAD_MAX_BYTES = 1000
    upload = feed(SizeLimitedUploadHandler(RequestFactory().post("/")), [b"a" * 400] * 5)
    assert upload.size == 2000  # the form refuses it by this size, with the usual message
    assert upload.read() == b""  # and the disk never held more than the limit


def test_an_oversized_post_is_refused_with_the_size_message(alice_client, project, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.UPLOAD_MAX_BYTES = 5 * 1024 * 1024  # above the in-memory size: the handler spools
    image = SimpleUploadedFile("big.png", b"\x89PNG" + b"0" * (6 * 1024 * 1024), "image/png")
    response = alice_client.post(f"/api/projects/{project.pk}/scenes", {"image": image})
    assert response.status_code == 400
    assert "above the upload limit" in response.content.decode()
    assert not project.scenes.exists()
