"""Watch: samples parsed from real output, rates between two samples, the rendering."""

import json
import subprocess
from pathlib import Path

from conntune import terminal
from conntune.facts.reading import MARKER, sample_command, split_sections
from conntune.watch import HostView, Sample, Screen, parse_sample, view

CAPTURED = Path(__file__).parent.parent / "fixtures" / "captured" / "debian12-6.1"
CAKE_1G = "tc_j_s_qdisc_dev_eth0.cake_1000mbit.json"
CAKE_10M = "tc_j_s_qdisc_dev_eth0.cake_10mbit_diffserv4_traffic.json"


def sample_text(stat: str, qdisc: str, count: int, tablefull: int) -> str:
    return (
        f"\n{MARKER}count\n{count}\n{MARKER}max\n64\n{MARKER}buckets\n1024\n"
        f"{MARKER}stat\n{(CAPTURED / stat).read_text()}\n{MARKER}tablefull\n{tablefull}\n"
        f"{MARKER}qdisc\n{(CAPTURED / qdisc).read_text()}\n{MARKER}end\n"
    )


def test_sample_command_quotes_the_interface():
    assert sample_command("eth0; reboot").endswith("sample 'eth0; reboot'")


def test_sample_command_runs_here_without_an_interface():
    run = subprocess.run(["sh", "-c", sample_command(None)], capture_output=True, text=True)
    sections = split_sections(run.stdout)
    assert run.returncode == 0 and "end" in sections
    assert sections["qdisc"] == ""  # no device, no tc call


def test_rates_from_two_real_samples():
    before = parse_sample(sample_text("proc_net_stat_nf_conntrack.idle.txt", CAKE_1G, 6, 0), 100.0)
    after = parse_sample(
        sample_text("proc_net_stat_nf_conntrack.after_overflow.txt", CAKE_10M, 64, 20), 102.0
    )
    assert after.counters["drop"] == 1026 and after.counters["early_drop"] == 359
    v = view("vm", before, before, after)
    assert v.interval_s == 2.0
    assert v.per_second["drop"] == 513.0  # (1026 - 0) / 2 s
    assert v.usage_percent == 100.0
    assert v.table_full_since_start == 20
    assert v.qdisc_kind == "cake"
    new = json.loads((CAPTURED / CAKE_10M).read_text())[0]
    old = json.loads((CAPTURED / CAKE_1G).read_text())[0]
    assert v.qdisc_throughput_bit == round((new["bytes"] - old["bytes"]) / 2 * 8)
    assert [tin.name for tin in v.tins] == ["bulk", "besteffort", "video", "voice"]
    assert v.tins[1].peak_delay_us == new["tins"][1]["peak_delay_us"]
    assert v.tins[1].sparse_delay_us == new["tins"][1]["base_delay_us"]
    assert any(item.startswith("drop ") for item in v.attention)
    assert "table 100 % full" in v.attention
    text = terminal.watch_text(Screen(2.0, [v]))
    assert "\x1b" not in text and "vm: conntrack 64/64" in text and "besteffort" in text
    assert text.startswith("conntune watch ") and "1 hosts answering, 0 stale" in text
    assert "entries +29.0/s (this kernel does not count new/deleted entries)" in text
    drawn = terminal.render(terminal.watch_screen(Screen(2.0, [v])), terminal=True)
    assert "\x1b[" in drawn and "CAKE tins" in drawn and "q or Ctrl-C to quit" in drawn


def test_counter_reset_gives_no_negative_rate():
    old = Sample(at=0, counters={"drop": 50})
    new = Sample(at=1, counters={"drop": 3})
    assert view("h", old, old, new).per_second["drop"] == 0.0


def test_stale_host_renders():
    text = terminal.watch_text(Screen(1.0, [HostView("h", stale=True, error="timed out")]))
    assert "h: STALE (timed out)" in text and "0 hosts answering, 1 stale" in text


def test_hosts_worst_first_and_unknown_counters():
    calm = HostView("a-calm", usage_percent=10.0, per_second={"drop": 0.0})
    full = HostView("b-full", usage_percent=80.0, per_second={"drop": 0.0})
    losing = HostView("c-losing", usage_percent=20.0, per_second={"insert_failed": 3.0})
    stale = HostView("d-stale", stale=True, error="timed out")
    screen = Screen(1.0, [calm, full, stale, losing])
    assert [v.host for v in screen.hosts] == ["c-losing", "d-stale", "b-full", "a-calm"]
    assert next(h["host"] for h in screen.as_dict()["hosts"]) == "c-losing"
    blind = view(
        "x",
        Sample(at=0, count=1, max=10),
        Sample(at=0, count=1, max=10),
        Sample(at=1, count=1, max=10),
    )  # no stat section: no counters at all
    assert blind.per_second["drop"] is None  # unknown, never 0
    assert "drop unknown" in terminal.watch_text(Screen(1.0, [blind]))
    assert "drop counters unknown (install conntrack)" in blind.attention


def test_churn_where_the_kernel_counts_it():
    old = Sample(at=0, count=100, counters={"new": 1000, "delete": 900})
    new = Sample(at=2, count=120, counters={"new": 1100, "delete": 980})
    v = view("old-kernel", old, old, new)
    assert (v.churn_new_per_s, v.churn_deleted_per_s, v.entries_change_per_s) == (50, 40, 10)


def test_hosts_of_equal_rank_in_the_order_people_number_them():
    hosts = [HostView(f"web-{n}", usage_percent=10.0, per_second={"drop": 0.0}) for n in (10, 2, 1)]
    assert [v.host for v in Screen(1.0, hosts).hosts] == ["web-1", "web-2", "web-10"]


def test_the_header_says_when_hosts_set_a_slower_pace_than_asked():
    calm = HostView("h", usage_percent=10.0, per_second={"drop": 0.0})
    assert "every 1 s  1 hosts answering" in terminal.watch_text(Screen(1.0, [calm], period_s=1.05))
    slow = Screen(1.0, [calm], period_s=4.2)
    assert "every 4.2 s (asked 1 s; hosts answer slower)" in terminal.watch_text(slow)
    assert slow.as_dict()["period_s"] == 4.2 and slow.as_dict()["interval_s"] == 1.0
