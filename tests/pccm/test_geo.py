"""Haversine, the geolocation geocoder and the grid index against a brute-force scan."""

from __future__ import annotations

import random

import pytest

from carecoord.pccm.geo import GEOLOCATION_URL, GeolocationGeocoder, GridIndex, haversine_miles


def test_haversine_known_distance() -> None:
    # Raleigh-Durham airport to Charlotte airport: about 130 miles great-circle
    assert haversine_miles((35.8776, -78.7875), (35.2140, -80.9431)) == pytest.approx(130, abs=2)
    assert haversine_miles((35.0, -78.0), (35.0, -78.0)) == 0


def test_grid_within_matches_a_brute_force_scan() -> None:
    rng = random.Random(3)
    points = {f"p{i}": (rng.uniform(33.8, 36.6), rng.uniform(-84.3, -75.5)) for i in range(600)}
    grid = GridIndex(0.25)
    grid.extend(points.items())
    for _ in range(50):
        center = (rng.uniform(33.8, 36.6), rng.uniform(-84.3, -75.5))
        found = {k: d for k, d in grid.within(center, 30)}
        expected = {k for k, p in points.items() if haversine_miles(center, p) <= 30}
        assert set(found) == expected
        for k, d in found.items():
            assert d == pytest.approx(haversine_miles(center, points[k]), abs=1e-6)


def test_geocoder_reads_the_geolocation_extension_only() -> None:
    geo = GeolocationGeocoder()
    ext = {
        "url": GEOLOCATION_URL,
        "extension": [
            {"url": "latitude", "valueDecimal": 35.78},
            {"url": "longitude", "valueDecimal": -78.64},
        ],
    }
    assert geo.locate({"line": ["1 Main St"], "extension": [ext]}) == (35.78, -78.64)
    assert geo.locate({"line": ["1 Main St"]}) is None
    bad = {**ext, "extension": [{"url": "latitude", "valueDecimal": 135.0}, ext["extension"][1]]}
    assert geo.locate({"extension": [bad]}) is None
