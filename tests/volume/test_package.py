from __future__ import annotations

import flowserv_async.volume as volume_package


def test_every_exported_name_exists_once() -> None:
    names = volume_package.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(volume_package, name) is not None


def test_public_api_is_exported() -> None:
    assert {
        "StorageVolume",
        "FileSystemVolume",
        "DownloadHandle",
        "archive",
        "volume_from_spec",
        "validate_key",
    } <= set(volume_package.__all__)
