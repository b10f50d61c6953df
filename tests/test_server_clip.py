"""The map and overview of a collection made with a CLIP-family model (no ImageNet classifier): its regions
are named from zero-shot scores over the class names."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from semsearch.classes import resolve_group
from semsearch.collection import Collection


def test_map_and_overview_of_a_clip_collection(tiny_clip: Path, small_photos: Path, tmp_path: Path) -> None:
    from semsearch.server.app import create_app

    db = tmp_path / "db"
    with Collection(db, writable=True, model=f"clip:{tiny_clip}") as collection:
        assert collection.sync(small_photos).added == 12
    with TestClient(create_app(db), base_url="http://127.0.0.1:8000") as client:
        data = client.get("/api/map").json()
        assert len(data["points"]) == 12 and sum(c["size"] for c in data["clusters"]) == 12
        for cluster in data["clusters"]:
            resolve_group(cluster["label"])
        overview = client.get("/api/overview").json()
        assert overview["count"] == 12 and overview["model"].startswith("clip")
        assert overview["examples"] and all(resolve_group(q) for q in overview["examples"])
