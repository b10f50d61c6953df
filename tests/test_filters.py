"""Filters in queries (dates, folders, cameras, places): parsing, errors, and the ids they allow."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semsearch.errors import QueryError
from semsearch.query import Filters, Place, parse_filters, split_filters


def test_filters_are_taken_out_of_the_text():
    text, filters = split_filters(
        "beach after:2019-06 before:2020 in:Trips camera:canon near:48.85,2.35,20km"
    )
    assert text == "beach"
    assert filters == Filters(
        after=datetime(2019, 6, 1),
        before=datetime(2020, 1, 1),
        folders=("Trips",),
        cameras=("canon",),
        near=Place(48.85, 2.35, 20.0),
    )


def test_text_without_filters_is_untouched():
    for query in (
        "cat + id:12 - grass",
        "2:beach + sunset",
        "a t-shirt: red",
        "ratio 16:9",
        "  spaced  ",
        "C:\\x.png",
        "http://x",
    ):
        assert split_filters(query) == (query, Filters())
    assert not Filters()


def test_quoted_values_repeats_and_units():
    text, filters = split_filters('in:"My Trips" in:2019 camera:"EOS 5D" camera:pixel near:-33.9,151.2,500m')
    assert text == ""
    assert filters.folders == ("My Trips", "2019") and filters.cameras == ("EOS 5D", "pixel")
    assert filters.near == Place(-33.9, 151.2, 0.5)
    assert split_filters("near:1,2")[1].near == Place(1.0, 2.0, 10.0)  # default radius
    assert split_filters("AFTER:2019-06-15")[1].after == datetime(2019, 6, 15)


@pytest.mark.parametrize(
    "query, message",
    [
        ("cat after:2019-13", "after:2019-13"),
        ("cat after:2019-02-30", "not a date"),
        ("cat before:yesterday", "YYYY-MM-DD"),
        ("cat after:", "after: needs"),
        ("near:95,2,1km", "latitude 95"),
        ("near:45,-181", "longitude -181"),
        ("near:45,2,-5km", "radius"),
        ("near:45,2,0km", "radius"),
        ("near:45,2,5parsecs", "near:"),
        ("near:abc", "near:"),
        ("colour:red cat", "unknown filter 'colour:'"),
        ("cat after:2020 after:2021", "twice"),
        ("after:2021 before:2020", "empty"),
        ("cat -in:Trips", "negated"),
        ('in:"unclosed', "quote"),
    ],
)
def test_bad_filters_are_one_line_errors(query, message):
    with pytest.raises(QueryError) as info:
        split_filters(query)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_parse_filters_refuses_anything_but_filters():
    assert parse_filters("after:2020 camera:canon") == Filters(after=datetime(2020, 1, 1), cameras=("canon",))
    with pytest.raises(QueryError, match="not a filter"):
        parse_filters("after:2020 beach")


@given(st.text(max_size=60))
def test_any_text_parses_or_gives_a_query_error(text):
    try:
        rest, filters = split_filters(text)
    except QueryError as exc:
        assert "\n" not in str(exc)
        return
    assert len(rest) <= len(text)


@given(
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.floats(0.001, 20_000, allow_nan=False),
)
def test_every_valid_place_round_trips(lat, lon, radius):
    near = split_filters(f"near:{lat!r},{lon!r},{radius!r}km")[1].near
    assert near == Place(lat, lon, radius)


@given(st.integers(1, 9999), st.integers(1, 12), st.integers(1, 31))
def test_dates_are_valid_or_refused(year, month, day):
    try:
        expected = datetime(year, month, day)
    except ValueError:
        with pytest.raises(QueryError):
            split_filters(f"after:{year:04d}-{month:02d}-{day:02d}")
        return
    assert split_filters(f"after:{year:04d}-{month:02d}-{day:02d}")[1].after == expected
