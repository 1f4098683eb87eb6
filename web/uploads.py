"""Reading an uploaded picture: one multipart field, an image type, decoded a few at a time."""

from __future__ import annotations

from flask import abort, request

from recsys.recommend import Recommendation
from web import guards
from web.services import rec, services

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")


def read_upload() -> bytes:
    upload = request.files.get("image")
    if upload is None or not upload.filename:
        abort(400, description="send the picture as a multipart field named 'image'")
    if upload.mimetype not in IMAGE_TYPES:
        abort(415, description=f"{upload.mimetype[:60] or 'unknown type'} is not an image type we accept")
    return upload.read()


def similar_to_upload(k: int) -> list[Recommendation]:
    """Visual search on the uploaded picture, under the upload pixel cap and the decode slots."""
    data = read_upload()
    with guards.decode_slot():
        return rec().similar_to_image(data, k, max_pixels=services().settings.upload_max_pixels)
