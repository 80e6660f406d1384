"""The package's public names are explicit and sorted."""

from __future__ import annotations

import flowserv_async


def test_all_is_sorted_and_importable() -> None:
    names = flowserv_async.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(flowserv_async, name) is not None


def test_entry_points() -> None:
    from flowserv_async import LocalAPIFactory, init_backend, init_db

    assert callable(LocalAPIFactory) and callable(init_db) and callable(init_backend)
