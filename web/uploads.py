"""Reading an uploaded picture: one multipart field, an image type, decoded a few at a time."""

from __future__ import annotations

from flask import abort, request

from recsys.recommend import Recommendation
from web import guards
from web.services import rec, services

MAX_UPLOAD_BYTES = 8 * 1024 * 1024


def read_upload() -> bytes:
    """The picture's bytes. Its type is decided from the bytes when it is decoded (JPEG, PNG, WebP,
    GIF, BMP or TIFF: ``recsys.catalog.IMAGE_FORMATS``), never from the type the client declared."""
    upload = request.files.get("image")
    if upload is None:
        abort(400, description="send the picture as a multipart file field named 'image'")
    return upload.read()


def similar_to_upload(k: int) -> list[Recommendation]:
    """Visual search on the uploaded picture, under the upload pixel cap and the decode slots."""
    data = read_upload()
    with guards.decode_slot():
        return rec().similar_to_image(data, k, max_pixels=services().settings.upload_max_pixels)
