"""Logging: secrets never reach the output, JSON lines parse, configuring twice is harmless."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from jackfield.shell.logs import MASK, RedactingFilter, configure_logging, register_secrets

SECRET = "sekrit-value-123"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.get_name() == "jackfield"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_registered_secret_never_reaches_stderr(
    capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    register_secrets([SECRET])
    configure_logging("DEBUG", fmt)
    log = logging.getLogger("jackfield.test")
    log.info(f"token is {SECRET} inline")
    log.warning("token is %s as an arg", SECRET)
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("call failed")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count(MASK) == 3
    assert "as an arg" in err and "call failed" in err


def test_the_filter_redacts_for_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    register_secrets([SECRET])
    caplog.handler.addFilter(RedactingFilter())
    logging.getLogger("jackfield.other").error("x=%r y=%d", {"key": SECRET}, 5)
    assert SECRET not in caplog.text
    assert f"x={{'key': '{MASK}'}} y=5" in caplog.text


def test_json_lines_parse_with_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("jackfield.reconciler").info("applied %d servers", 3)
    logging.getLogger("jackfield.reconciler").debug("below the level")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("jackfield.hub").exception("boom")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert set(first) == {"ts", "level", "logger", "msg"}
    assert first["level"] == "INFO" and first["logger"] == "jackfield.reconciler"
    assert first["msg"] == "applied 3 servers"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["level"] == "ERROR" and "ZeroDivisionError" in second["exc"]


def test_auto_is_json_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "auto")
    logging.getLogger("jackfield").info("hello")
    assert json.loads(capsys.readouterr().err)["msg"] == "hello"


def test_configuring_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    configure_logging("WARNING", "text")
    assert len(ours()) == 1
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger("jackfield").warning("once")
    assert capsys.readouterr().err.count("once") == 1


def test_short_values_are_not_treated_as_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    register_secrets(["abc", ""])
    configure_logging("INFO", "text")
    logging.getLogger("jackfield").info("abc def")
    assert "abc def" in capsys.readouterr().err


def test_a_secret_containing_another_is_masked_whole(capsys: pytest.CaptureFixture[str]) -> None:
    register_secrets(["inner-part", "outer-inner-part-xyz"])
    configure_logging("INFO", "text")
    logging.getLogger("jackfield").info("v=outer-inner-part-xyz")
    err = capsys.readouterr().err
    assert f"v={MASK}\n" in err and "xyz" not in err


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "text"), ("INFO", "yaml")])
def test_bad_settings_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError):
        configure_logging(level, fmt)
    assert not ours()
