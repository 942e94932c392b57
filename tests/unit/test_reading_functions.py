"""
The reading script's own parsers of config files, run as a host runs them (dash and busybox
sh, with the system's awk and busybox's): firewalld.conf read first-wins as firewalld reads
it, and modprobe.d lines joined over "\\" continuations as kmod joins them. And the caps
section, on real captures.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conntune.facts import parse
from conntune.facts.reading import host_facts, script_functions

CAPTURED = Path(__file__).parents[1] / "fixtures" / "captured"
STOCK_CONF = (CAPTURED / "firewalld-conf" / "debian12-firewalld-1.3.3.conf").read_text()
# Fedora/RHEL's /usr/lib/modprobe.d/firewalld-sysctls.conf, as quoted in the kmod patch
# "libkmod: introduce kmod_module_uniq_options()" (linux-modules, 2020-04-29)
FEDORA_INSTALL = (
    "install nf_conntrack /usr/sbin/modprobe --ignore-install nf_conntrack $CMDLINE_OPTS && "
    "/usr/sbin/sysctl --quiet --pattern 'net[.]netfilter[.]nf_conntrack.*' --system"
)


def shells(tmp_path: Path) -> list[tuple[str, list[str], dict]]:
    """(name, argv prefix, env) of each shell + awk a host may run the reading with."""
    found = [("dash", ["dash", "-c"], {})]
    busybox = shutil.which("busybox")
    if busybox:
        bin_dir = tmp_path / "bb"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "awk").symlink_to(busybox)
        found.append(
            ("busybox sh + awk", [busybox, "sh", "-c"], {"PATH": f"{bin_dir}:/usr/bin:/bin"})
        )
    return found


def run(tmp_path: Path, body: str, stdin: str = "") -> list[str]:
    """``body`` after the two functions, in every shell; every shell must print the same."""
    program = script_functions("modprobe_conf", "firewalld_conf") + body
    outputs = []
    for name, argv, env in shells(tmp_path):
        result = subprocess.run([*argv, program], input=stdin, capture_output=True, text=True,
                                env=env or None, timeout=30)  # fmt: skip
        assert result.returncode == 0, (name, result.stderr)
        outputs.append(result.stdout)
    assert all(out == outputs[0] for out in outputs), outputs
    return outputs[0].splitlines()


def test_the_stock_firewalld_conf_is_read_as_it_stands(tmp_path):
    assert run(tmp_path, "firewalld_conf", STOCK_CONF) == [
        "cleanup_on_exit=yes",
        "cleanup_modules=no",
    ]


def test_firewalld_conf_first_valid_line_wins_as_firewalld_reads_it(tmp_path):
    # firewalld_conf.read(): comments, lines with a second '=', empty values and a key's
    # repeats are skipped ("Duplicate option definition"); so an appended "=no" does nothing
    conf = (
        STOCK_CONF.replace("CleanupModulesOnExit=no", "CleanupModulesOnExit = yes ")
        + "CleanupModulesOnExit=no\n"
        + "CleanupOnExit=\n"
        + "# CleanupOnExit=no\n"
    ).replace("CleanupOnExit=yes", "CleanupOnExit=no=really\nCleanupOnExit\t=\tno")
    assert run(tmp_path, "firewalld_conf", conf) == ["cleanup_on_exit=no", "cleanup_modules=yes"]


def test_an_empty_firewalld_conf_sets_nothing(tmp_path):
    assert run(tmp_path, "firewalld_conf", "") == ["cleanup_on_exit=", "cleanup_modules="]


def test_modprobe_lines_are_joined_over_continuations_as_kmod_joins_them(tmp_path):
    etc = tmp_path / "modprobe.d"
    etc.mkdir()
    (etc / "a.conf").write_text(
        "# options nf_conntrack hashsize=1\n"
        "options nf_conntrack \\\n  hashsize=262144\n"
        "options nf_nat foo=1\n"
        f"{FEDORA_INSTALL}\n"
        # kmod reads its directives in lower case only: printed here, dropped by the parser
        "Options nf_conntrack hashsize=2\n"
    )
    (etc / "b.conf").write_text("options nf-conntrack expect_hashsize=4 \\")  # no newline at EOF
    lines = run(tmp_path, f"modprobe_conf {etc}/*.conf /nonexistent/*.conf")
    assert lines == [
        f"{etc}/a.conf:2:options nf_conntrack   hashsize=262144",
        f"{etc}/a.conf:5:{FEDORA_INSTALL}",
        f"{etc}/a.conf:6:Options nf_conntrack hashsize=2",
        f"{etc}/b.conf:1:options nf-conntrack expect_hashsize=4 ",
    ]


def test_no_modprobe_files_prints_nothing(tmp_path):
    assert run(tmp_path, "modprobe_conf /nonexistent/*.conf") == []


CAPS = {  # capture -> (CapEff has CAP_NET_ADMIN, CAP_SYS_MODULE, in a user namespace)
    "host": (True, True, False),
    "privileged": (True, True, False),
    "unprivileged": (False, False, False),
    "host-network-unprivileged": (False, False, False),
    "net-admin": (True, False, False),
    "userns": (True, True, True),
}


@pytest.mark.parametrize("name", sorted(CAPS))
def test_the_caps_section_of_real_captures(name):
    facts = host_facts((CAPTURED / "container-6.18-caps" / f"{name}.txt").read_text())
    net_admin, sys_module, userns = CAPS[name]
    assert facts.capable(12) is net_admin
    assert facts.capable(16) is sys_module
    assert facts.in_user_namespace is userns
    assert (facts.module_load_blocked is not None) is (userns or not sys_module)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (None, None)),
        ("cap_eff=zz\nuid_map=0 0", (None, None)),
        ("cap_eff=0000000000000000\nuid_map=0 100000 65536", (0, (0, 100000, 65536))),
    ],
)
def test_odd_caps_sections_never_crash(text, expected):
    assert parse.caps(text) == expected


VM_CAPS = sorted((CAPTURED / "caps-vms").glob("*.txt"))


@pytest.mark.parametrize("path", VM_CAPS, ids=lambda path: path.stem)
def test_the_caps_section_on_debian_11_and_sid_kernels(path):
    # root on the VM holds every capability; `unshare -U -r -n` maps root to uid 0 only
    cap_eff, uid_map = parse.caps(path.read_text())
    assert cap_eff is not None and cap_eff >> 12 & 1 and cap_eff >> 16 & 1
    assert uid_map == ((0, 0, 1) if "unshare" in path.name else (0, 0, 4294967295))


def test_caps_were_captured_on_two_more_kernels():
    assert {path.name.split("-")[1][:4] for path in VM_CAPS} == {"5.10", "7.2."}


def test_a_reading_not_run_as_root_says_nothing_of_root_capabilities():
    # a user's CapEff is empty; the run's writes go through sudo as root, with root's set
    text = (CAPTURED / "container-6.18-caps" / "host.txt").read_text()
    facts = host_facts(text.replace("@@conntune:uid\n0\n", "@@conntune:uid\n1000\n"))
    assert facts.uid == 1000
    assert facts.capable(12) is None
    assert facts.knob_writable("net.netfilter.nf_conntrack_udp_timeout") is True
