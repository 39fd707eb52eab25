"""Tests of `pii-sidecar scan` and `pii-sidecar policy check` output."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.detect import engine
from sidecar.detect.engine import Detector

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
TEXT = "Hi, I am Zebulon Quartermaine 😀, mail zebulon.q@example.com.\r\nSSN 219-09-9999 on 2024-06-01."


@pytest.fixture(autouse=True)
def shared_detector(monkeypatch: pytest.MonkeyPatch, detector: Detector) -> None:
    """Let `scan` use the session's detector instead of loading the model again."""
    monkeypatch.setattr(engine, "Detector", lambda model=None: detector)


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_bytes(TEXT.encode())
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_scan_json_offsets_are_code_points(
    input_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        ["scan", "--policy", str(POLICIES / "default.yaml"), "--format", "json", str(input_file)],
        capsys,
    )

    document = json.loads(out)
    spans = {(f["entity_type"], TEXT[f["start"] : f["end"]]) for f in document["findings"]}
    assert status == 0
    assert ("PERSON", "Zebulon Quartermaine") in spans
    assert ("EMAIL_ADDRESS", "zebulon.q@example.com") in spans
    assert ("US_SSN", "219-09-9999") in spans


def test_scan_json_has_rewritten_text(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        ["scan", "--policy", str(POLICIES / "default.yaml"), "--format", "json", str(input_file)],
        capsys,
    )

    document = json.loads(out)
    assert document["text"] == (
        "Hi, I am <PERSON_1> 😀, mail <EMAIL_ADDRESS_1>.\r\nSSN <US_SSN_1> on 2024-06-01."
    )
    assert document["blocked"] == {}
    assert document["mode"] == "enforce"
    assert document["policy"]["name"] == "default"


def test_scan_json_finding_fields(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        ["scan", "--policy", str(POLICIES / "default.yaml"), "--format", "json", str(input_file)],
        capsys,
    )

    finding = json.loads(out)["findings"][0]
    assert set(finding) == {"entity_type", "start", "end", "score", "action"}
    assert finding["action"] == "placeholder"


def test_scan_json_reports_block(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        ["scan", "--policy", str(POLICIES / "strict.yaml"), "--format", "json", str(input_file)],
        capsys,
    )

    document = json.loads(out)
    assert document["blocked"] == {"US_SSN": 1}
    assert "219-09-9999" not in document["text"]


def test_scan_text_without_colour(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        ["scan", "--policy", str(POLICIES / "strict.yaml"), "--color", "never", str(input_file)],
        capsys,
    )

    lines = out.splitlines()
    assert status == 0
    assert lines[0] == "Hi, I am [PERSON] 😀, mail [EMAIL_ADDRESS]."
    assert "\x1b[" not in out
    assert lines[3].split() == ["ENTITY", "START", "END", "SCORE", "ACTION"]
    assert ["PERSON", "9", "29", "0.85", "redact"] in [line.split() for line in lines]
    assert (
        lines[-1] == "blocked: the proxy would reject this request, because it contains US_SSN x1"
    )


def test_scan_text_colours_findings(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        ["scan", "--policy", str(POLICIES / "default.yaml"), "--color", "always", str(input_file)],
        capsys,
    )

    assert "\x1b[1;32m<PERSON_1>\x1b[0m" in out
    assert "\x1b[2;4m2024-06-01\x1b[0m" in out


def test_scan_audit_policy_keeps_text(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(
        [
            "scan",
            "--policy",
            str(POLICIES / "audit-only.yaml"),
            "--color",
            "never",
            str(input_file),
        ],
        capsys,
    )

    assert out.startswith(TEXT)
    assert "audit mode: the proxy would forward the text unchanged" in out


def test_scan_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"My name is Zebulon Quartermaine."))
    monkeypatch.setattr("sys.stdin", stdin)

    _, out, _ = run(["scan", "--format", "json", "-"], capsys)

    assert json.loads(out)["text"] == "My name is <PERSON_1>."


def test_scan_no_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("Nothing personal here.")

    _, out, _ = run(["scan", "--color", "never", str(path)], capsys)

    assert "no findings" in out.splitlines()


def test_scan_rejects_invalid_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))

    status, _, err = run(["scan", str(path)], capsys)

    assert status == 2
    assert err == f"pii-sidecar: {path}: input is not valid UTF-8 (byte 3)\n"


def test_scan_invalid_policy_lists_problems(
    tmp_path: Path, input_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nname: bad\nmin_score: 2\n")

    status, _, err = run(["scan", "--policy", str(policy), str(input_file)], capsys)

    assert status == 2
    assert f"{policy}: min_score: Input should be less than or equal to 1 (got 2)" in err


# policy check


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_check_valid_files(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        ["policy", "check", str(POLICIES / "default.yaml"), str(POLICIES / "strict.yaml")], capsys
    )

    assert status == 0
    assert err == ""
    assert out.splitlines()[0].startswith(
        f"{POLICIES / 'default.yaml'}: ok (policy 'default', sha256:"
    )


def test_check_directory(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["policy", "check", str(POLICIES)], capsys)

    assert status == 0
    assert len(out.splitlines()) == len(list(POLICIES.glob("*.yaml")))


def test_check_prints_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "bad.yaml", "version: 1\nname: bad\nmin_score: 2\nmode: shadow\n")
    good = write(tmp_path / "good.yaml", "version: 1\nname: good\n")

    status, out, err = run(["policy", "check", str(bad), str(good)], capsys)

    assert status == 1
    assert err.splitlines() == [
        f"{bad}: mode: Input should be 'enforce' or 'audit' (got 'shadow')",
        f"{bad}: min_score: Input should be less than or equal to 1 (got 2)",
        "1 of 2 policy files are invalid",
    ]
    assert out.startswith(f"{good}: ok")


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.yaml"

    status, _, err = run(["policy", "check", str(missing)], capsys)

    assert status == 1
    assert err.splitlines()[0] == f"{missing}: cannot read file: No such file or directory"
