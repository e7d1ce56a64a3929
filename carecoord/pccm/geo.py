"""Distances and places: haversine, a pluggable geocoder and a grid index of PCP locations."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from typing import Any, Final, Protocol

__all__ = [
    "EARTH_RADIUS_MILES",
    "GEOLOCATION_URL",
    "Cell",
    "Geocoder",
    "GeolocationGeocoder",
    "GridIndex",
    "GridItem",
    "Point",
    "h_to_miles",
    "haversine_h",
    "haversine_miles",
    "miles_to_h",
]

GEOLOCATION_URL: Final = "http://hl7.org/fhir/StructureDefinition/geolocation"
EARTH_RADIUS_MILES: Final = 3958.7613
_MILES_PER_DEGREE_LAT: Final = math.pi * EARTH_RADIUS_MILES / 180

#: (latitude, longitude) in degrees.
Point = tuple[float, float]


def haversine_miles(a: Point, b: Point) -> float:
    """Great-circle distance in miles."""
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_MILES * math.asin(min(1.0, math.sqrt(h)))


class Geocoder(Protocol):
    """Turns a FHIR Address into a point (None when it cannot)."""

    def locate(self, address: Mapping[str, Any]) -> Point | None: ...


class GeolocationGeocoder:
    """The Address's own ``geolocation`` extension (latitude/longitude); no network."""

    def locate(self, address: Mapping[str, Any]) -> Point | None:
        for ext in address.get("extension", ()):
            if ext.get("url") != GEOLOCATION_URL:
                continue
            values = {sub.get("url"): sub.get("valueDecimal") for sub in ext.get("extension", ())}
            lat, lon = values.get("latitude"), values.get("longitude")
            if (
                isinstance(lat, int | float)
                and isinstance(lon, int | float)
                and -90 <= lat <= 90
                and -180 <= lon <= 180
            ):
                return float(lat), float(lon)
        return None


#: A grid entry: key, point, and the point's latitude/longitude in radians and cos(latitude).
GridItem = tuple[str, Point, float, float, float]
#: A grid cell: (row, column) = floor(latitude / cell size), floor(longitude / cell size).
Cell = tuple[int, int]


def haversine_h(lat_r: float, lon_r: float, cos_lat: float, item: GridItem) -> float:
    """The haversine term ``h`` between a point (radians, cos) and a grid item: monotonic in
    distance (``distance = 2 R asin(sqrt(h))``), so comparisons need no ``asin``."""
    return (
        math.sin((item[2] - lat_r) / 2) ** 2
        + cos_lat * item[4] * math.sin((item[3] - lon_r) / 2) ** 2
    )


def h_to_miles(h: float) -> float:
    return 2 * EARTH_RADIUS_MILES * math.asin(min(1.0, math.sqrt(h)))


def miles_to_h(miles: float) -> float:
    return math.sin(min(math.pi / 2, miles / (2 * EARTH_RADIUS_MILES))) ** 2


class GridIndex:
    """Items bucketed by a square grid of ``cell_deg`` degrees, for radius queries."""

    def __init__(self, cell_deg: float = 0.25) -> None:
        self.cell_deg = cell_deg
        self._cells: dict[Cell, list[GridItem]] = defaultdict(list)

    def _cell(self, p: Point) -> Cell:
        return math.floor(p[0] / self.cell_deg), math.floor(p[1] / self.cell_deg)

    def add(self, key: str, point: Point) -> None:
        lat_r, lon_r = math.radians(point[0]), math.radians(point[1])
        self._cells[self._cell(point)].append((key, point, lat_r, lon_r, math.cos(lat_r)))

    def extend(self, items: Iterable[tuple[str, Point]]) -> None:
        for key, point in items:
            self.add(key, point)

    def buckets(self, center: Point, miles: float) -> list[list[GridItem]]:
        """The non-empty cells that may hold items within ``miles`` of ``center``."""
        dlat = miles / _MILES_PER_DEGREE_LAT
        coslat = max(math.cos(math.radians(min(89.0, abs(center[0]) + dlat))), 1e-6)
        dlon = dlat / coslat
        lat0, lon0 = self._cell((center[0] - dlat, center[1] - dlon))
        lat1, lon1 = self._cell((center[0] + dlat, center[1] + dlon))
        cells = self._cells
        out = []
        for i in range(lat0, lat1 + 1):
            for j in range(lon0, lon1 + 1):
                bucket = cells.get((i, j))
                if bucket:
                    out.append(bucket)
        return out

    def nearest_cells(
        self, center: Point, miles: float
    ) -> list[tuple[float, Cell, list[GridItem]]]:
        """The non-empty cells that may hold items within ``miles`` of ``center``, each with a
        lower bound of the haversine term ``h`` from ``center`` to anything in it, nearest first
        (so a search can stop once the bound passes its best).

        ``h >= sin²(Δφ/2)`` and ``h >= cos²(φmax)·sin²(Δλ/2)`` for the smallest latitude and
        longitude gaps between ``center`` and the cell, ``φmax`` the largest |latitude| involved:
        the first two depend on the cell's row only, the third on its column only.
        """
        c = self.cell_deg
        lat_c, lon_c = center
        dlat = miles / _MILES_PER_DEGREE_LAT
        coslat = max(math.cos(math.radians(min(89.0, abs(lat_c) + dlat))), 1e-6)
        dlon = dlat / coslat
        lat0, lon0 = self._cell((lat_c - dlat, lon_c - dlon))
        lat1, lon1 = self._cell((lat_c + dlat, lon_c + dlon))
        columns = []
        for j in range(lon0, lon1 + 1):
            west, east = j * c, (j + 1) * c
            dlam = math.radians(max(west - lon_c, lon_c - east, 0.0))
            columns.append((j, math.sin(dlam / 2) ** 2))
        cells = self._cells
        out: list[tuple[float, Cell, list[GridItem]]] = []
        for i in range(lat0, lat1 + 1):
            south, north = i * c, (i + 1) * c
            dphi = math.radians(max(south - lat_c, lat_c - north, 0.0))
            phimax = math.radians(max(abs(lat_c), abs(south), abs(north)))
            lat_bound, cos2 = math.sin(dphi / 2) ** 2, math.cos(phimax) ** 2
            for j, lon_term in columns:
                bucket = cells.get((i, j))
                if bucket:
                    bound = cos2 * lon_term
                    out.append((lat_bound if lat_bound > bound else bound, (i, j), bucket))
        out.sort(key=itemgetter(0))
        return out

    def cells(self) -> Iterator[tuple[Cell, list[GridItem]]]:
        """Every non-empty cell and its items."""
        return iter(self._cells.items())

    def within(self, center: Point, miles: float) -> Iterator[tuple[str, float]]:
        """(key, distance) of every item within ``miles`` of ``center`` (unordered)."""
        lat_r, lon_r = math.radians(center[0]), math.radians(center[1])
        cos_lat = math.cos(lat_r)
        limit = miles_to_h(miles)
        for bucket in self.buckets(center, miles):
            for item in bucket:
                h = haversine_h(lat_r, lon_r, cos_lat, item)
                if h <= limit:
                    yield item[0], h_to_miles(h)
