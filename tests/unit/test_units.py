import pytest

from conntune.units import format_rate, parse_rate_bit, parse_size_bytes


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("1000mbit", 10**9),
        ("1gbit", 10**9),
        ("1Gbit", 10**9),
        ("2.5gbit", 2_500_000_000),
        ("1024mbit", 1_024_000_000),  # the blog's value: decimal in tc, above a 1 GbE line
        ("100kbit", 100_000),
        ("1mibit", 2**20),
        ("125mbps", 10**9),  # tc: bps is bytes per second
        (1000, 10**9),  # a bare number is Mbit/s
        ("500", 500 * 10**6),
    ],
)
def test_parse_rate(text, bits):
    assert parse_rate_bit(text) == bits


@pytest.mark.parametrize(
    "text", ["0", "-5mbit", "1.5.0gbit", "fast", "10tbit", "", "1 gigabit", True, None, [1]]
)
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError):
        parse_rate_bit(text)


def test_format_rate_round_trips():
    for bits in (10**9, 1_024_000_000, 10_000_000, 123_456, 2_500_000_000):
        assert parse_rate_bit(format_rate(bits)) == bits
    assert format_rate(10**9) == "1gbit"


@pytest.mark.parametrize(
    ("text", "size"),
    [("65786680000", 65786680000), ("64G", 64 * 10**9), ("64GiB", 64 * 2**30), (1024, 1024)],
)
def test_parse_size(text, size):
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["0", "-1G", "lots", "1.2.3G", "5XB"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size_bytes(text)
