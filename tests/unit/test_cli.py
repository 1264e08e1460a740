"""`keel serve` chooses the Bento of a named service, or of the namespace's only one; it never guesses
between several."""

import pytest

from keel import cli
from keel_core.settings import Settings


@pytest.fixture
def settings():
    return Settings(namespace="alice")


@pytest.mark.parametrize(
    ("built", "asked", "served"),
    [
        (["fraud_scorer"], None, "fraud_scorer_alice:latest"),
        (["fraud_scorer", "terminal_volume"], "terminal_volume", "terminal_volume_alice:latest"),
        (["fraud_scorer", "terminal_volume"], None, None),
        (["fraud_scorer"], "churn", None),
        ([], None, None),
    ],
    ids=["the-only-one", "the-named-one", "several-unnamed", "unknown-name", "none-built"],
)
def test_serve_chooses_the_named_or_the_only_service(monkeypatch, capsys, settings, built, asked, served):
    monkeypatch.setattr(cli, "_services", lambda _: built)
    assert cli._newest_bento(settings, asked) == served
    if served is None:
        message = capsys.readouterr().err
        assert message.startswith("keel serve: ")
        assert ("no Bento is built yet" in message) if not built else all(s in message for s in built)
