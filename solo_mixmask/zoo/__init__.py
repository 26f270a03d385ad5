"""Model zoo: a manifest of pretrained checkpoints, verified downloads and format conversion.

``zoo/manifest.yaml`` lists the checkpoints; ``fetch`` downloads with resume and sha256
verification; ``pin`` semantics live in ``manifest``; ``convert`` turns official MixMask/MoCo and
solo-learn checkpoints into this package's format (see docs/zoo.md).
"""

from .convert import convert, read_checkpoint
from .download import drive_file_id, fetch, is_google_drive, sha256_file
from .manifest import (
    Entry,
    expected_sha256,
    find_manifest,
    get_entry,
    load_manifest,
    load_pins,
    pins_path,
    save_pin,
)

__all__ = ["Entry", "convert", "drive_file_id", "expected_sha256", "fetch", "find_manifest",
           "get_entry", "is_google_drive", "load_manifest", "load_pins", "pins_path",
           "read_checkpoint", "save_pin", "sha256_file"]
