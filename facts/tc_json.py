"""
Parsing ``tc -j [-s] qdisc show``: every qdisc, typed (conntune.qdisc), CAKE's options and
tins included. iproute2 prints CAKE's rates in bytes per second (tc/q_cake.c, cake_print_opt);
the values returned are bits per second.
"""

from __future__ import annotations

import json

from conntune.qdisc import TIN_NAMES, CakeOptions, CakeTin, Qdisc


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in ``text``: arrays of objects, single objects, several in a row."""
    decoder = json.JSONDecoder()
    found: list[dict] = []
    position = 0
    text = text.strip()
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break
        items = value if isinstance(value, list) else [value]
        found.extend(item for item in items if isinstance(item, dict))
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return found


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _cake_options(options: dict) -> CakeOptions:
    bandwidth = options.get("bandwidth")
    return CakeOptions(
        # bytes per second in tc's JSON, or the string "unlimited"
        bandwidth_bit=_int(bandwidth) * 8 if _int(bandwidth) else None,
        diffserv=_str(options.get("diffserv")),
        flowmode=_str(options.get("flowmode")),
        nat=_bool(options.get("nat")),
        wash=_bool(options.get("wash")),
        ingress=_bool(options.get("ingress")),
        ack_filter=_str(options.get("ack-filter")),
        split_gso=_bool(options.get("split_gso")),
        rtt_us=_int(options.get("rtt")),
        raw=_bool(options.get("raw")),
        atm=_str(options.get("atm")),
        overhead=_int(options.get("overhead")),
        mpu=_int(options.get("mpu")),
    )


_TIN_COUNTERS = (
    "sent_bytes", "sent_packets", "backlog_bytes", "target_us", "interval_us", "peak_delay_us",
    "avg_delay_us", "base_delay_us", "drops", "ecn_mark", "ack_drops", "sparse_flows",
    "bulk_flows", "unresponsive_flows",
)  # fmt: skip


def _tin(name: str, tin: dict) -> CakeTin:
    rate = _int(tin.get("threshold_rate"))
    return CakeTin(
        name=name,
        threshold_rate_bit=None if rate is None else rate * 8,
        **{key: _int(tin.get(key)) for key in _TIN_COUNTERS},
    )


def qdiscs(text: str) -> list[Qdisc]:
    """
    Qdiscs from ``tc -j [-s] qdisc show`` JSON. Several JSON arrays in a row (one ``tc`` call
    per device) are joined; text that is not JSON gives an empty list.
    """
    result = []
    for item in _json_objects(text):
        kind = _str(item.get("kind"))
        options = item.get("options") if isinstance(item.get("options"), dict) else {}
        tins = [tin for tin in item.get("tins") or [] if isinstance(tin, dict)]
        names = TIN_NAMES.get(len(tins), tuple(f"tin{i}" for i in range(len(tins))))
        result.append(
            Qdisc(
                dev=_str(item.get("dev")),
                kind=kind,
                handle=_str(item.get("handle")),
                parent=_str(item.get("parent")),
                root=item.get("root") is True,
                cake=_cake_options(options) if kind in ("cake", "cake_mq") else None,
                bytes=_int(item.get("bytes")),
                packets=_int(item.get("packets")),
                drops=_int(item.get("drops")),
                backlog=_int(item.get("backlog")),
                tins=tuple(_tin(name, tin) for name, tin in zip(names, tins, strict=True)),
            )
        )
    return result
