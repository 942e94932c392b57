"""The firewalld configuration check's parser, on real output of four firewalld generations."""

from __future__ import annotations

from pathlib import Path

import pytest

from conntune.facts.firewalld import FirewalldConfigProblems, config_problems
from conntune.firewalld import check_config_refusal

CAPTURED = Path(__file__).parents[1] / "fixtures" / "firewalld-check-config"
HOSTS = sorted(path for path in CAPTURED.iterdir() if path.is_dir())


def test_four_firewalld_generations_are_captured():
    versions = {path.name.split("-firewalld-")[1].split("-kernel-")[0] for path in HOSTS}
    assert versions == {"0.9.3", "1.3.3", "2.3.1", "2.5.2"}


@pytest.mark.parametrize("captured", HOSTS, ids=lambda path: path.name)
def test_a_passing_check_has_no_problems(captured):
    assert config_problems((captured / "passes.txt").read_text()) == ""


@pytest.mark.parametrize("captured", HOSTS, ids=lambda path: path.name)
@pytest.mark.parametrize(
    ("case", "words"),
    [("bad-zone-xml", "Error: PARSE_ERROR: "), ("bad-service-port", "Error: INVALID_PORT: ")],
)
def test_a_failing_check_gives_firewalds_words_without_the_status_line(captured, case, words):
    problems = config_problems((captured / f"{case}.txt").read_text())
    assert problems is not None and problems.startswith(words), problems
    assert "conntune:check-config-status" not in problems


def test_the_fact_processes_its_lines_as_the_text_parser_does():
    for captured in HOSTS:
        for path in captured.glob("*.txt"):
            lines = path.read_text().splitlines()
            assert FirewalldConfigProblems().process(lines) == config_problems(path.read_text())


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("", None),  # nothing ran
        ("success\n", None),  # no status line: the check's outcome is unknown
        ("conntune:check-config-status=0\n", ""),
        ("conntune:check-config-status=1\n", "exit status 1"),  # failed, said nothing
    ],
)
def test_odd_output_never_crashes(output, expected):
    assert config_problems(output) == expected


def test_a_traceback_is_a_failure_with_its_text():
    text = (
        "Traceback (most recent call last):\nImportError: no gi\nconntune:check-config-status=1\n"
    )
    assert config_problems(text) == "Traceback (most recent call last):\nImportError: no gi"


def test_the_refusal_names_the_cause_and_firewalld_words_on_one_line():
    bullseye = next(path for path in HOSTS if path.name.startswith("bullseye-"))
    found = config_problems((bullseye / "bad-zone-xml.txt").read_text())
    said = check_config_refusal(found or "", "firewalld_restart: always")
    assert said.startswith("firewalld will not be restarted (firewalld_restart: always): ")
    assert "(Error: PARSE_ERROR: 'conntune-test-bad.xml': Unexpected element broken)" in said
    assert "\n" not in said
    assert check_config_refusal("Q" * 1000).count("Q") == 300  # a long complaint is cut


@pytest.mark.parametrize(
    ("version", "cleanup_on_exit", "cleanup_modules", "unloads"),
    [  # src/firewall/core/fw.py stop(): v0.9.3 nests the unload in CleanupOnExit, v1.0.0+ not
        ((0, 9, 3), None, None, True),
        ((0, 9, 3), False, None, False),
        ((0, 9, 3), None, False, True),  # 0.9 knows no CleanupModulesOnExit
        ((1, 3, 3), None, None, False),
        ((1, 3, 3), None, True, True),
        ((1, 3, 3), False, True, True),  # the unload no longer depends on CleanupOnExit
        ((2, 5, 2), True, False, False),
        (None, None, None, None),
        (None, False, None, False),  # keeps them whichever the version
        (None, False, True, None),
    ],
)
def test_which_firewalld_restarts_unload_nf_conntrack(
    version, cleanup_on_exit, cleanup_modules, unloads
):
    from conntune.hostfacts import Firewalld

    firewalld = Firewalld(
        installed=True, version=version, cleanup_on_exit=cleanup_on_exit,
        cleanup_modules_on_exit=cleanup_modules,
    )  # fmt: skip
    assert firewalld.restart_unloads_conntrack is unloads
