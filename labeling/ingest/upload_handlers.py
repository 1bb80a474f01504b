"""Upload handling that never puts more than UPLOAD_MAX_BYTES of one file on the disk."""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler


class SizeLimitedUploadHandler(TemporaryFileUploadHandler):
    """Spools to a temporary file like Django's handler, but stops writing (and empties the file)
    once an upload passes the limit. Counting goes on to the end, so the form refuses the file by
    its real size with the usual message, while the disk never holds the oversized rest."""

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0
        self.over_limit = False

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received <= int(settings.UPLOAD_MAX_BYTES):
            self.file.write(raw_data)
        elif not self.over_limit:
            self.over_limit = True
            self.file.truncate(0)

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        return self.file
